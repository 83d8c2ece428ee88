"""Training-time augmentations that are caeav's additions to the paper's recipe (both off by default).

    augment = Augmenter(cfg, empty_caption)          # ConfigError first if the task cannot take them
    batch = augment(batch, epoch, step)              # a new dict; the collated batch is not modified

* `task.train.caption_dropout = P` (issue 13): per clip and modality, with probability P the caption features are
  replaced by the empty-caption features, the regime a clip meets at the edge when nobody captioned it. The paper
  trains with captions always (P = 0).
* `task.train.av_shuffle = P` (issue 14; the audio-visual shuffling that Xu et al., entropy-aware gated fusion for
  visually guided audio captioning, found to help most against mismatch): per clip, with probability P its audio
  is replaced by another clip's audio of the same batch (the chosen clips trade audio along a cycle, so none keeps
  its own; a lone chosen clip trades with a random other clip, which is then swapped too). What the target becomes
  for a swapped clip is the task's (`SHUFFLE_TARGETS`):
  - AVE: every segment background. An AVE event is audio-visual (heard *and* seen); with another clip's audio
    nothing in this clip is both. The clip has no event class, so it does not enter CMBS's event/av_score terms.
  - AVVP: audio labels follow the audio (the donor clip's weak labels), visual labels the video (its own), the
    video-level label is their union. LLP's weak labels do not say which modality an event is in, so the donor's
    visual-only events are counted as audio too: an approximation the weak labels force.
  - AVS and AVQA: refused in one line. A mask of "the sounding object" and an answer about what is heard are
    undefined when the sound belongs to another video.

Random draws come from a generator seeded by (train.seed, epoch, step), so a resumed run draws the same.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import torch
from torch import Tensor

from caeav.config import ConfigError, ModelConfig


def _generator(seed: int, epoch: int, step: int, salt: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(int(np.random.SeedSequence([seed, epoch, step, salt]).generate_state(1)[0]))
    return g


def shuffle_partners(chosen: Tensor, g: torch.Generator) -> Tensor:
    """donor[i]: the clip whose audio clip i gets (itself when not swapped). The chosen clips (bool `[B]`) trade
    along one cycle; a single chosen clip trades with a random other one."""
    B = chosen.numel()
    donor = torch.arange(B)
    idx = torch.nonzero(chosen).flatten()
    if B < 2 or idx.numel() == 0:
        return donor
    if idx.numel() == 1:
        others = torch.tensor([j for j in range(B) if j != int(idx[0])])
        other = others[torch.randint(len(others), (1,), generator=g)]
        idx = torch.cat([idx, other])
    order = idx[torch.randperm(idx.numel(), generator=g)]
    donor[order] = order.roll(1)
    return donor


def ave_targets(batch: dict, donor: Tensor, swapped: Tensor) -> dict:
    """AVE: a swapped clip's segments are all background (the last class)."""
    labels = batch["labels"].clone()
    background = torch.zeros_like(labels[0])
    background[..., -1] = 1
    labels[swapped] = background
    return {"labels": labels}


def avvp_targets(batch: dict, donor: Tensor, swapped: Tensor) -> dict:
    """AVVP: audio labels from the donor's weak labels, visual labels the clip's own, video label the union."""
    labels = batch["labels"]
    audio = labels[donor.to(labels.device)]
    return {"labels_audio": audio, "labels_visual": labels, "labels": torch.maximum(audio, labels)}


SHUFFLE_TARGETS: dict[str, Callable[[dict, Tensor, Tensor], dict]] = {"ave": ave_targets, "avvp": avvp_targets}
REFUSED = {"avs_s4": "AVS", "avs_ms3": "AVS", "avqa": "AVQA"}


def check_options(cfg: ModelConfig) -> None:
    """One-line ConfigError for augmentation options this model or task cannot take (before any data is read)."""
    train = cfg.task.train
    for key in ("caption_dropout", "av_shuffle"):
        p = getattr(train, key)
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"task.train.{key}: a probability in [0, 1], got {p}")
    if train.av_shuffle > 0 and cfg.task.name not in SHUFFLE_TARGETS:
        raise ConfigError(f"task.train.av_shuffle is defined for AVE and AVVP only: an {REFUSED[cfg.task.name]} "
                          "target is undefined when the audio belongs to another video")
    if train.caption_dropout > 0 and not cfg.uses_captions:
        raise ConfigError("task.train.caption_dropout: the AVMoE baseline (variant=avmoe) reads no captions")


class Augmenter:
    """Applies `caption_dropout` and `av_shuffle` of `cfg.task.train` to training batches (module docstring)."""

    def __init__(self, cfg: ModelConfig, empty_caption: Optional[np.ndarray] = None):
        check_options(cfg)
        train = cfg.task.train
        self.task, self.seed = cfg.task.name, int(train.seed)
        self.p_caption, self.p_shuffle = float(train.caption_dropout), float(train.av_shuffle)
        if self.p_caption > 0 and empty_caption is None:
            raise ConfigError("task.train.caption_dropout needs the empty-caption features")
        self.empty = None if empty_caption is None else torch.from_numpy(np.asarray(empty_caption, np.float32))

    @property
    def active(self) -> bool:
        return self.p_caption > 0 or self.p_shuffle > 0

    def __call__(self, batch: dict, epoch: int, step: int) -> dict:
        if not self.active:
            return batch
        batch = dict(batch)
        B = len(batch["frames"])
        if self.p_caption > 0:
            g = _generator(self.seed, epoch, step, 1)
            for key in ("caption_visual", "caption_audio"):
                drop = torch.rand(B, generator=g) < self.p_caption
                if drop.any():
                    feats = batch[key].clone()
                    feats[drop.to(feats.device)] = self.empty.to(feats.device, feats.dtype)
                    batch[key] = feats
        if self.p_shuffle > 0:
            g = _generator(self.seed, epoch, step, 2)
            donor = shuffle_partners(torch.rand(B, generator=g) < self.p_shuffle, g)
            swapped = donor != torch.arange(B)
            if swapped.any():
                dev = batch["audio"].device
                batch["audio"] = batch["audio"][donor.to(dev)]
                batch.update(SHUFFLE_TARGETS[self.task](batch, donor, swapped.to(dev)))
        return batch
