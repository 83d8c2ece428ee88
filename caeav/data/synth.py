"""`caeav data synth`: small, deterministic synthetic datasets in each task's real on-disk format.

    synth_dataset("ave", "/tmp/ave", seed=0, clips=4)   # 4 clips per split (train/val/test)

Videos are H.264 + AAC mp4 files, 128 x 128 at 8 frames/s, 10 s (AVSBench: 5 s), showing coloured moving shapes; the
class decides the shape, colour and sound (a tone or noise band at a class-specific pitch; `synth_scene`). Class names
are real ones (AVE categories.txt, the 25 LLP classes, AVSBench S4 folders, MUSIC-AVQA instruments), a small subset
by default. Each generator includes deliberately misaligned clips (a source heard off-screen, a visible source that is
silent) and labels that say so: AVE marks those segments background, LLP's audio and visual eval rows differ,
AVSBench masks only sounding objects, MUSIC-AVQA answers "no" to "Is this sound from the instrument in the video?".

`media` chooses the media forms written: "video" (raw videos), "frames" (pre-extracted frames + 32 kHz waveforms in
the community layout) or both. The annotation files are byte-identical for a seed, and the media decode to the same
arrays (single-threaded encoders).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from caeav.errors import DataError

from .layout import canonical, forget_listings
from .synth_avs import synth_avs_ms3, synth_avs_s4
from .synth_io import MEDIA_FORMS
from .synth_tasks import synth_ave, synth_avqa, synth_llp

GENERATORS = {"ave": synth_ave, "avvp": synth_llp, "avqa": synth_avqa, "avs_s4": synth_avs_s4,
              "avs_ms3": synth_avs_ms3}
_TASK_NUMBER = {"ave": 1, "avvp": 2, "avqa": 3, "avs_s4": 4, "avs_ms3": 5}


@dataclass
class SynthReport:
    task: str
    root: Path
    items: dict  # split -> number of items (clips; questions for MUSIC-AVQA)
    media: tuple


def parse_media(media) -> tuple:
    """"both" | "video" | "frames" (or a sequence of the last two) -> a tuple of forms."""
    if isinstance(media, str):
        forms = MEDIA_FORMS if media == "both" else (media,)
    else:
        forms = tuple(media)
    bad = [f for f in forms if f not in MEDIA_FORMS]
    if bad or not forms:
        raise DataError(f"unknown media form {bad[0] if bad else ''!r}; choose video, frames or both")
    return forms


def synth_dataset(task: str, out, seed: int = 0, clips: int = 4, media="both", num_classes: int = 4,
                  st_dim: int = 32) -> SynthReport:
    """Write a synthetic dataset of `task` into `out` (created; must be empty or absent). `clips` per split.

    LLP written as pre-extracted media only (`media="frames"`) also gets what the LLP release ships next to its
    frames: R(2+1)D-18 features `feats/r2plus1d_18/<id>.npy` [10, `st_dim`] (default: the `tiny` stream's width; 0 =
    none). With videos there are none, so the loader computes them with the stream (`caeav.data.clips.STFeatures`)."""
    name = canonical(task)
    forms = parse_media(media)
    if clips < 1:
        raise DataError("--clips must be at least 1")
    if num_classes < 1:
        raise DataError("the number of classes must be at least 1")
    root = Path(out)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise DataError(f"{root} exists and is not an empty folder; choose a new --out")
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([int(seed), _TASK_NUMBER[name]])
    items = GENERATORS[name](root, rng, int(seed), int(clips), int(num_classes), forms)
    if name == "avvp" and "video" not in forms and st_dim > 0:
        from .synth_tasks import synth_llp_st_features

        synth_llp_st_features(root, int(st_dim), int(seed))
    forget_listings()  # folders listed earlier in this process now hold the new media
    return SynthReport(name, root, items, forms)
