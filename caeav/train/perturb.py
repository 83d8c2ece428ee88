"""Audio-visual misalignment applied to decoded inputs, for `caeav eval --perturb` (issue 14).

    spec = parse_perturbations("swap-audio,offset:2,mute-audio,blank-frames,noise-audio:10,drop-captions")
    dataset = PerturbedDataset(clean_dataset, spec[0], seed=0, empty_caption=features)

Every perturbation changes one item's inputs and nothing else: the targets (labels, masks, answers) stay those of
the clean clip, so the metric says how much the model is misled. All of them are deterministic for a seed.

* `swap-audio`: another clip's audio, by a fixed derangement of the split's clips (a random cyclic permutation,
  Sattolo's algorithm, seeded), so no clip keeps its own audio; AVQA's questions of one video all get the same other
  video's audio.
* `offset:K`: its own audio shifted by K seconds (K·32000 samples at 32 kHz), **circularly**: what leaves the end
  comes back at the start, so loudness and length are unchanged and only the alignment moves; K may be negative or
  fractional (rounded to a sample).
* `mute-audio`: silence (zeros).
* `blank-frames`: every frame replaced by the dataset mean, i.e. the ImageNet mean the frames are normalised with:
  zeros after normalisation. AVVP's R(2+1)D features (`st`) are left as they are (LLP's precomputed features cannot
  be recomputed from blanked frames).
* `noise-audio:SNR`: its own audio plus white Gaussian noise at SNR dB relative to the clip's mean power (a silent
  clip stays silent); the noise is seeded per clip.
* `drop-captions`: the empty-caption features for both modalities (what a clip without captions gets).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from caeav.errors import CaeavError

NAMES = ("swap-audio", "offset", "mute-audio", "blank-frames", "noise-audio", "drop-captions")
WITH_VALUE = {"offset": "seconds", "noise-audio": "SNR in dB"}


@dataclass(frozen=True)
class Perturbation:
    name: str  # one of NAMES
    value: Optional[float] = None  # offset seconds, noise SNR (dB)

    @property
    def label(self) -> str:
        if self.value is None:
            return self.name
        return f"{self.name}:{self.value:g}"


def parse_perturbations(text: str) -> list[Perturbation]:
    """"swap-audio,offset:2,..." -> Perturbations, in order; one-line CaeavError for an unknown name or value."""
    out = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, _, value = part.partition(":")
        if name not in NAMES:
            raise CaeavError(f"--perturb: unknown perturbation {part!r}; choose from swap-audio, offset:K, mute-audio, "
                             "blank-frames, noise-audio:SNR, drop-captions")
        if name in WITH_VALUE:
            try:
                number = float(value)
            except ValueError:
                raise CaeavError(f"--perturb: {name} needs a number ({WITH_VALUE[name]}), e.g. {name}:2; got "
                                 f"{part!r}") from None
            if not math.isfinite(number):
                raise CaeavError(f"--perturb: {part!r} is not a finite number")
            out.append(Perturbation(name, number))
        elif value:
            raise CaeavError(f"--perturb: {name} takes no value, got {part!r}")
        else:
            out.append(Perturbation(name))
    if not out:
        raise CaeavError("--perturb: no perturbation given")
    if len({p.label for p in out}) != len(out):
        raise CaeavError(f"--perturb: a perturbation is listed twice in {text!r}")
    return out


def derangement(n: int, seed: int) -> np.ndarray:
    """A permutation p of range(n) with p[i] != i for every i (n >= 2): a random n-cycle (Sattolo's algorithm)."""
    if n < 2:
        raise CaeavError("swap-audio needs at least 2 clips in the split")
    rng = np.random.default_rng(seed)
    p = np.arange(n)
    for i in range(n - 1, 0, -1):
        j = int(rng.integers(0, i))  # j < i: never the element itself, so the result is one cycle
        p[i], p[j] = p[j], p[i]
    return p


def shift_audio(audio: np.ndarray, seconds: float, sample_rate: int) -> np.ndarray:
    """`[T, S]` segments of one clip shifted by `seconds` circularly along the whole clip (positive: later)."""
    flat = audio.reshape(-1)
    return np.roll(flat, int(round(seconds * sample_rate))).reshape(audio.shape).astype(audio.dtype, copy=False)


def add_noise(audio: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """`audio` + white Gaussian noise whose power is the clip's mean power / 10^(SNR/10)."""
    power = float(np.mean(np.square(audio, dtype=np.float64)))
    sigma = math.sqrt(power / 10 ** (snr_db / 10))
    return (audio + sigma * rng.standard_normal(audio.shape)).astype(audio.dtype)


class PerturbedDataset:
    """`dataset` with `perturbation` applied to each item's inputs (module table); same length, same order."""

    def __init__(self, dataset, perturbation: Perturbation, seed: int = 0, sample_rate: int = 32000,
                 empty_caption: Optional[np.ndarray] = None):
        self.dataset, self.p, self.seed, self.rate = dataset, perturbation, int(seed), int(sample_rate)
        self.empty_caption = empty_caption
        if perturbation.name == "drop-captions" and empty_caption is None:
            raise CaeavError("drop-captions needs the empty-caption features")
        self.donor = self._donors() if perturbation.name == "swap-audio" else None

    def __len__(self) -> int:
        return len(self.dataset)

    def _clip_ids(self) -> list[str]:
        records = getattr(self.dataset, "records", None)
        if records is not None and hasattr(self.dataset, "clip_id"):
            return [self.dataset.clip_id(r) for r in records]
        return [str(i) for i in range(len(self.dataset))]

    def _donors(self) -> list[int]:
        """Item index whose audio item i gets: the first item of the clip the derangement maps i's clip to."""
        ids = self._clip_ids()
        clips = list(dict.fromkeys(ids))
        first = {c: ids.index(c) for c in clips}
        perm = derangement(len(clips), self.seed)
        target = {c: clips[perm[k]] for k, c in enumerate(clips)}
        return [first[target[c]] for c in ids]

    def __getitem__(self, index: int) -> dict:
        item = dict(self.dataset[index])
        name = self.p.name
        if name == "swap-audio":
            donor = self.dataset[self.donor[index]]
            item["audio"], item["has_audio"] = donor["audio"], donor.get("has_audio", True)
        elif name == "offset":
            item["audio"] = shift_audio(item["audio"], self.p.value, self.rate)
        elif name == "mute-audio":
            item["audio"] = np.zeros_like(item["audio"])
        elif name == "noise-audio":
            rng = np.random.default_rng([self.seed, index])
            item["audio"] = add_noise(item["audio"], self.p.value, rng)
        elif name == "blank-frames":
            item["frames"] = np.zeros_like(item["frames"])
        elif name == "drop-captions":
            empty = self.empty_caption.astype(np.float32)
            item["caption_visual"], item["caption_audio"] = empty, empty
            item["caption_fallback"] = np.array([True, True])
        return item
