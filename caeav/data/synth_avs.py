"""Synthetic AVSBench S4 / MS3 datasets in the released layout (see `caeav.data.layout`, `caeav.data.synth`).

Masks cover only the *sounding* visible objects, as AVSBench annotates them: a visible but silent object is not in the
mask, and a source heard off-screen has no mask at all. They are drawn at 224 x 224 for the frame shown at the centre
of each second (the frame `sampling="centre"` decodes and the one written to visual_frames/).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .layout import SPLITS
from .synth_io import ClipMedia, save_avs_wave_dict, save_mask, write_text, youtube_id
from .synth_scene import FPS, Source, source_mask

# AVSBench S4's 23 category folder names (VGGSound class names), in the AVSBench scripts' order
AVS_S4_CATEGORIES = (
    "baby_laughter", "female_singing", "male_speech", "dog_barking", "cat_meowing", "lions_roaring", "horse_clip-clop",
    "coyote_howling", "mynah_bird_singing", "playing_acoustic_guitar", "playing_tabla", "playing_violin",
    "playing_piano", "playing_ukulele", "playing_glockenspiel", "helicopter", "race_car", "driving_buses",
    "ambulance_siren", "typing_on_computer_keyboard", "chainsawing_trees", "cap_gun_shooting", "lawn_mowing",
)
AVS_SECONDS = 5
MASK_SIZE = 224


def sounding_mask(sources: list, k: int) -> np.ndarray:
    """Union of the sources visible *and* audible at the centre frame of second k, at 224 x 224."""
    t = int((k + 0.5) * FPS) / FPS
    mask = np.zeros((MASK_SIZE, MASK_SIZE), dtype=bool)
    for s in sources:
        if any(on <= t < off for on, off in s.audible):
            mask |= source_mask(s, t, MASK_SIZE)
    return mask


def _write_clip(data: Path, sources: list, seed: int, forms, video: Path, frames: list, masks: list, mode: str,
                waves: dict, wave_key) -> None:
    media = ClipMedia(sources, AVS_SECONDS, seed)
    if "video" in forms:
        media.write_video(video)
    if "frames" in forms:
        media.write_segment_frames(frames, size=MASK_SIZE)
        waves.setdefault(wave_key, {})[f"{video.stem}.wav"] = media.audio
    for k, path in enumerate(masks):  # masks are annotations: written whatever the media forms
        save_mask(path, sounding_mask(sources, k), mode)


def synth_avs_s4(out: Path, rng: np.random.Generator, seed: int, clips: int, num_classes: int, forms) -> dict:
    """S4: one sounding object per clip; every second clip adds a visible but silent distractor (not in the mask)."""
    from .annotations import AVSRecord

    chosen = sorted(int(c) for c in rng.choice(len(AVS_S4_CATEGORIES), size=min(num_classes, 23), replace=False))
    data, rows, waves, counts = out / "s4_data", [], {}, {}
    for si, split in enumerate(SPLITS):
        for i in range(clips):
            cls = chosen[(i + si) % len(chosen)]
            sources = [Source(cls, [(0, 5)], [(0, 5)], (0.35, 0.5), radius=0.18, phase=float(rng.uniform(0, 6)))]
            if i % 2 == 1:
                other = chosen[(i + si + 1) % len(chosen)]
                sources.append(Source(other, [(0, 5)], [], (0.72, 0.5), radius=0.12))
            category = AVS_S4_CATEGORIES[cls]
            name = f"{youtube_id(rng)}_{int(rng.integers(0, 30))}"
            rec = AVSRecord(name, split, "s4", category)
            _write_clip(data, sources, seed + 7919 * si + i, forms,
                        data / "raw_videos" / split / category / f"{name}.mp4",
                        [data / p for p in rec.frame_paths()], [data / p for p in rec.mask_paths()], "1",
                        waves, (split, category))
            rows.append(f"{name},{len(rows)},{category},{split}")
        counts[split] = clips
    write_text(out / "s4_meta_data.csv", "name,uid,category,split\n" + "".join(r + "\n" for r in rows))
    for (split, category), table in waves.items():
        save_avs_wave_dict(data / "wave" / split / category / "AVS.npy", table)
    return counts


def _ms3_sources(i: int, a: int, b: int, c: int, rng) -> list:
    """Two visible objects; (0) both sound at different times, (1) one is silent, (2) plus an off-screen sound."""
    left = Source(a, [(0, 5)], [(0, 5)], (0.28, 0.5), radius=0.15, phase=float(rng.uniform(0, 6)))
    right = Source(b, [(0, 5)], [], (0.72, 0.5), radius=0.15, phase=float(rng.uniform(0, 6)))
    if i % 3 == 0:
        left.audible, right.audible = [(0, 3)], [(2, 5)]
        return [left, right]
    if i % 3 == 1:
        return [left, right]
    return [left, right, Source(c, [], [(0, 5)], loudness=0.2)]


def synth_avs_ms3(out: Path, rng: np.random.Generator, seed: int, clips: int, num_classes: int, forms) -> dict:
    """MS3: several sources per clip, masks of the sounding ones only (they change from second to second)."""
    from .annotations import AVSRecord

    k = max(3, min(num_classes, 23))
    chosen = sorted(int(c) for c in rng.choice(len(AVS_S4_CATEGORIES), size=k, replace=False))
    data, rows, waves, counts = out / "ms3_data", [], {}, {}
    for si, split in enumerate(SPLITS):
        for i in range(clips):
            a, b, c = (chosen[(i + si + j) % k] for j in range(3))
            name = f"{youtube_id(rng)}_{int(rng.integers(0, 30))}"
            rec = AVSRecord(name, split, "ms3")
            _write_clip(data, _ms3_sources(i, a, b, c, rng), seed + 7919 * si + i, forms,
                        data / "raw_videos" / f"{name}.mp4", [data / p for p in rec.frame_paths()],
                        [data / p for p in rec.mask_paths()], "P", waves, (split,))
            rows.append(f"{name},{split}")
        counts[split] = clips
    write_text(out / "ms3_meta_data.csv", "video_id,split\n" + "".join(r + "\n" for r in rows))
    for (split,), table in waves.items():
        save_avs_wave_dict(data / "wave" / split / "AVS.npy", table)
    return counts
