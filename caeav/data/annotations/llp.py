"""LLP (AVVP) annotations: weak video labels and per-second audio / visual evaluation labels (metrics-and-data.md §1.2).

All files are tab-separated with a header row. Weak labels: `AVVP_train.csv` (10000), `AVVP_val_pd.csv` (649),
`AVVP_test_pd.csv` (1200), columns `filename`, `event_labels` (comma-joined class names); `AVVP_dataset_full.csv` is
their union. Evaluation labels: `AVVP_eval_audio.csv` / `AVVP_eval_visual.csv`, columns `filename`, `onset`, `offset`,
`event_labels` (one class per row, whole seconds).

Ground truth [25, 10] per clip and modality is built as the official evaluation does (`CAE-AV/AVVP/main.py:157-189`):
rows whose filename equals the clip name *exactly* set cells [class, onset:offset] (half-open, Python slicing) to 1.
The quirks of the eval files are therefore kept, not repaired:
* mangled names (`KvIjsmANkxI_10_20\\``, `19jWnmYnlD8_30_400`, a row named `Baby_cry_infant_cry`, ...) match no clip;
  their rows are ignored and some clips get an all-zero ground truth;
* rows with offset <= onset (zero-length, one reversed 9 -> 0) add nothing;
* several rows of one class in one clip are separate events (their cells are OR-ed);
* rows naming a class outside the clip's weak label are kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import numpy as np

from caeav.errors import DataError

from ._io import PathLike, parse_int, read_table, resolve_root

LLP_CLASSES: tuple[str, ...] = (
    "Speech", "Car", "Cheering", "Dog", "Cat", "Frying_(food)", "Basketball_bounce", "Fire_alarm", "Chainsaw", "Cello",
    "Banjo", "Singing", "Chicken_rooster", "Violin_fiddle", "Vacuum_cleaner", "Baby_laughter", "Accordion", "Lawn_mower",
    "Motorcycle", "Helicopter", "Acoustic_guitar", "Telephone_bell_ringing", "Baby_cry_infant_cry", "Blender", "Clapping",
)  # fixed order of `main.py:100-105` / `dataloader.py:23-28`
LLP_CLASS_INDEX = {name: i for i, name in enumerate(LLP_CLASSES)}
LLP_NUM_SEGMENTS = 10
LLP_SPLIT_FILES = {
    "train": "AVVP_train.csv", "val": "AVVP_val_pd.csv", "test": "AVVP_test_pd.csv", "full": "AVVP_dataset_full.csv"
}
LLP_EVAL_FILES = {"audio": "AVVP_eval_audio.csv", "visual": "AVVP_eval_visual.csv"}


@dataclass(frozen=True)
class LLPClip:
    """One 10-s clip with its weak (video-level) labels."""

    filename: str  # "<11-char YouTube id>_<start>_<end>": the key of the eval rows
    labels: tuple[str, ...]  # weak labels in file order
    split: str  # "train" / "val" / "test" (or "full" when read from AVVP_dataset_full.csv)

    @property
    def video_id(self) -> str:
        """`filename[:11]`, the YouTube id that keys the media (frames/<id>/, wave/<id>.npy, st features)."""
        return self.filename[:11]

    def weak_label(self) -> np.ndarray:
        """[25] float32 multi-hot of the weak labels (the training target)."""
        out = np.zeros(len(LLP_CLASSES), np.float32)
        out[[LLP_CLASS_INDEX[c] for c in self.labels]] = 1.0
        return out


@dataclass(frozen=True)
class LLPEvent:
    """One row of an eval CSV: an event of one class in one modality, over segments [onset, offset)."""

    filename: str  # as written in the file, possibly mangled
    onset: int
    offset: int
    label: str
    modality: str  # "audio" or "visual"
    line: int  # 1-based line in the CSV (the header is line 1)

    @property
    def class_index(self) -> int:
        return LLP_CLASS_INDEX[self.label]


def _labels(text: str, path: Path, line: int) -> tuple[str, ...]:
    labels = tuple(t.strip() for t in text.split(","))
    for name in labels:
        if name not in LLP_CLASS_INDEX:
            raise DataError(f"{path}: line {line}: unknown LLP class {name!r}")
    return labels


def load_llp_weak_labels(path: PathLike, split: str) -> list[LLPClip]:
    """Parse one weak-label CSV (`filename<TAB>event_labels`) into clips tagged with `split`."""
    path = Path(path)
    clips = []
    for n, (name, labels) in read_table(path, "\t", ("filename", "event_labels")):
        if not name.strip():
            raise DataError(f"{path}: line {n}: empty filename")
        clips.append(LLPClip(name.strip(), _labels(labels, path, n), split))
    return clips


def load_llp_clips(split: str, root: Optional[PathLike] = None) -> list[LLPClip]:
    """The clips of `split` ("train", "val", "test" or "full") in file order (= the official loader order)."""
    if split not in LLP_SPLIT_FILES:
        raise DataError(f"unknown LLP split {split!r}; known: {', '.join(LLP_SPLIT_FILES)}")
    return load_llp_weak_labels(resolve_root(root, "avvp") / LLP_SPLIT_FILES[split], split)


def load_llp_events(modality: str, root: Optional[PathLike] = None) -> list[LLPEvent]:
    """Every row of `AVVP_eval_<modality>.csv` in file order, unfiltered (mangled names included)."""
    if modality not in LLP_EVAL_FILES:
        raise DataError(f"unknown LLP modality {modality!r}; known: audio, visual")
    path = resolve_root(root, "avvp") / LLP_EVAL_FILES[modality]
    events = []
    for n, (name, onset, offset, label) in read_table(path, "\t", ("filename", "onset", "offset", "event_labels")):
        if "," in label:
            raise DataError(f"{path}: line {n}: expected one class per row, got {label!r}")
        (cls,) = _labels(label, path, n)
        start, stop = parse_int(onset, path, n, "onset"), parse_int(offset, path, n, "offset")
        events.append(LLPEvent(name.strip(), start, stop, cls, modality, n))
    return events


def llp_ground_truth(
    clips: Sequence[Union[LLPClip, str]], events: Iterable[LLPEvent], num_segments: int = LLP_NUM_SEGMENTS
) -> np.ndarray:
    """[N, 25, T] float32 ground truth of `clips` (records or filenames) from eval rows, matched by exact filename.

    Each matching row sets [class, onset:offset] to 1 with Python slice semantics, so rows with offset <= onset set
    nothing; clips without matching rows stay all zero.
    """
    names = [c.filename if isinstance(c, LLPClip) else str(c) for c in clips]
    by_name: dict[str, list[LLPEvent]] = {}
    for e in events:
        by_name.setdefault(e.filename, []).append(e)
    gt = np.zeros((len(names), len(LLP_CLASSES), num_segments), np.float32)
    for i, name in enumerate(names):
        for e in by_name.get(name, ()):
            gt[i, e.class_index, e.onset : e.offset] = 1.0
    return gt


def unmatched_event_names(events: Iterable[LLPEvent], clips: Iterable[Union[LLPClip, str]]) -> list[str]:
    """Sorted eval-row filenames that equal no clip name: the rows the official evaluation silently ignores."""
    names = {c.filename if isinstance(c, LLPClip) else str(c) for c in clips}
    return sorted({e.filename for e in events} - names)


def load_llp_eval(split: str, root: Optional[PathLike] = None) -> tuple[list[LLPClip], np.ndarray, np.ndarray]:
    """(clips, GT_audio [N, 25, 10], GT_visual [N, 25, 10]) for "val" or "test", in the official evaluation order."""
    if split not in ("val", "test"):
        raise DataError(f"LLP evaluation labels exist for the val and test splits, not {split!r}")
    clips = load_llp_clips(split, root)
    gt_audio = llp_ground_truth(clips, load_llp_events("audio", root))
    gt_visual = llp_ground_truth(clips, load_llp_events("visual", root))
    return clips, gt_audio, gt_visual
