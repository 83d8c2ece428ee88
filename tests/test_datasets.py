"""Synthetic datasets -> the annotation parsers -> the datasets, in both media forms; the decoded-tensor cache;
`caeav data check` / `caeav data synth`."""

import filecmp
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import caeav.data.clips as clips_module
from caeav.cli.main import main
from caeav.data.annotations import (
    LLP_CLASS_INDEX,
    load_ave,
    load_avqa_questions,
    load_avqa_vocab,
    load_avsbench_meta,
    load_llp_clips,
    load_llp_eval,
)
from caeav.data.check import check_dataset
from caeav.data.datasets import AVEDataset, AVQADataset, LLPDataset, build_dataset
from caeav.data.layout import forget_listings
from caeav.data.synth import synth_dataset
from caeav.errors import DataError
from caeav.metrics import AVQA_QUESTION_TYPES

pytestmark = pytest.mark.filterwarnings("ignore::caeav.media.MediaWarning")
TASKS = ("ave", "avvp", "avqa", "avs_s4", "avs_ms3")
CLIPS = 3  # per split: every generator cycles through three aligned / misaligned patterns
SIZE = 32


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    base = tmp_path_factory.mktemp("synth")
    return {task: synth_dataset(task, base / task, seed=7, clips=CLIPS).root for task in TASKS}


def rms(x):
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


# ------------------------------------------------------------------------------------------------ parsers


def test_ave_annotations_read_back(synth):
    ann = load_ave(synth["ave"])
    assert len(ann.records) == 3 * CLIPS and {k: len(v) for k, v in ann.split_indices.items()} == \
        {"train": CLIPS, "val": CLIPS, "test": CLIPS}
    assert len(ann.categories) == 28 and len({r.category for r in ann.records}) > 1
    assert all(0 <= r.start < r.end <= 10 for r in ann.records)


def test_llp_annotations_read_back_with_differing_audio_and_visual_labels(synth):
    root = synth["avvp"]
    assert [len(load_llp_clips(s, root)) for s in ("train", "val", "test", "full")] == [CLIPS] * 3 + [3 * CLIPS]
    clips, gt_a, gt_v = load_llp_eval("test", root)
    assert gt_a.shape == (CLIPS, 25, 10) and not np.array_equal(gt_a, gt_v)
    # clip 1: one class heard off-screen all along, another seen (silent) in seconds 2..7
    heard, seen = (np.flatnonzero(g[1].any(axis=1)).tolist() for g in (gt_a, gt_v))
    assert len(heard) == len(seen) == 1 and heard != seen
    assert gt_a[1, heard[0]].tolist() == [1] * 10 and gt_v[1, seen[0]].tolist() == [0, 0] + [1] * 6 + [0, 0]
    assert set(clips[1].labels) == {name for name, i in LLP_CLASS_INDEX.items() if i in heard + seen}


def test_avqa_annotations_read_back(synth):
    vocab = load_avqa_vocab(synth["avqa"])
    for split in ("train", "val", "test"):
        questions = load_avqa_questions(split, synth["avqa"])
        assert len(questions) == 9 * CLIPS and len({q.video_id for q in questions}) == CLIPS
        assert {q.type for q in questions} == set(AVQA_QUESTION_TYPES)
        assert all(vocab.encode_question(q).shape == (14,) and vocab.answer_index(q.answer) >= 0 for q in questions)
    existential = [q.answer for q in load_avqa_questions("test", synth["avqa"]) if q.kind == "Existential"]
    assert existential == ["yes", "yes", "no"]  # the third video has an instrument heard off-screen


@pytest.mark.parametrize("task,subset", [("avs_s4", "s4"), ("avs_ms3", "ms3")])
def test_avsbench_meta_read_back(synth, task, subset):
    records = load_avsbench_meta(synth[task] / f"{subset}_meta_data.csv", subset)
    assert sorted(r.split for r in records) == sorted(["train", "val", "test"] * CLIPS)
    for r in records:
        assert all((synth[task] / f"{subset}_data" / p).is_file() for p in r.mask_paths() + r.frame_paths())


# ------------------------------------------------------------------------------------------------ datasets

EXPECTED_LABELS = {
    "ave": {"labels": (10, 29), "video_label": (29,)},
    "avvp": {"labels": (25,), "gt_audio": (25, 10), "gt_visual": (25, 10)},
    "avqa": {"question": (14,)},
    "avs_s4": {"masks": (5, 224, 224)},
    "avs_ms3": {"masks": (5, 224, 224)},
}


@pytest.mark.parametrize("task", TASKS)
def test_items_from_both_media_forms_agree(synth, task):
    items = {m: build_dataset(task, synth[task], "test", media=m, size=SIZE)[0] for m in ("frames", "video")}
    T = 5 if task.startswith("avs") else 10
    for item in items.values():
        assert item["frames"].shape == (T, 3, SIZE, SIZE) and item["frames"].dtype == np.float32
        assert item["audio"].shape == (T, 32000) and item["audio"].dtype == np.float32
        assert item["has_audio"] and item["padded_seconds"] == 0.0 and isinstance(item["clip_id"], str)
        for key, shape in EXPECTED_LABELS[task].items():
            assert item[key].shape == shape, key
    f, v = items["frames"], items["video"]
    assert f["clip_id"] == v["clip_id"]
    # the same instants are picked from the extracted frames and from the video (JPEG vs H.264 differences only)
    assert np.abs(f["frames"] - v["frames"]).mean() < 0.1
    assert np.corrcoef(f["audio"].ravel(), v["audio"].ravel())[0, 1] > 0.98  # waveform .npy vs AAC
    for key in EXPECTED_LABELS[task]:
        assert np.array_equal(f[key], v[key])


def test_ave_labels_match_what_is_seen_and_heard(synth):
    ds = AVEDataset(synth["ave"], "train", media="frames", size=SIZE)
    ann = load_ave(synth["ave"]).split("train")
    for i, record in enumerate(ann):
        item = ds[i]
        assert item["index"] == record.index and item["clip_id"] == record.video_id
        inside = (np.arange(10) >= record.start) & (np.arange(10) < record.end)
        assert item["labels"].argmax(-1).tolist() == np.where(inside, record.label, 28).tolist()
        loud = np.array([rms(a) > 0.05 for a in item["audio"]])
        assert loud[inside].all()
        # clip 0 and 1: silent outside the event; clip 2: heard all along (the object is off-screen outside it)
        assert loud[~inside].all() if i % 3 == 2 else not loud[~inside].any()


def test_avs_masks_cover_only_sounding_objects(synth):
    s4 = build_dataset("avs_s4", synth["avs_s4"], "test", media="frames", size=SIZE)
    masks = s4[1]["masks"]  # a sounding object on the left, a silent one on the right
    assert masks.shape == (5, 224, 224) and masks[:, :, :100].sum() > 0 and masks[:, :, 170:].sum() == 0
    ms3 = build_dataset("avs_ms3", synth["avs_ms3"], "test", media="video", size=SIZE)
    m = ms3[0]["masks"]  # left sounds in seconds 0-2, right in seconds 2-4
    left, right = m[:, :, :100].sum(axis=(1, 2)) > 0, m[:, :, 124:].sum(axis=(1, 2)) > 0
    assert left.tolist() == [True, True, True, False, False] and right.tolist() == [False, False, True, True, True]


def test_avqa_items_share_media_per_video(synth):
    ds = AVQADataset(synth["avqa"], "val", media="video", size=SIZE)
    assert len(ds) == 9 * CLIPS
    a, b = ds[0], ds[1]
    assert a["clip_id"] == b["clip_id"] and a["question_id"] != b["question_id"]
    assert np.array_equal(a["frames"], b["frames"]) and (a["modality"], a["kind"]) == ("Audio", "Counting")
    assert ds.vocab.answers[a["answer"]] == load_avqa_questions("val", synth["avqa"])[0].answer


def test_captions_hook_and_torch_collation(synth):
    torch = pytest.importorskip("torch")
    ds = LLPDataset(synth["avvp"], "val", media="frames", size=SIZE, captions=lambda cid: {"caption_id": cid.upper()})
    item = ds[0]
    assert item["caption_id"] == item["clip_id"].upper()
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=2)))
    assert batch["frames"].shape == (2, 10, 3, SIZE, SIZE) and batch["gt_audio"].shape == (2, 25, 10)
    assert len(batch["clip_id"]) == 2


# ------------------------------------------------------------------------------------------------ cache


@pytest.mark.parametrize("media,decoder", [("video", "decode_raw"), ("frames", "load_image")])
def test_cache_hit_avoids_decoding(synth, tmp_path, monkeypatch, media, decoder):
    ds = build_dataset("avvp", synth["avvp"], "train", media=media, size=SIZE, cache_dir=tmp_path / "cache")
    first = [ds[i] for i in range(len(ds))]
    assert (ds.loader.cache.hits, ds.loader.cache.misses) == (0, CLIPS)

    def refuse(*args, **kwargs):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(clips_module, decoder, refuse)
    again = build_dataset("avvp", synth["avvp"], "train", media=media, size=SIZE, cache_dir=tmp_path / "cache")
    second = [again[i] for i in range(len(again))]
    assert again.loader.cache.hits == CLIPS and again.loader.cache.misses == 0
    for a, b in zip(first, second):
        assert np.array_equal(a["frames"], b["frames"]) and np.array_equal(a["audio"], b["audio"])
    assert isinstance(again.loader.load(again.records[0]).frames, np.memmap)  # opened with mmap_mode="r"
    assert not list((tmp_path / "cache").glob(".tmp-*"))  # written atomically, nothing left over


def test_cache_misses_when_the_source_changes(tmp_path, synth):
    root = tmp_path / "ave"
    shutil.copytree(synth["ave"], root)
    ds = AVEDataset(root, "val", media="video", size=SIZE, cache_dir=tmp_path / "cache")
    ds[0]
    video = ds.layout.video_path(ds.records[0])
    os.utime(video, ns=(0, 123456789))  # same bytes, another modification time
    ds[0]
    assert (ds.loader.cache.hits, ds.loader.cache.misses) == (0, 2)


# ------------------------------------------------------------------------------------------------ synth


def test_synth_is_deterministic_for_a_seed(tmp_path):
    a = synth_dataset("avs_ms3", tmp_path / "a", seed=3, clips=1).root
    b = synth_dataset("avs_ms3", tmp_path / "b", seed=3, clips=1).root
    c = synth_dataset("avs_ms3", tmp_path / "c", seed=4, clips=1).root
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    annotations = [f for f in files if f.suffix in (".csv", ".png") or f.name == "AVS.npy"]
    assert annotations and all(filecmp.cmp(a / f, b / f, shallow=False) for f in annotations)
    assert (a / "ms3_meta_data.csv").read_bytes() != (c / "ms3_meta_data.csv").read_bytes()
    for form in ("video", "frames"):
        x, y = (build_dataset("avs_ms3", r, "train", media=form, size=SIZE)[0] for r in (a, b))
        assert np.array_equal(x["frames"], y["frames"]) and np.array_equal(x["audio"], y["audio"])


def test_synth_annotations_are_byte_identical_for_a_seed(tmp_path):
    for task in ("ave", "avvp", "avqa", "avs_s4"):
        a, b = (synth_dataset(task, tmp_path / f"{task}{n}", seed=11, clips=1, media="frames").root for n in (1, 2))
        texts = [p.relative_to(a) for p in a.rglob("*") if p.suffix in (".txt", ".csv", ".json")]
        assert texts and all(filecmp.cmp(a / f, b / f, shallow=False) for f in texts), task


def test_synth_refuses_a_non_empty_folder_and_bad_arguments(tmp_path, capsys):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(DataError, match="not an empty folder"):
        synth_dataset("ave", tmp_path / "full")
    with pytest.raises(DataError, match="unknown media"):
        synth_dataset("ave", tmp_path / "new", media="tapes")
    assert main(["data", "synth", "nope", "--out", str(tmp_path / "n")]) != 0
    assert main(["data", "synth", "ave", "--out", str(tmp_path / "full")]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("caeav: error: ") for line in err)


# ------------------------------------------------------------------------------------------------ data check


def test_check_counts_usable_and_missing(tmp_path, synth, capsys):
    root = tmp_path / "avvp"
    shutil.copytree(synth["avvp"], root)
    clips = load_llp_clips("val", root)
    (root / "videos" / f"{clips[0].filename}.mp4").unlink()  # still has its extracted frames + wave
    (root / "videos" / f"{clips[1].filename}.mp4").unlink()
    shutil.rmtree(root / "frames" / clips[1].video_id)  # nothing usable left for this one
    forget_listings()
    report = check_dataset("avvp", root)
    val = {s.split: s for s in report.splits}["val"]
    assert (val.items, val.usable, val.clips, len(val.missing)) == (CLIPS, CLIPS - 1, CLIPS, 1)
    assert val.missing[0][0] == clips[1].video_id and val.forms == {"frames": CLIPS - 1, "video": 0}
    video_only = {s.split: s for s in check_dataset("avvp", root, media="video").splits}["val"]
    assert (video_only.usable, len(video_only.missing)) == (CLIPS - 2, 2)

    assert main(["data", "check", "avvp", "--root", str(root), "--split", "val"]) == 0
    out = capsys.readouterr().out
    assert "val" in out and f"missing {clips[1].video_id}" in out
    assert main(["data", "check", "llp", "--root", str(root), "--json"]) == 0
    assert '"usable": 8' in capsys.readouterr().out


def test_check_reports_missing_avs_masks(tmp_path, synth):
    root = tmp_path / "s4"
    shutil.copytree(synth["avs_s4"], root)
    record = load_avsbench_meta(root / "s4_meta_data.csv", "s4", "test")[0]
    (root / "s4_data" / record.mask_paths()[2]).unlink()
    test = {s.split: s for s in check_dataset("avs", root).splits}["test"]
    assert test.usable == CLIPS - 1 and "mask" in test.missing[0][1]


def test_check_with_nothing_usable_is_one_line_and_non_zero(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    # the bundled annotations are used: every row of every split is counted (metrics-and-data.md §1)
    with pytest.raises(DataError, match="none of the 4143 items"):
        check_dataset("ave", tmp_path / "empty")
    with pytest.raises(DataError, match="none of the 11849 items"):
        check_dataset("avvp", tmp_path / "empty")
    with pytest.raises(DataError, match="none of the 13697 items of val, test"):  # 4568 + 9129; no bundled train
        check_dataset("avqa", tmp_path / "empty")
    for argv in (["data", "check", "ave", "--root", str(tmp_path / "empty")],
                 ["data", "check", "avs_ms3", "--root", str(tmp_path / "empty")],
                 ["data", "check", "ave", "--root", str(tmp_path / "missing")]):
        assert main(argv) != 0
        out, err = capsys.readouterr()
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("caeav: error: ") and "Traceback" not in out + err
