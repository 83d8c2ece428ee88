"""AVE annotations: `Annotations.txt`, `categories.txt` and the train/val/test split lists (metrics-and-data.md §1.1).

Files (separator `&`): `Annotations.txt` has the header `Category&VideoID&Quality&StartTime&EndTime` and 4143 rows;
`trainSet.txt` / `valSet.txt` / `testSet.txt` hold 3339 / 402 / 402 of those rows, no header. `categories.txt` lists the
28 classes (line index = class index; 28 = background).

Splits: the canonical definition is the `*_order.h5` files (dataset `order`: 0-based row indices into Annotations.txt,
header excluded), which the authors' loader reads. The `*Set.txt` files list the same rows in the same order (checked
by the tests), so the default `order_source="txt"` reads them and needs no h5py; `order_source="h5"` reads the order
files (h5py imported only then).

Labels: the missing `labels.h5` [4143, 10, 29] is rebuilt from start/end: segment t (0..9) has the row's class if
StartTime <= t < EndTime, else background (28). A VideoID can appear on several rows (different events of one video):
each row is its own record and the rows share the video's media.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional

import numpy as np

from caeav.errors import DataError

from ._io import PathLike, parse_int, read_lines, read_table, resolve_root

AVE_HEADER = ("Category", "VideoID", "Quality", "StartTime", "EndTime")
AVE_SPLITS = ("train", "val", "test")
AVE_NUM_SEGMENTS = 10
AVE_BACKGROUND = 28
_SPLIT_TXT = {"train": "trainSet.txt", "val": "valSet.txt", "test": "testSet.txt"}


@dataclass(frozen=True)
class AVERecord:
    """One row of Annotations.txt: a video and one audio-visual event in it."""

    index: int  # 0-based row in Annotations.txt (header excluded) = row of labels.h5 / mil_labels.h5
    video_id: str  # YouTube id; keys the media (frames/<video_id>/, wave/<video_id>.npy)
    category: str
    label: int  # categories.txt index, 0..27
    start: int  # event start, whole seconds in 0..10
    end: int  # event end (exclusive), whole seconds in 0..10
    quality: str = "good"
    split: Optional[str] = None  # "train" / "val" / "test", or None if no split list names this row

    def segment_labels(self, num_segments: int = AVE_NUM_SEGMENTS) -> np.ndarray:
        """[T] int64: the class where start <= t < end, background (28) elsewhere."""
        t = np.arange(num_segments)
        return np.where((self.start <= t) & (t < self.end), self.label, AVE_BACKGROUND).astype(np.int64)

    def segment_onehot(self, num_segments: int = AVE_NUM_SEGMENTS) -> np.ndarray:
        """[T, 29] float32 one-hot: this row of the rebuilt `labels.h5` (dataset `avadataset`)."""
        return np.eye(AVE_BACKGROUND + 1, dtype=np.float32)[self.segment_labels(num_segments)]

    def video_onehot(self) -> np.ndarray:
        """[29] float32 video-level one-hot of the category (`mil_labels.h5`; column 28 is always 0)."""
        out = np.zeros(AVE_BACKGROUND + 1, np.float32)
        out[self.label] = 1.0
        return out

    def foreground(self, num_segments: int = AVE_NUM_SEGMENTS) -> np.ndarray:
        """[T] float32 event mask (`labels_closs.h5`)."""
        return (self.segment_labels(num_segments) != AVE_BACKGROUND).astype(np.float32)


@dataclass(frozen=True)
class AVEAnnotations:
    """All AVE annotations: the classes, every row of Annotations.txt, and each split as row indices in file order."""

    categories: tuple[str, ...]
    records: tuple[AVERecord, ...]
    split_indices: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def split(self, name: str) -> list[AVERecord]:
        """The records of one split, in the order of its split list (= the official loader order)."""
        if name not in self.split_indices:
            raise DataError(f"unknown AVE split {name!r}; known: {', '.join(self.split_indices)}")
        return [self.records[i] for i in self.split_indices[name]]


def load_ave_categories(root: Optional[PathLike] = None) -> tuple[str, ...]:
    """The 28 class names of `categories.txt` (line index = class index)."""
    path = resolve_root(root, "ave") / "categories.txt"
    names = tuple(line.strip() for _, line in read_lines(path))
    if len(names) != AVE_BACKGROUND or len(set(names)) != len(names):
        raise DataError(f"{path}: expected {AVE_BACKGROUND} distinct class names, found {len(names)} lines, {len(set(names))} distinct")
    return names


def _row_key(fields) -> str:
    return "&".join(f.strip() for f in fields)


def _parse_rows(path: Path, categories: tuple[str, ...]) -> tuple[list[AVERecord], dict[str, list[int]]]:
    """Records in file order, and each row's text -> the indices of the rows with that text."""
    index = {name: i for i, name in enumerate(categories)}
    records, keys = [], {}
    for n, fields in read_table(path, "&", AVE_HEADER):
        cat, vid, quality, start, end = (f.strip() for f in fields)
        if cat not in index:
            raise DataError(f"{path}: line {n}: category {cat!r} is not in categories.txt")
        s, e = parse_int(start, path, n, "StartTime"), parse_int(end, path, n, "EndTime")
        if not (0 <= s <= AVE_NUM_SEGMENTS and 0 <= e <= AVE_NUM_SEGMENTS):
            raise DataError(f"{path}: line {n}: start/end {s}-{e} outside 0..{AVE_NUM_SEGMENTS} s")
        keys.setdefault(_row_key(fields), []).append(len(records))
        records.append(AVERecord(len(records), vid, cat, index[cat], s, e, quality))
    return records, keys


def _split_from_txt(root: Path, split: str, lines_to_rows: dict[str, list[int]]) -> tuple[int, ...]:
    path = root / _SPLIT_TXT[split]
    pending = {k: list(v) for k, v in lines_to_rows.items()}
    out = []
    for n, line in read_lines(path):
        rows = pending.get(_row_key(line.split("&")))
        if not rows:
            raise DataError(f"{path}: line {n}: {line.strip()!r} is not a row of Annotations.txt")
        out.append(rows.pop(0))
    return tuple(out)


def _split_from_h5(root: Path, split: str, num_rows: int) -> tuple[int, ...]:
    path = root / f"{split}_order.h5"
    try:
        import h5py  # only this reader needs it; the lean runtime has no h5py
    except ImportError:
        raise DataError(f"reading {path.name} needs h5py (pip install h5py), or use order_source='txt'") from None
    if not path.is_file():
        raise DataError(f"annotation file not found: {path}")
    try:
        with h5py.File(path, "r") as f:
            order = np.asarray(f["order"][()]).reshape(-1)
    except KeyError:
        raise DataError(f"{path}: no dataset 'order'") from None
    except OSError as err:
        raise DataError(f"{path}: not a readable HDF5 file ({err})") from None
    if order.size and (order.min() < 0 or order.max() >= num_rows):
        raise DataError(f"{path}: row indices must lie in 0..{num_rows - 1}")
    return tuple(int(i) for i in order)


def load_ave(root: Optional[PathLike] = None, order_source: str = "txt") -> AVEAnnotations:
    """Parse AVE from `root` (default: the bundled copy). `order_source` is "txt" (`*Set.txt`) or "h5" (`*_order.h5`)."""
    if order_source not in ("txt", "h5"):
        raise ValueError(f"order_source must be 'txt' or 'h5', got {order_source!r}")
    base = resolve_root(root, "ave")
    categories = load_ave_categories(base)
    records, lines_to_rows = _parse_rows(base / "Annotations.txt", categories)
    splits, owner = {}, {}
    for split in AVE_SPLITS:
        if order_source == "h5":
            splits[split] = _split_from_h5(base, split, len(records))
        else:
            splits[split] = _split_from_txt(base, split, lines_to_rows)
        for i in splits[split]:
            if owner.setdefault(i, split) != split:
                raise DataError(f"Annotations.txt row {i} is listed in both the {owner[i]} and the {split} split")
    records = tuple(replace(r, split=owner.get(r.index)) for r in records)
    return AVEAnnotations(categories, records, splits)


def ave_label_matrix(records) -> np.ndarray:
    """[N, 10, 29] float32 one-hot segment labels of `records`: the rebuilt `labels.h5` when given all rows in order."""
    if not records:
        return np.zeros((0, AVE_NUM_SEGMENTS, AVE_BACKGROUND + 1), np.float32)
    return np.stack([r.segment_onehot() for r in records])


def ave_segment_targets(records) -> np.ndarray:
    """[N, 10] int64 segment class indices (28 = background) of `records`."""
    if not records:
        return np.zeros((0, AVE_NUM_SEGMENTS), np.int64)
    return np.stack([r.segment_labels() for r in records])
