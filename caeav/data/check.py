"""`caeav data check`: which items of each split have usable media under a dataset root (file checks, no decoding)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

from caeav.errors import DataError

from .clips import ClipLoader
from .layout import SPLITS, layout_for


@dataclass
class SplitCheck:
    split: str
    items: int = 0  # annotation records (MUSIC-AVQA: questions)
    usable: int = 0  # records whose media (and AVS masks) exist
    clips: int = 0  # distinct media keys
    forms: dict = field(default_factory=lambda: {"frames": 0, "video": 0})  # distinct clips per media form used
    missing: list = field(default_factory=list)  # [(clip id, what is missing)], one per distinct clip
    error: Optional[str] = None  # why the split's annotations could not be read


@dataclass
class CheckReport:
    task: str
    root: str
    media: str
    splits: list

    @property
    def usable(self) -> int:
        return sum(s.usable for s in self.splits)

    def to_dict(self) -> dict:
        return {"task": self.task, "root": self.root, "media": self.media, "usable": self.usable,
                "splits": [vars(s) for s in self.splits]}


def check_split(loader: ClipLoader, split: str) -> SplitCheck:
    out = SplitCheck(split)
    try:
        records = loader.layout.records(split)
    except DataError as exc:
        out.error = str(exc)
        return out
    seen = {}
    for record in records:
        key = loader.layout.media_key(record)
        if key not in seen:
            reason = loader.missing_reason(record)
            seen[key] = reason
            if reason is None:
                out.forms[loader.form(record)] += 1
            else:
                out.missing.append((key, reason))
        out.items += 1
        out.usable += seen[key] is None
    out.clips = len(seen)
    return out


def check_dataset(task: str, root, splits: Optional[Sequence[str]] = None, media: str = "auto",
                  annotations=None) -> CheckReport:
    """Count, per split, the items with media under `root`; DataError (one line) when no item at all is usable."""
    layout = layout_for(task, root, annotations)
    loader = ClipLoader(layout, size=1, media=media)
    wanted = list(splits) if splits else list(SPLITS)
    bad = [s for s in wanted if s not in SPLITS]
    if bad:
        raise DataError(f"unknown split {bad[0]!r}; choose from {', '.join(SPLITS)}")
    report = CheckReport(layout.task, str(layout.root), media, [check_split(loader, s) for s in wanted])
    if report.usable == 0:
        readable = [s for s in report.splits if s.error is None]
        if not readable:
            raise DataError(report.splits[0].error)
        items = sum(s.items for s in readable)
        raise DataError(f"no usable media for {layout.task} under {layout.root}: none of the {items} items of "
                        f"{', '.join(s.split for s in readable)} has its media (expected {layout.media_hint})")
    return report


def format_report(report: CheckReport, show_missing: int = 5) -> str:
    """A short plain-text table of a CheckReport."""
    lines = [f"{report.task} under {report.root} (media: {report.media})",
             f"  {'split':6s} {'items':>7s} {'usable':>7s} {'clips':>6s} {'frames':>7s} {'video':>6s} {'missing':>8s}"]
    for s in report.splits:
        if s.error is not None:
            lines.append(f"  {s.split:6s} annotations unavailable: {s.error}")
            continue
        lines.append(f"  {s.split:6s} {s.items:7d} {s.usable:7d} {s.clips:6d} {s.forms['frames']:7d} "
                     f"{s.forms['video']:6d} {len(s.missing):8d}")
        for key, reason in s.missing[:show_missing]:
            lines.append(f"         missing {key}: {reason}")
        if len(s.missing) > show_missing:
            lines.append(f"         ... and {len(s.missing) - show_missing} more")
    return "\n".join(lines)
