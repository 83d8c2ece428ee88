"""From dataset items (numpy, torch-free) to model inputs and loss targets (torch).

    datasets = build_split(cfg, "train", root, captions)      # a caeav.data dataset with caption features attached
    loader = DataLoader(dataset, batch_size=2, sampler=..., collate_fn=collate)
    batch = to_device(next(iter(loader)), device)
    inputs = model_inputs(batch, cfg, training=True)           # frames, wave, vis_caption, aud_caption (+ task extras)

Captions: with a caption cache (`caeav captions encode`) every item gets its clip's CLIP features; without one, every
item gets the features of the empty caption "" from the model's own text tower, exactly what the cache reader hands
to a clip without a caption (`caeav.captions.encode.build_encoder`: the `tiny` tower is seeded, so training, export
and the runtime see the same features).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import Tensor

from caeav.config import ModelConfig
from caeav.errors import CaptionError, DataError
from caeav.model.st_stream import stream_dim


class ConstantCaptions:
    """The datasets' `captions=` hook giving every clip the same features (the empty caption's)."""

    def __init__(self, visual: np.ndarray, audio: np.ndarray):
        self.visual, self.audio = visual.astype(np.float32), audio.astype(np.float32)

    def __call__(self, clip_id: str) -> dict:
        return {"caption_visual": self.visual, "caption_audio": self.audio,
                "caption_fallback": np.array([True, True])}


def empty_caption_hook(cfg: ModelConfig) -> ConstantCaptions:
    """Features of "" from the config's text tower (needs `caption.weights` for the open_clip tower)."""
    from caeav.captions.encode import build_encoder, encode_texts_f16

    if cfg.caption.tower == "open_clip" and not cfg.caption.weights:
        raise CaptionError("no --captions cache given and no caption.weights for the CLIP text tower: pass a caption "
                           "cache (caeav captions encode) or caption.weights=PATH to use empty-caption features")
    tower, _ = build_encoder(cfg.caption)
    feats = encode_texts_f16(tower, [""])[0]
    return ConstantCaptions(feats, feats)


def caption_hook(cfg: ModelConfig, cache: Optional[str]):
    """A caption cache reader, or the empty-caption features when `cache` is None; checks the feature width. The
    AVMoE baseline reads no captions: its items get zeros (no tower, no cache needed)."""
    if not cfg.uses_captions:
        zeros = np.zeros((cfg.caption.context_length, cfg.caption.text_dim), np.float32)
        return ConstantCaptions(zeros, zeros)
    if cache is None:
        return empty_caption_hook(cfg)
    from caeav.captions.reader import CaptionFeatureReader

    reader = CaptionFeatureReader(cache)
    dim = reader.lookup("").visual.shape
    if tuple(dim) != (cfg.caption.context_length, cfg.caption.text_dim):
        raise CaptionError(f"{cache}: caption features are {list(dim)}, the model expects "
                           f"[{cfg.caption.context_length}, {cfg.caption.text_dim}] (encoder {reader.encoder})")
    return reader


def empty_features(hook) -> np.ndarray:
    """`[L, D]` float32: what caption `hook` gives a clip it does not know, i.e. the empty caption's features (from the
    cache's own encoder, or the tower's without a cache; zeros for the AVMoE baseline)."""
    return hook("\0no-such-clip")["caption_visual"]


def caption_coverage_note(hook, dataset) -> Optional[str]:
    """One line: how many of `dataset`'s clips the caption cache knows (None without a cache). A cache keyed by other
    ids (AVE: the video id, LLP: the file name `<id>_<start>_<end>`) would otherwise train on empty captions silently."""
    resolve = getattr(hook, "resolve", None)
    if resolve is None or not hasattr(dataset, "records"):
        return None
    ids = list(dict.fromkeys(dataset.clip_id(r) for r in dataset.records))
    known = sum(resolve(i) is not None for i in ids)
    note = f"captions: {known} of {len(ids)} {dataset.split} clips are in the cache"
    if known < len(ids):
        example = next(i for i in ids if resolve(i) is None)
        note += f"; the others get the empty-caption features (e.g. clip id {example!r})"
    return note


def st_options(cfg: ModelConfig) -> dict:
    """AVVP's R(2+1)D feature options of the dataset (`caeav.data.datasets.LLPDataset`) when the head fuses them:
    `st_dim`, the LLP frame sampling of `cfg.st` and the frozen stream as the `st_encoder` hook (built on first use,
    so a dataset with every `feats/r2plus1d_18/<id>.npy` never builds it). {} otherwise."""
    from caeav.model.st_stream import STFeatureEncoder

    st_dim = stream_dim(cfg)
    if st_dim <= 0:
        return {}
    from caeav.media.st_frames import STSampling

    return {"st_dim": st_dim, "st_encoder": STFeatureEncoder(cfg.st), "st_sampling": STSampling.from_config(cfg.st)}


def st_source_note(dataset, cache_dir=None) -> Optional[str]:
    """Where AVVP's R(2+1)D features of `dataset` come from (one line), or None for a dataset without them."""
    st = getattr(dataset, "st", None)
    if st is None:
        return None
    forms = [st.form(r) for r in dataset.records]
    npy, video = forms.count("npy"), forms.count("video")
    parts = [f"{npy} from feats/r2plus1d_18/"] if npy else []
    if video:
        where = f", cached in {cache_dir}" if cache_dir else " (pass --media-cache DIR to keep them)"
        parts.append(f"{video} computed once from the videos by the R(2+1)D-18 stream{where}")
    return f"R(2+1)D features of the {len(forms)} {dataset.split} clips: " + ", ".join(parts)


def build_split(cfg: ModelConfig, split: str, root, captions, cache_dir=None):
    """The dataset of `cfg.task` for `split`, frames at `cfg.task.input_size`, with the caption hook attached (and
    AVVP's R(2+1)D features, `st_options`)."""
    from caeav.data.datasets import build_dataset

    dataset = build_dataset(cfg.task.name, root, split, size=cfg.task.input_size, cache_dir=cache_dir,
                            captions=captions, **st_options(cfg))
    if len(dataset) == 0:
        raise DataError(f"{root}: the {split} split of {cfg.task.name} is empty")
    return dataset


def collate(items: list[dict]) -> dict:
    """Stack the numpy arrays and numbers of `items` into tensors; strings stay lists."""
    out = {}
    for key in items[0]:
        values = [item[key] for item in items]
        first = values[0]
        if isinstance(first, np.ndarray):
            out[key] = torch.from_numpy(np.stack(values))
        elif isinstance(first, (bool, np.bool_)):
            out[key] = torch.tensor(values, dtype=torch.bool)
        elif isinstance(first, (int, np.integer)):
            out[key] = torch.tensor(values, dtype=torch.int64)
        elif isinstance(first, (float, np.floating)):
            out[key] = torch.tensor(values, dtype=torch.float32)
        else:
            out[key] = values
    return out


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()}


def model_inputs(batch: dict, cfg: ModelConfig, training: bool) -> dict:
    """Keyword arguments of `CAEAV.forward` for a collated batch.

    AVQA in training also gets `neg_frames`: the frames of the next clip in the batch (a rolled batch), the other
    video AVST's AV-match loss contrasts with; a batch of one has no negatives and skips the match loss."""
    if "caption_visual" not in batch:
        raise CaptionError("items carry no caption features (build the datasets with a caption hook)")
    inputs = {"frames": batch["frames"], "wave": batch["audio"], "vis_caption": batch["caption_visual"],
              "aud_caption": batch["caption_audio"]}
    task = cfg.task.name
    if stream_dim(cfg) > 0:
        if "st" not in batch:
            raise DataError("the AVVP head fuses R(2+1)D clip features `st` (task.head.st_dim > 0) but the items carry "
                            "none (build the dataset with `st_options(cfg)`)")
        inputs["st"] = batch["st"]
    if task == "avqa":
        inputs["question"] = batch["question"]
        if training and len(batch["frames"]) > 1:
            inputs["neg_frames"] = batch["frames"].roll(1, dims=0)
    return inputs


def loss_targets(batch: dict, cfg: ModelConfig, mask_size: Optional[int] = None) -> dict:
    """What `CAEAV.loss` reads from the batch. AVS masks are resized (nearest) to the predicted mask size."""
    task = cfg.task.name
    if task in ("avs_s4", "avs_ms3"):
        masks = batch["masks"].float()
        if mask_size is not None and masks.shape[-1] != mask_size:
            masks = torch.nn.functional.interpolate(masks, size=(mask_size, mask_size), mode="nearest")
        return {"masks": masks}
    if task == "avqa":
        return {"answer": batch["answer"]}
    # AVVP under av_shuffle (`caeav.train.augment`) also has per-modality weak labels
    return {k: batch[k] for k in ("labels", "labels_audio", "labels_visual") if k in batch}
