"""The annotation parsers on the bundled files: every row parses, the counts match metrics-and-data.md §1, the labels
are rebuilt as documented and the known quirks are kept the way the official evaluation keeps them."""

import collections
import json
from pathlib import Path

import numpy as np
import pytest

from caeav.data.annotations import (
    LLP_CLASS_INDEX,
    ave_label_matrix,
    ave_segment_targets,
    default_annotation_root,
    llp_ground_truth,
    load_ave,
    load_avqa_questions,
    load_avqa_vocab,
    load_avsbench_meta,
    load_llp_clips,
    load_llp_eval,
    load_llp_events,
    question_tokens,
    unmatched_event_names,
)
from caeav.errors import DataError
from caeav.metrics import AVQA_QUESTION_TYPES, avvp_scores, segment_accuracy


@pytest.fixture(scope="module")
def ave():
    return load_ave()


@pytest.fixture(scope="module")
def llp_events():
    return {m: load_llp_events(m) for m in ("audio", "visual")}


@pytest.fixture(scope="module")
def llp_clips():
    return {s: load_llp_clips(s) for s in ("train", "val", "test", "full")}


def test_default_roots_are_inside_the_package():
    for task, folder in (("ave", "ave"), ("avvp", "llp"), ("llp", "llp"), ("avqa", "music-avqa")):
        root = default_annotation_root(task)
        assert root.is_dir() and root.parts[-3:] == ("assets", "annotations", folder) and "caeav" in root.parts
    for task in ("avs_s4", "avs_ms3", "nope"):
        with pytest.raises(DataError):
            default_annotation_root(task)


# ---------------------------------------------------------------- AVE


def test_ave_rows_and_splits(ave):
    assert len(ave.categories) == 28 and ave.categories[0] == "Church bell" and ave.categories[27] == "Mandolin"
    assert len(ave.records) == 4143 and all(r.quality == "good" for r in ave.records)
    assert {k: len(v) for k, v in ave.split_indices.items()} == {"train": 3339, "val": 402, "test": 402}
    everything = sorted(i for v in ave.split_indices.values() for i in v)
    assert everything == list(range(4143))  # disjoint and covering
    assert all(r.split is not None for r in ave.records)
    assert [r.split for r in ave.split("val")] == ["val"] * 402


def test_ave_txt_splits_equal_the_canonical_order_files(ave):
    pytest.importorskip("h5py")
    assert load_ave(order_source="h5").split_indices == ave.split_indices


def test_ave_duplicate_video_ids_are_separate_rows(ave):
    counts = collections.Counter(r.video_id for r in ave.records)
    repeated = {v: n for v, n in counts.items() if n > 1}
    assert len(repeated) == 45 and sum(repeated.values()) == 91  # 46 repeats beyond the first row


def test_ave_label_reconstruction_on_known_rows(ave):
    r0, r1, r26, last = ave.records[0], ave.records[1], ave.records[26], ave.records[-1]
    assert (r0.category, r0.video_id, r0.start, r0.end) == ("Church bell", "RUhOCu3LNXM", 0, 10)
    assert r0.segment_labels().tolist() == [0] * 10
    assert (r1.video_id, r1.start, r1.end) == ("MH3m4AwEcRY", 6, 8)  # StartTime <= t < EndTime
    assert r1.segment_labels().tolist() == [28] * 6 + [0, 0] + [28, 28]
    assert (r26.video_id, r26.start, r26.end) == ("VWi2ENBuTbw", 0, 0)  # no foreground segment
    assert r26.segment_labels().tolist() == [28] * 10 and r26.video_onehot()[0] == 1.0
    assert (last.category, last.video_id, last.label) == ("Mandolin", "0IklLP7_kBw", 27)
    assert last.segment_labels().tolist() == [28] * 4 + [27] * 6
    labels = ave_label_matrix(ave.records)  # the rebuilt labels.h5
    assert labels.shape == (4143, 10, 29) and labels.dtype == np.float32 and (labels.sum(-1) == 1).all()
    assert (labels.argmax(-1) == ave_segment_targets(ave.records)).all()
    assert np.array_equal((labels[:, :, :28].sum(-1) > 0), np.stack([r.foreground() for r in ave.records]) > 0)


def test_ave_test_split_background_share(ave):
    targets = ave_segment_targets(ave.split("test"))
    assert targets.shape == (402, 10) and int((targets != 28).sum()) == 3305
    # predicting background everywhere scores 715 / 4020 = 17.8 %
    assert segment_accuracy(np.full_like(targets, 28), targets) == pytest.approx(100 * 715 / 4020)


def _ave_copy(tmp_path, **replace):
    src = default_annotation_root("ave")
    for name in ("Annotations.txt", "categories.txt", "trainSet.txt", "valSet.txt", "testSet.txt"):
        (tmp_path / name).write_text(replace.get(name, (src / name).read_text()))
    return tmp_path


def test_ave_bad_files_raise_one_line_data_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_ave(tmp_path / "missing")
    ann = (default_annotation_root("ave") / "Annotations.txt").read_text()
    for bad, pattern in ((ann.replace("&good&0&10\n", "&good&0\n", 1), "expected 5 fields"),
                         (ann.replace("Church bell&", "Church bells&", 1), "not in categories"),
                         (ann.replace("&good&6&8\n", "&good&six&8\n", 1), "not a number"),
                         (ann.replace("Category&", "Kategory&", 1), "expected header")):
        with pytest.raises(DataError, match=pattern) as err:
            load_ave(_ave_copy(tmp_path, **{"Annotations.txt": bad}))
        assert "\n" not in str(err.value)
    with pytest.raises(DataError, match="not a row of Annotations.txt"):
        load_ave(_ave_copy(tmp_path, **{"valSet.txt": "Bark&nope&good&0&10\n"}))


# ---------------------------------------------------------------- LLP


def test_llp_weak_label_files(llp_clips):
    assert {s: len(c) for s, c in llp_clips.items()} == {"train": 10000, "val": 649, "test": 1200, "full": 11849}
    names = {s: {c.filename for c in cs} for s, cs in llp_clips.items()}
    assert names["full"] == names["train"] | names["val"] | names["test"]
    assert not (names["train"] & names["val"]) and not (names["train"] & names["test"]) and not (names["val"] & names["test"])
    ids = [c.video_id for s in ("train", "val", "test") for c in llp_clips[s]]
    assert len(set(ids)) == len(ids) == 11849 and all(len(i) == 11 for i in ids)
    sizes = collections.Counter(len(c.labels) for c in llp_clips["test"])
    assert sizes == {1: 403, 2: 650, 3: 118, 4: 25, 5: 3, 7: 1}
    first = llp_clips["val"][0]
    assert (first.filename, first.labels, first.split) == ("4O9rI-FpqLg_10_20", ("Cheering", "Speech", "Clapping"), "val")
    w = first.weak_label()
    assert w.shape == (25,) and w.sum() == 3 and w[[2, 0, 24]].tolist() == [1, 1, 1]


def test_llp_eval_rows_and_their_quirks(llp_clips, llp_events):
    audio, visual = llp_events["audio"], llp_events["visual"]
    assert (len(audio), len({e.filename for e in audio})) == (4131, 1850)
    assert (len(visual), len({e.filename for e in visual})) == (2495, 1665)
    val, test = ({c.filename for c in llp_clips[s]} for s in ("val", "test"))
    assert (sum(e.filename in val for e in audio), sum(e.filename in test for e in audio)) == (1451, 2663)
    assert (sum(e.filename in val for e in visual), sum(e.filename in test for e in visual)) == (856, 1628)
    bad_a = unmatched_event_names(audio, llp_clips["val"] + llp_clips["test"])
    bad_v = unmatched_event_names(visual, llp_clips["val"] + llp_clips["test"])
    assert len(bad_a) == 10 and len(bad_v) == 7
    assert {"AkAfFL5Q4QA_30_40", "KvIjsmANkxI_10_20`", "19jWnmYnlD8_30_400", "Baby_cry_infant_cry"} <= set(bad_a)
    assert sum(e.offset <= e.onset for e in audio) == 6 and sum(e.offset <= e.onset for e in visual) == 0
    for events, n_groups in ((audio, 708), (visual, 242)):  # several rows of one class in one clip
        groups = collections.Counter((e.filename, e.label) for e in events)
        assert sum(1 for n in groups.values() if n > 1) == n_groups
    weak = {c.filename: set(c.labels) for c in llp_clips["full"]}
    assert sum(e.label not in weak[e.filename] for e in audio if e.filename in weak) == 76
    assert sum(e.label not in weak[e.filename] for e in visual if e.filename in weak) == 51


def _empty_clips(gt):
    return int((gt.reshape(len(gt), -1).sum(1) == 0).sum())


def test_llp_ground_truth_matrices(llp_events):
    for split, zero_a, zero_v in (("val", 4, 70), ("test", 6, 121)):
        clips, gt_a, gt_v = load_llp_eval(split)
        assert gt_a.shape == gt_v.shape == (len(clips), 25, 10)
        # clips without any row: val 4 / test 5 audio (test has one more whose rows are all zero-length), 70 / 121 visual
        assert (_empty_clips(gt_a), _empty_clips(gt_v)) == (zero_a, zero_v)
    clips, gt_a, gt_v = load_llp_eval("test")
    names = [c.filename for c in clips]
    i = names.index("4YdbENYcIyE_23_33")  # audio 0-4 and visual 0-10 Baby_cry_infant_cry
    baby = LLP_CLASS_INDEX["Baby_cry_infant_cry"]
    assert gt_a[i, baby].tolist() == [1] * 4 + [0] * 6 and gt_v[i, baby].tolist() == [1] * 10 and gt_a[i].sum() == 4
    # KvIjsmANkxI_10_20: its "Cat 0-1" row carries a trailing backtick and is ignored; Cat 3-7 and 8-10 stay separate
    i = names.index("KvIjsmANkxI_10_20")
    assert gt_a[i, LLP_CLASS_INDEX["Cat"]].tolist() == [0, 0, 0, 1, 1, 1, 1, 0, 1, 1]
    assert gt_a[i, LLP_CLASS_INDEX["Speech"]].tolist() == [1] * 10
    # zero-length / reversed rows add nothing
    kept = [e for e in llp_events["audio"] if e.offset > e.onset]
    for split in ("val", "test"):
        c = load_llp_clips(split)
        assert np.array_equal(llp_ground_truth(c, kept), llp_ground_truth(c, llp_events["audio"]))


def test_all_negative_and_oracle_predictions_on_the_real_test_list():
    _, gt_a, gt_v = load_llp_eval("test")
    zero = np.zeros_like(gt_a)
    for level in ("segment", "event"):
        s = avvp_scores(zero, zero, gt_a, gt_v)[level]
        # clips with an empty GT score 1.0: 6, 121 and 174 of 1200 -> A 0.5, V 10.08, AV 14.5; pooled 0
        assert (s["audio"], round(s["visual"], 2), s["audio_visual"], s["event_av"]) == pytest.approx((0.5, 10.08, 14.5, 0.0))
        assert all(v == 100.0 for v in avvp_scores(gt_a, gt_v, gt_a, gt_v)[level].values())


def test_llp_bad_files_raise_data_errors(tmp_path):
    head = "filename\tonset\toffset\tevent_labels\n"
    for body, pattern in (("a_0_10\t0\t4\tDogs\n", "unknown LLP class"), ("a_0_10\t0\t4\n", "expected 4 fields"),
                          ("a_0_10\tx\t4\tDog\n", "not a number"), ("a_0_10\t0\t4\tDog,Cat\n", "one class per row")):
        (tmp_path / "AVVP_eval_audio.csv").write_text(head + body)
        with pytest.raises(DataError, match=pattern):
            load_llp_events("audio", tmp_path)
    (tmp_path / "AVVP_val_pd.csv").write_text("filename,event_labels\na_0_10,Dog\n")
    with pytest.raises(DataError, match="expected header"):
        load_llp_clips("val", tmp_path)
    with pytest.raises(DataError, match="not found"):
        load_llp_clips("test", tmp_path)


# ---------------------------------------------------------------- MUSIC-AVQA


def test_avqa_questions_and_types():
    test, val = load_avqa_questions("test"), load_avqa_questions("val")
    assert (len(test), len({q.video_id for q in test})) == (9129, 6399)
    assert (len(val), len({q.video_id for q in val})) == (4568, 3815)
    assert len({q.video_id for q in test} & {q.video_id for q in val}) == 2296
    assert len({(q.video_id, q.question_id) for q in test}) == 9129
    counts = collections.Counter(q.type for q in test)
    assert [counts[t] for t in AVQA_QUESTION_TYPES] == [1017, 594, 1197, 1225, 988, 1265, 920, 1101, 822]
    q = test[2]
    assert (q.video_id, q.question_id, q.type, q.answer) == ("00000086", 28, ("Audio-Visual", "Existential"), "no")
    assert q.tokens() == ["Is", "the", "violin", "in", "the", "video", "always", "playing"]


def test_avqa_vocabularies_and_encoding():
    vocab = load_avqa_vocab()
    lines = (default_annotation_root("avqa") / "ques_vocab.txt").read_text().split()
    assert len(lines) == 186 and lines[:93] == lines[93:]  # the same 93 tokens written twice
    assert len(vocab.questions) == 93 and vocab.questions[0] == "<pad>" and len(vocab.answers) == 42
    test = load_avqa_questions("test")
    used = {q.answer for q in test}
    assert len(used) == 41 and set(vocab.answers) - used == {"ten"}
    for q in test + load_avqa_questions("val"):  # every question encodes; every answer has an index
        ids = vocab.encode_question(q)
        assert ids.shape == (14,) and vocab.answers[vocab.answer_index(q.answer)] == q.answer
    ids = vocab.encode_question(test[2]).tolist()
    assert [vocab.questions[i] for i in ids] == test[2].tokens() + ["<pad>"] * 6 and ids[-1] == 0


def test_avqa_template_filling_quirks():
    # the last character is dropped whatever it is (ASCII or full-width question mark); trailing spaces first
    assert question_tokens("How many sounding <Object> in the video？", ["violin"]) == ["How", "many", "sounding", "violin", "in", "the", "video"]
    assert question_tokens("Is the <LR> <Object> louder? ", ["left", "piano"]) == ["Is", "the", "left", "piano", "louder"]
    with pytest.raises(DataError):
        question_tokens("Is <Object> <Object> on?", ["piano"])


def test_avqa_bad_files_raise_data_errors(tmp_path):
    good = {"video_id": "1", "question_id": 1, "type": '["Audio", "Counting"]', "question_content": "How many?",
            "templ_values": "[]", "question_deleted": 0, "anser": "one"}
    cases = (("[", "not valid JSON"), (json.dumps([{k: v for k, v in good.items() if k != "anser"}]), "missing key 'anser'"),
             (json.dumps([{**good, "type": '["Audio", "Location"]'}]), "unknown question type"),
             (json.dumps([{**good, "question_content": "Is <Object> on?"}]), "more placeholders"))
    for text, pattern in cases:
        (tmp_path / "avqa-val.json").write_text(text)
        with pytest.raises(DataError, match=pattern):
            load_avqa_questions("val", tmp_path)
    (tmp_path / "avqa-val.json").write_text(json.dumps([good]))
    assert load_avqa_questions("val", tmp_path)[0].type == ("Audio", "Counting")
    with pytest.raises(DataError, match="avqa-train.json is not bundled"):
        load_avqa_questions("train")


# ---------------------------------------------------------------- AVSBench (not bundled: a small CSV written here)


def test_avsbench_s4_meta_csv(tmp_path):
    csv = tmp_path / "s4_meta_data.csv"
    csv.write_text("name,uid,category,split\n"
                   "-0hHYDy5y5o_1,a,cat_meowing,train\n"
                   "-1tQ0jWeOQ0_2,b,dog_barking,test\n"
                   "-2dF3T0xKz0_0,c,race_car,val\n")
    recs = load_avsbench_meta(csv, "s4")
    assert [(r.name, r.category, r.split) for r in recs] == [
        ("-0hHYDy5y5o_1", "cat_meowing", "train"), ("-1tQ0jWeOQ0_2", "dog_barking", "test"), ("-2dF3T0xKz0_0", "race_car", "val")]
    train, test = recs[0], recs[1]
    assert train.num_masks == 1 and test.num_masks == 5 and train.fields["uid"] == "a"
    assert str(train.frame_paths()[4]) == "visual_frames/train/cat_meowing/-0hHYDy5y5o_1/-0hHYDy5y5o_1_5.png"
    assert [str(p) for p in train.mask_paths()] == ["gt_masks/train/cat_meowing/-0hHYDy5y5o_1/-0hHYDy5y5o_1_1.png"]
    assert [r.name for r in load_avsbench_meta(csv, "s4", split="test")] == ["-1tQ0jWeOQ0_2"]


def test_avsbench_ms3_meta_csv(tmp_path):
    csv = tmp_path / "ms3_meta_data.csv"
    csv.write_text("video_id,split\nAbC_1,train\nDeF_2,val\n")
    recs = load_avsbench_meta(csv, "ms3")
    assert [(r.name, r.split, r.category) for r in recs] == [("AbC_1", "train", None), ("DeF_2", "val", None)]
    assert recs[0].num_masks == 5 and str(recs[0].frame_paths()[0]) == "visual_frames/AbC_1/AbC_1.mp4_1.png"
    assert str(recs[0].mask_paths()[4]) == "gt_masks/train/AbC_1/AbC_1_5.png"


def test_avsbench_bad_csvs(tmp_path):
    csv = tmp_path / "meta.csv"
    for text, subset, pattern in (("name,category\na,b\n", "ms3", "no 'split' column"),
                                  ("name,uid,category,split\na,b,c,dev\n", "s4", "not train, val or test"),
                                  ("name,uid,category,split\na,b,c\n", "s4", "expected 4"),
                                  ("name,split\na,train\n", "s4", "at least 3 columns")):
        csv.write_text(text)
        with pytest.raises(DataError, match=pattern):
            load_avsbench_meta(csv, subset)
    with pytest.raises(DataError, match="not found"):
        load_avsbench_meta(tmp_path / "none.csv", "s4")
    assert not Path(default_annotation_root("ave")).joinpath("s4_meta_data.csv").exists()


def test_order_files_without_h5py_give_a_clear_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "h5py", None)  # the lean runtime has no h5py
    assert len(load_ave().split("test")) == 402  # the default reads the *Set.txt lists
    with pytest.raises(DataError, match="needs h5py"):
        load_ave(order_source="h5")
