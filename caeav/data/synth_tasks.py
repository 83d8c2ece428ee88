"""Synthetic AVE, LLP (AVVP) and MUSIC-AVQA datasets in their real annotation formats (see `caeav.data.synth`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from caeav.errors import DataError

from .annotations import LLP_CLASSES, default_annotation_root, load_avqa_vocab, load_ave_categories
from .annotations.musicavqa import AVQAQuestion
from .layout import SPLITS
from .synth_captions import append_captions
from .synth_io import ClipMedia, write_text, youtube_id
from .synth_scene import Source

LEFT, RIGHT, OFF = (0.28, 0.5), (0.72, 0.5), (0.5, 0.5)


def _media(out: Path, key: str, media: ClipMedia, forms, video_stem: str = None, wave_dir: str = "wave",
           all_frames: bool = True) -> None:
    # what an MLLM would say it sees and hears, under the dataset's clip id (LLP: the file name, else the media key)
    append_captions(out, video_stem or key, media.sources, media.seconds)
    if "video" in forms:
        media.write_video(out / "videos" / f"{video_stem or key}.mp4")
    if "frames" in forms:
        if all_frames:
            media.write_all_frames(out / "frames" / key)
        else:
            media.write_segment_frames([out / "frames" / key / f"{k:08d}.jpg" for k in range(1, media.seconds + 1)])
        media.write_wave(out / wave_dir / f"{key}.npy")


def synth_ave(out: Path, rng: np.random.Generator, seed: int, clips: int, num_classes: int, forms) -> dict:
    """Each clip: one AV event [start, end) of its category; outside it, by clip index, nothing (0), the object still
    visible but silent (1), or its sound still audible with the object off-screen (2). Outside the event the label is
    background: AVE counts a segment only when the event is both seen and heard."""
    categories = load_ave_categories()
    chosen = sorted(int(c) for c in rng.choice(len(categories), size=min(num_classes, len(categories)), replace=False))
    rows, counts = {s: [] for s in SPLITS}, {}
    for si, split in enumerate(SPLITS):
        for i in range(clips):
            cls = chosen[(i + si) % len(chosen)]
            start = int(rng.integers(0, 5))
            end = int(rng.integers(start + 2, 11))
            src = Source(cls, visible=[(start, end)], audible=[(start, end)], phase=float(rng.uniform(0, 6)))
            if i % 3 == 1:
                src.visible = [(0, 10)]
            elif i % 3 == 2:
                src.audible = [(0, 10)]
            vid = youtube_id(rng)
            _media(out, vid, ClipMedia([src], 10, seed + 7919 * si + i), forms)
            rows[split].append(f"{categories[cls]}&{vid}&good&{start}&{end}")
        counts[split] = clips
    header = "Category&VideoID&Quality&StartTime&EndTime"
    write_text(out / "Annotations.txt", "\n".join([header] + rows["train"] + rows["val"] + rows["test"]) + "\n")
    for split, name in zip(SPLITS, ("trainSet.txt", "valSet.txt", "testSet.txt")):
        write_text(out / name, "".join(r + "\n" for r in rows[split]))
    write_text(out / "categories.txt", "".join(c + "\n" for c in categories))
    return counts


def _llp_sources(i: int, a: int, b: int, rng) -> list:
    """Aligned (0), misaligned: A heard off-screen + B seen silent (1), partly aligned (2)."""
    phase = float(rng.uniform(0, 6))
    if i % 3 == 0:
        s = int(rng.integers(0, 5))
        e = int(rng.integers(s + 2, 11))
        return [Source(a, visible=[(s, e)], audible=[(s, e)], phase=phase)]
    if i % 3 == 1:
        return [Source(a, visible=[], audible=[(0, 10)]), Source(b, visible=[(2, 8)], audible=[], anchor=RIGHT)]
    return [Source(a, visible=[(0, 10)], audible=[(0, 5)], anchor=LEFT, phase=phase),
            Source(b, visible=[(6, 10)], audible=[(6, 10)], anchor=RIGHT)]


def synth_llp(out: Path, rng: np.random.Generator, seed: int, clips: int, num_classes: int, forms) -> dict:
    """LLP clips whose audio and visual labels differ on purpose; val/test get the eval CSVs (one row per event)."""
    chosen = sorted(int(c) for c in rng.choice(len(LLP_CLASSES), size=min(num_classes, 25), replace=False))
    weak, events, counts = {s: [] for s in SPLITS}, {"audio": [], "visual": []}, {}
    for si, split in enumerate(SPLITS):
        for i in range(clips):
            a, b = chosen[(i + si) % len(chosen)], chosen[(i + si + 1) % len(chosen)]
            sources = _llp_sources(i, a, b, rng)
            vid, st = youtube_id(rng), 10 * int(rng.integers(0, 6))
            filename = f"{vid}_{st}_{st + 10}"
            _media(out, vid, ClipMedia(sources, 10, seed + 7919 * si + i), forms, video_stem=filename,
                   all_frames=False)
            present = sorted({s.cls for s in sources})
            weak[split].append(f"{filename}\t{','.join(LLP_CLASSES[c] for c in present)}")
            if split != "train":
                for s in sources:
                    for modality, spans in (("audio", s.audible), ("visual", s.visible)):
                        events[modality] += [f"{filename}\t{on}\t{off}\t{LLP_CLASSES[s.cls]}" for on, off in spans]
        counts[split] = clips
    head = "filename\tevent_labels\n"
    for split, name in zip(SPLITS, ("AVVP_train.csv", "AVVP_val_pd.csv", "AVVP_test_pd.csv")):
        write_text(out / name, head + "".join(r + "\n" for r in weak[split]))
    write_text(out / "AVVP_dataset_full.csv", head + "".join(r + "\n" for s in SPLITS for r in weak[s]))
    for modality in ("audio", "visual"):
        write_text(out / f"AVVP_eval_{modality}.csv",
                   "filename\tonset\toffset\tevent_labels\n" + "".join(r + "\n" for r in events[modality]))
    return counts


def synth_llp_st_features(root, dim: int, seed: int = 0) -> int:
    """Add precomputed R(2+1)D features in the LLP release's layout, `feats/r2plus1d_18/<id>.npy` float32 [10, dim],
    to the synthetic LLP dataset at `root`, so the loader's precomputed path can be used (without them the features
    are computed from the videos). Each clip's rows are the mean of fixed random class vectors of its weak label plus
    noise (informative, deterministic for `seed`; not what the stream would compute). Returns the number of files."""
    from .annotations import load_llp_clips

    if dim < 1:
        raise DataError("the R(2+1)D feature width must be at least 1")
    rng = np.random.default_rng([int(seed), 16])
    classes = rng.standard_normal((len(LLP_CLASSES), dim)).astype(np.float32)
    folder = Path(root) / "feats" / "r2plus1d_18"
    folder.mkdir(parents=True, exist_ok=True)
    written = 0
    for split in SPLITS:
        for clip in load_llp_clips(split, root):
            label = clip.weak_label().astype(np.float32)
            base = label @ classes / max(1.0, float(label.sum()))
            rows = base[None, :] + 0.1 * rng.standard_normal((10, dim)).astype(np.float32)
            np.save(folder / f"{clip.video_id}.npy", rows.astype(np.float32))
            written += 1
    return written


NON_INSTRUMENTS = {"yes", "no", "left", "right", "middle", "indoor", "outdoor", "more than ten", "simultaneously",
                   "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"}
NUMBERS = ("zero", "one", "two", "three")


def _avqa_scene(p: int, left: int, right: int, other: int) -> list:
    """Pattern 0: both play, left first and louder; 1: right is silent; 2: right first and louder, plus an
    instrument heard off-screen (so "Is this sound from the instrument in the video?" is "no")."""
    if p == 0:
        return [Source(left, [(0, 10)], [(0, 10)], LEFT, loudness=0.35), Source(right, [(0, 10)], [(3, 10)], RIGHT,
                                                                                  loudness=0.15)]
    if p == 1:
        return [Source(left, [(0, 10)], [(0, 10)], LEFT, loudness=0.3), Source(right, [(0, 10)], [], RIGHT)]
    return [Source(left, [(0, 10)], [(3, 10)], LEFT, loudness=0.15), Source(right, [(0, 10)], [(0, 10)], RIGHT,
                                                                              loudness=0.35),
            Source(other, [], [(1, 10)], OFF, loudness=0.2)]


def _avqa_questions(p: int, names: list, left: int, right: int, absent: int, i: int) -> list:
    """(modality, kind, template, templ_values, answer): one question of each of the nine types."""
    L, R, X = names[left], names[right], names[absent]
    first = "right" if p == 2 else "left"
    side = "left" if i % 2 == 0 else "right"
    louder = "no" if p == 2 else "yes"
    asked = L if i % 2 == 0 else X
    return [
        ("Audio", "Counting", "How many musical instruments were heard throughout the video?", [],
         NUMBERS[(2, 1, 3)[p]]),
        ("Audio", "Comparative", "Is the <Object> louder than the <Object>?", [L, R], louder),
        ("Visual", "Counting", "Is there a <Object> in the entire video?", [asked], "yes" if asked == L else "no"),
        ("Visual", "Location", "What is the instrument on the <LR> of <Object>?", ["left", R], L),
        ("Audio-Visual", "Existential", "Is this sound from the instrument in the video?", [], "no" if p == 2 else "yes"),
        ("Audio-Visual", "Counting", "How many instruments are sounding in the video?", [], NUMBERS[(2, 1, 2)[p]]),
        ("Audio-Visual", "Location", "Is the <FL> sound coming from the <LR> instrument?", ["first", side],
         "yes" if side == first else "no"),
        ("Audio-Visual", "Comparative", "Is the instrument on the <LR> louder than the instrument on the <LR>?",
         ["left", "right"], louder),
        ("Audio-Visual", "Temporal", "Where is the <FL> sounding instrument?", ["first"], first),
    ]


def synth_avqa(out: Path, rng: np.random.Generator, seed: int, clips: int, num_classes: int, forms) -> dict:
    """Two instruments (left, right) per video, nine questions per video (every type), answers from the scene."""
    vocab = load_avqa_vocab()
    names = [a for a in vocab.answers if a not in NON_INSTRUMENTS]
    k = max(3, min(num_classes, len(names)))
    chosen = sorted(int(c) for c in rng.choice(len(names), size=k, replace=False))
    counts, qid, vid_no = {}, 1, 1
    for si, split in enumerate(SPLITS):
        items = []
        for i in range(clips):
            left, right, other = (chosen[(i + si + j) % k] for j in range(3))
            p, video_id = i % 3, f"{vid_no:08d}"
            vid_no += 1
            _media(out, video_id, ClipMedia(_avqa_scene(p, left, right, other), 10, seed + 7919 * si + i), forms,
                   wave_dir="audio_wave")
            for modality, kind, template, values, answer in _avqa_questions(p, names, left, right, other, i):
                q = AVQAQuestion(video_id, qid, modality, kind, template, tuple(values), answer, split)
                vocab.encode_question(q), vocab.answer_index(answer)  # every token and answer must be in the vocab
                items.append({"video_id": video_id, "question_id": qid, "type": json.dumps([modality, kind]),
                              "question_content": template, "templ_values": json.dumps(values),
                              "question_deleted": 0, "anser": answer})
                qid += 1
        write_text(out / f"avqa-{split}.json", json.dumps(items, indent=2) + "\n")
        counts[split] = len(items)
    bundled = default_annotation_root("avqa")
    for name in ("ans_vocab.txt", "ques_vocab.txt"):
        shutil.copyfile(bundled / name, out / name)
    return counts
