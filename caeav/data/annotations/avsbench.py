"""AVSBench meta CSVs (S4 single-source, MS3 multi-source): not bundled; parsed from a path (metrics-and-data.md §1.3).

Format the authors' loaders expect (`avs_s4/dataloader.py:66-67,157-158`, `avs_ms3/dataloader.py:69-70,154-155`):
comma-separated with a header row; rows are filtered on the column named `split` (train / val / test); column 0 is the
video name; for S4, column 2 is the category. Published sizes (AVSBench paper, not checked here): S4 4932 videos
(3452 / 740 / 740, 23 categories), MS3 424 (296 / 64 / 64).

Relative media layout (under `s4_data/` or `ms3_data/`), exposed by `AVSRecord.frame_paths` / `mask_paths`:
* S4 frames `visual_frames/<split>/<category>/<name>/<name>_<k>.png`, masks `gt_masks/<split>/<category>/<name>/
  <name>_<k>.png`; train has 1 mask (frame 1), val/test 5.
* MS3 frames `visual_frames/<name>/<name>.mp4_<k>.png` (no split folder), masks `gt_masks/<split>/<name>/<name>_<k>.png`,
  5 masks in every split.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Optional

from caeav.errors import DataError

from ._io import PathLike, read_text

AVS_SUBSETS = ("s4", "ms3")
AVS_SPLITS = ("train", "val", "test")
AVS_NUM_FRAMES = 5


@dataclass(frozen=True)
class AVSRecord:
    """One AVSBench video (5 frames of a 5-s clip)."""

    name: str  # column 0
    split: str  # "train" / "val" / "test"
    subset: str  # "s4" or "ms3"
    category: Optional[str] = None  # column 2 for S4; None for MS3
    fields: dict = field(default_factory=dict, compare=False)  # the whole CSV row, by header name

    @property
    def num_masks(self) -> int:
        """Ground-truth masks per video: S4 train has only frame 1 annotated, everything else has 5."""
        return 1 if (self.subset == "s4" and self.split == "train") else AVS_NUM_FRAMES

    def frame_paths(self) -> tuple[PurePosixPath, ...]:
        """The 5 frame images, relative to the subset's data folder (`s4_data/` or `ms3_data/`)."""
        if self.subset == "s4":
            folder = PurePosixPath("visual_frames", self.split, self.category, self.name)
            return tuple(folder / f"{self.name}_{k}.png" for k in range(1, AVS_NUM_FRAMES + 1))
        folder = PurePosixPath("visual_frames", self.name)
        return tuple(folder / f"{self.name}.mp4_{k}.png" for k in range(1, AVS_NUM_FRAMES + 1))

    def mask_paths(self) -> tuple[PurePosixPath, ...]:
        """The ground-truth masks (1 or 5), relative to the subset's data folder."""
        if self.subset == "s4":
            parts = ("gt_masks", self.split, self.category, self.name)
        else:
            parts = ("gt_masks", self.split, self.name)
        return tuple(PurePosixPath(*parts) / f"{self.name}_{k}.png" for k in range(1, self.num_masks + 1))


def load_avsbench_meta(csv_path: PathLike, subset: str, split: Optional[str] = None) -> list[AVSRecord]:
    """Records of `s4_meta_data.csv` / `ms3_meta_data.csv` in file order, all splits or only `split`."""
    if subset not in AVS_SUBSETS:
        raise DataError(f"unknown AVSBench subset {subset!r}; known: s4, ms3")
    if split is not None and split not in AVS_SPLITS:
        raise DataError(f"unknown AVSBench split {split!r}; known: train, val, test")
    path = Path(csv_path)
    rows = list(csv.reader(io.StringIO(read_text(path))))
    rows = [(n, r) for n, r in enumerate(rows, start=1) if any(c.strip() for c in r)]
    if not rows:
        raise DataError(f"{path}: empty file")
    header = [h.strip() for h in rows[0][1]]
    if "split" not in header:
        raise DataError(f"{path}: the header has no 'split' column ({','.join(header)})")
    need = 3 if subset == "s4" else 1
    if len(header) < need:
        raise DataError(f"{path}: an S4 meta CSV needs at least 3 columns (name, ..., category), found {len(header)}")
    col = header.index("split")
    records = []
    for n, row in rows[1:]:
        if len(row) != len(header):
            raise DataError(f"{path}: line {n}: expected {len(header)} comma-separated fields, got {len(row)}")
        row = [c.strip() for c in row]
        if row[col] not in AVS_SPLITS:
            raise DataError(f"{path}: line {n}: split {row[col]!r} is not train, val or test")
        if not row[0] or (subset == "s4" and not row[2]):
            raise DataError(f"{path}: line {n}: empty video name or category")
        if split is None or row[col] == split:
            category = row[2] if subset == "s4" else None
            records.append(AVSRecord(row[0], row[col], subset, category, dict(zip(header, row))))
    return records
