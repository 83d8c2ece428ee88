"""The clips of a dataset as captioning jobs: clip id, video file (for the content hash) and a media loader.

Clips come from the task's dataset (`caeav.data.build_dataset`, either media form), one job per clip id over the
chosen splits (AVE rows and AVQA questions that share a video share its captions). The media are what the model sees
(`ClipLoader`: the task's T frames by its sampling rule, T seconds of mono 32 kHz audio) except for the frame size:
captions are asked with `frame_size` px frames (default 448 = 16 Qwen2.5-VL patches of 28 px), square as the model's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

from caeav.errors import DataError

DEFAULT_FRAME_SIZE = 448
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class ClipJob:
    """One clip to caption: `load()` returns a `caeav.media.RawClip` (uint8 frames [T, S, S, 3], audio [T, 32000])."""

    clip_id: str
    load: Callable
    video: Optional[Path] = None
    segments: int = 10


def dataset_jobs(task: str, root, splits: Optional[Sequence[str]] = None, frame_size: int = DEFAULT_FRAME_SIZE,
                 media: str = "auto", annotations=None) -> tuple[list[ClipJob], list[str]]:
    """(jobs sorted by clip id, notes). Splits default to all three; a split whose annotations are missing is skipped
    with a note when no split was named, and is an error when it was."""
    from caeav.data.datasets import build_dataset

    notes: list[str] = []
    jobs: dict[str, ClipJob] = {}
    for split in splits or SPLITS:
        try:
            ds = build_dataset(task, root, split, size=frame_size, media=media, annotations=annotations)
        except DataError as exc:
            if splits:
                raise
            notes.append(f"split {split} skipped: {exc}")
            continue
        for record in ds.records:
            clip_id = ds.clip_id(record)
            if clip_id not in jobs:
                jobs[clip_id] = ClipJob(clip_id, _loader(ds.loader, record), ds.layout.video_path(record),
                                        ds.layout.segments)
    if not jobs:
        raise DataError(f"no clips found for task {task} under {root}" + (f" ({'; '.join(notes)})" if notes else ""))
    return [jobs[k] for k in sorted(jobs)], notes


def _loader(loader, record) -> Callable:
    def load():
        return loader.load(record)

    return load

