"""Map-style datasets for the four benchmarks (torch-free: items are dicts of numpy arrays, strings and numbers).

They need no torch: `torch.utils.data.DataLoader(AVEDataset(...), batch_size=2)` collates the numpy arrays into
tensors. Every item holds

    clip_id       the media key (AVE VideoID, LLP filename, AVQA video_id, AVSBench name)
    frames        float32 [T, 3, S, S], ImageNet-normalised (decisions D6)
    audio         float32 [T, 32000], mono 32 kHz, one row per 1-s segment
    has_audio     False when the video had no audio track (silence was used)
    padded_seconds  how much of the T-second window was padding

plus the task's labels (see each class; LLP also its R(2+1)D-18 features `st` when asked for). Media come from
`root` in either form (see `caeav.data.layout`), through an optional decoded-tensor cache (`cache_dir`). `captions`
is a hook for the caption features (another part of caeav fills it): a callable taking the clip id and returning a
dict of arrays merged into the item.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from caeav.errors import DataError

from caeav.media.st_frames import STSampling

from .clips import ClipLoader, STFeatures
from .layout import AVSLayout, layout_for

DEFAULT_SIZE = {"ave": 192, "avvp": 192, "avqa": 192, "avs_s4": 224, "avs_ms3": 224}


class ClipDataset:
    """Records of one split of one task, with their media. `skip_missing` drops records without usable media."""

    task = ""

    def __init__(self, root, split: str = "train", size: Optional[int] = None, media: str = "auto", cache_dir=None,
                 annotations=None, captions: Optional[Callable[[str], dict]] = None, strict: bool = False,
                 skip_missing: bool = False):
        self.layout = layout_for(self.task, root, annotations)
        self.split = split
        self.loader = ClipLoader(self.layout, size or DEFAULT_SIZE[self.task], media, cache_dir, strict)
        records = self.layout.records(split)
        if skip_missing:
            records = [r for r in records if self.missing_reason(r) is None]
        self.records = records
        self.captions = captions

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        record = self.records[index]
        frames, audio, clip = self.loader.load_inputs(record)
        clip_id = self.clip_id(record)
        item = {"clip_id": clip_id, "frames": frames, "audio": audio, "has_audio": bool(clip.has_audio),
                "padded_seconds": float(clip.padded_seconds)}
        item.update(self.labels(index, record))
        if self.captions is not None:
            extra = self.captions(clip_id)
            item.update(extra if isinstance(extra, dict) else {"captions": extra})
        return item

    def clip_id(self, record) -> str:
        return self.layout.media_key(record)

    def missing_reason(self, record) -> Optional[str]:
        """None when the record has everything an item needs, else what is missing."""
        return self.loader.missing_reason(record)

    def labels(self, index: int, record) -> dict:
        raise NotImplementedError


class AVEDataset(ClipDataset):
    """AVE: `labels` [10, 29] one-hot per segment (28 = background), `video_label` [29], `index` (row of
    Annotations.txt). Frames picked with int(linspace(1, N, 10))."""

    task = "ave"

    def labels(self, index: int, record) -> dict:
        return {"labels": record.segment_onehot(self.layout.segments), "video_label": record.video_onehot(),
                "index": record.index}


class LLPDataset(ClipDataset):
    """LLP (AVVP): `labels` [25] weak multi-hot; on val/test also `gt_audio` and `gt_visual` [25, 10] (the
    evaluation matrices, all zero for clips the eval CSVs do not name). `clip_id` is the LLP filename.

    `st_dim` > 0 adds `st` float32 [10, st_dim], the R(2+1)D-18 clip features the MGN head fuses
    (`caeav.data.clips.STFeatures`): `feats/r2plus1d_18/<id>.npy` when present, else computed from the video by
    `st_encoder` (frames sampled by `st_sampling`, default LLP's) and cached in `cache_dir`."""

    task = "avvp"

    def __init__(self, root, split: str = "train", st_dim: int = 0, st_encoder=None,
                 st_sampling: Optional[STSampling] = None, **kwargs):
        self._st_args = (int(st_dim), st_encoder, st_sampling or STSampling())
        self._st: Optional[STFeatures] = None
        super().__init__(root, split, **kwargs)
        self.gt = None
        if split in ("val", "test"):
            from .annotations import llp_ground_truth, load_llp_events

            base = self.layout.annotation_root("AVVP_eval_audio.csv")
            self.gt = (llp_ground_truth(self.records, load_llp_events("audio", base), self.layout.segments),
                       llp_ground_truth(self.records, load_llp_events("visual", base), self.layout.segments))

    @property
    def st(self) -> Optional[STFeatures]:
        """The R(2+1)D feature source (None when `st_dim` is 0)."""
        dim, encoder, sampling = self._st_args
        if self._st is None and dim > 0:
            self._st = STFeatures(self.layout, dim, sampling, encoder, self.loader.cache)
        return self._st

    def clip_id(self, record) -> str:
        return record.filename

    def missing_reason(self, record) -> Optional[str]:
        reason = super().missing_reason(record)
        if reason is None and self.st is not None:
            reason = self.st.missing_reason(record)
        return reason

    def labels(self, index: int, record) -> dict:
        out = {"labels": record.weak_label()}
        if self.gt is not None:
            out["gt_audio"], out["gt_visual"] = self.gt[0][index], self.gt[1][index]
        if self.st is not None:
            out["st"] = self.st.load(record)
        return out


class AVQADataset(ClipDataset):
    """MUSIC-AVQA, one item per question: `question` [14] int64 token ids, `answer` (index in ans_vocab.txt),
    `question_id`, `modality` and `kind` (the question type). Media are shared by the questions of a video."""

    task = "avqa"

    def __init__(self, root, split: str = "train", **kwargs):
        super().__init__(root, split, **kwargs)
        from .annotations import load_avqa_vocab

        self.vocab = load_avqa_vocab(self.layout.annotation_root("ques_vocab.txt"))

    def labels(self, index: int, record) -> dict:
        return {"question": self.vocab.encode_question(record), "answer": self.vocab.answer_index(record.answer),
                "question_id": record.question_id, "modality": record.modality, "kind": record.kind}


class AVSDataset(ClipDataset):
    """AVSBench: `masks` float32 [K, H, W] 0/1 (K = 1 for S4 train, else 5; H = W = 224 as released) and
    `category` (S4; "" for MS3). Frames: 5 at 224 px by default."""

    task = "avs_s4"

    def labels(self, index: int, record) -> dict:
        assert isinstance(self.layout, AVSLayout)
        return {"masks": np.stack([load_mask(p) for p in self.layout.mask_files(record)]),
                "category": record.category or ""}


class AVSMS3Dataset(AVSDataset):
    task = "avs_ms3"


def load_mask(path) -> np.ndarray:
    """A ground-truth mask image as float32 [H, W] 0/1: S4 masks are mode '1', MS3 masks palette ('P') indices."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            arr = np.asarray(image if image.mode in ("1", "P", "L") else image.convert("L"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot be read as a mask image ({exc})") from None
    return (arr > 0).astype(np.float32)


DATASETS = {"ave": AVEDataset, "avvp": LLPDataset, "avqa": AVQADataset, "avs_s4": AVSDataset,
            "avs_ms3": AVSMS3Dataset}


def build_dataset(task: str, root, split: str = "train", **kwargs) -> ClipDataset:
    """The dataset of `task` (aliases accepted: avs, s4, ms3, llp); keyword arguments as `ClipDataset`."""
    from .layout import canonical

    return DATASETS[canonical(task)](root, split, **kwargs)
