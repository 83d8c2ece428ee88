"""`caeav data check`: which items of each split have usable media under a dataset root.

Two passes per split. First the files are looked for (cheap): an item whose media are absent is *missing* (datasets
scraped from the web lack some videos; `skip_missing` datasets drop them). Then, unless `decode=False`, the media of
every distinct clip are opened the way training will read them (`ClipLoader.form`: pre-extracted first under
``--media auto``), in a thread pool (PyAV, Pillow and numpy release the GIL):

* a video: one frame and one second of audio are decoded (`caeav.media.decode_raw` with T = 1);
* pre-extracted frames: the first of the T frame files is decoded, the headers of the others are checked; the
  waveform is loaded and must be non-empty and finite.

A file that is present but fails is *unusable* (with the reason): training would stop at it. Decoding notes (no audio
track: silence is used; damaged packets skipped) are reported without making the clip unusable.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from caeav.errors import CaeavError, DataError
from caeav.media import MediaWarning, decode_raw, load_image

from .clips import ClipLoader
from .layout import SPLITS, layout_for

PROBE_SIZE = 16  # px: the probe decodes a frame, it does not need it at model size


@dataclass
class SplitCheck:
    split: str
    items: int = 0  # annotation records (MUSIC-AVQA: questions)
    usable: int = 0  # records whose media (and AVS masks) exist and decode
    clips: int = 0  # distinct media keys
    forms: dict = field(default_factory=lambda: {"frames": 0, "video": 0})  # distinct usable clips per media form
    missing: list = field(default_factory=list)  # [(clip id, what is missing)], one per distinct clip
    unusable: list = field(default_factory=list)  # [(clip id, why its media cannot be read)]
    notes: list = field(default_factory=list)  # [(clip id, decoding note)] of usable clips
    error: Optional[str] = None  # why the split's annotations could not be read


@dataclass
class CheckReport:
    task: str
    root: str
    media: str
    splits: list
    decoded: bool = True

    @property
    def usable(self) -> int:
        return sum(s.usable for s in self.splits)

    @property
    def unusable(self) -> int:
        return sum(len(s.unusable) for s in self.splits)

    def to_dict(self) -> dict:
        return {"task": self.task, "root": self.root, "media": self.media, "decoded": self.decoded,
                "usable": self.usable, "unusable": self.unusable, "splits": [vars(s) for s in self.splits]}


def probe_record(loader: ClipLoader, record) -> tuple[Optional[str], list]:
    """(None, notes) when the record's media decode as training reads them, else (the reason, [])."""
    try:
        if loader.form(record) == "frames":
            return _probe_extracted(loader, record), []
        raw = decode_raw(loader.layout.video_path(record), segments=1, size=PROBE_SIZE, strict=loader.strict)
        return None, list(raw.warnings)
    except CaeavError as exc:
        return str(exc), []
    except Exception as exc:  # noqa: BLE001 - a checker reports what would stop training, whatever it is
        return f"cannot be read ({type(exc).__name__}: {exc})", []


def _probe_extracted(loader: ClipLoader, record) -> Optional[str]:
    files = loader.layout.frame_files(record)
    load_image(files[0], PROBE_SIZE)
    for path in files[1:]:  # the others: their headers only (cheap)
        reason = _image_header_problem(path)
        if reason is not None:
            return f"{path}: {reason}"
    wave = loader.layout.load_wave(record)
    path = loader.layout.wave_path(record)
    if wave.size == 0:
        return f"{path}: the waveform is empty"
    if not np.isfinite(wave).all():
        return f"{path}: the waveform holds NaN or infinite samples"
    return None


def _image_header_problem(path) -> Optional[str]:
    from PIL import Image

    if os.path.getsize(path) == 0:
        return "is empty (0 bytes)"
    try:
        with Image.open(path) as image:
            image.verify()
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for a damaged file
        return f"cannot be read as an image ({type(exc).__name__}: {exc})"
    return None


def check_split(loader: ClipLoader, split: str, decode: bool = True, workers: Optional[int] = None) -> SplitCheck:
    out = SplitCheck(split)
    try:
        records = loader.layout.records(split)
    except DataError as exc:
        out.error = str(exc)
        return out
    status, present = {}, {}  # key -> None (usable) or reason; key -> a record of each present clip
    for record in records:
        key = loader.layout.media_key(record)
        if key not in status:
            reason = loader.missing_reason(record)
            status[key] = reason
            if reason is None:
                present[key] = record
            else:
                out.missing.append((key, reason))
    if decode and present:
        keys = list(present)
        with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1),
                                thread_name_prefix="caeav-check") as pool:
            probed = list(pool.map(lambda k: probe_record(loader, present[k]), keys))
        for key, (reason, notes) in zip(keys, probed):
            if reason is not None:
                status[key] = reason
                out.unusable.append((key, reason))
            out.notes += [(key, note) for note in notes]
    for key, record in present.items():
        if status[key] is None:
            out.forms[loader.form(record)] += 1
    for record in records:
        out.items += 1
        out.usable += status[loader.layout.media_key(record)] is None
    out.clips = len(status)
    return out


def check_dataset(task: str, root, splits: Optional[Sequence[str]] = None, media: str = "auto",
                  annotations=None, decode: bool = True, workers: Optional[int] = None) -> CheckReport:
    """Count, per split, the items with usable media under `root` (see the module docstring); DataError (one line)
    when no item at all is usable. Files that are present but do not decode are in each split's `unusable`."""
    layout = layout_for(task, root, annotations)
    loader = ClipLoader(layout, size=1, media=media)
    wanted = list(splits) if splits else list(SPLITS)
    bad = [s for s in wanted if s not in SPLITS]
    if bad:
        raise DataError(f"unknown split {bad[0]!r}; choose from {', '.join(SPLITS)}")
    with warnings.catch_warnings():  # the notes are collected from each RawClip instead
        warnings.simplefilter("ignore", MediaWarning)
        report = CheckReport(layout.task, str(layout.root), media, [check_split(loader, s, decode, workers)
                                                                    for s in wanted], decoded=decode)
    if report.usable == 0:
        readable = [s for s in report.splits if s.error is None]
        if not readable:
            raise DataError(report.splits[0].error)
        items = sum(s.items for s in readable)
        damaged = sum(len(s.unusable) for s in readable)
        why = f"{damaged} clip(s) cannot be decoded, e.g. {_first_unusable(readable)}" if damaged else \
            f"expected {layout.media_hint}"
        raise DataError(f"no usable media for {layout.task} under {layout.root}: none of the {items} items of "
                        f"{', '.join(s.split for s in readable)} has {'usable' if damaged else 'its'} media ({why})")
    return report


def _first_unusable(splits) -> str:
    return next(reason for s in splits for _, reason in s.unusable)


def format_report(report: CheckReport, show_missing: int = 5) -> str:
    """A short plain-text table of a CheckReport; every unusable file is listed (one line each, with the reason)."""
    lines = [f"{report.task} under {report.root} (media: {report.media}"
             + ("" if report.decoded else "; files not decoded") + ")",
             f"  {'split':6s} {'items':>7s} {'usable':>7s} {'clips':>6s} {'frames':>7s} {'video':>6s} {'missing':>8s}"
             f" {'unusable':>9s}"]
    for s in report.splits:
        if s.error is not None:
            lines.append(f"  {s.split:6s} annotations unavailable: {s.error}")
            continue
        lines.append(f"  {s.split:6s} {s.items:7d} {s.usable:7d} {s.clips:6d} {s.forms['frames']:7d} "
                     f"{s.forms['video']:6d} {len(s.missing):8d} {len(s.unusable):9d}")
        for key, reason in s.missing[:show_missing]:
            lines.append(f"         missing {key}: {reason}")
        if len(s.missing) > show_missing:
            lines.append(f"         ... and {len(s.missing) - show_missing} more")
        for key, reason in s.unusable:
            lines.append(f"         unusable {key}: {reason}")
        for key, note in s.notes[:show_missing]:
            lines.append(f"         note {key}: {note}")
        if len(s.notes) > show_missing:
            lines.append(f"         ... and {len(s.notes) - show_missing} more notes")
    return "\n".join(lines)
