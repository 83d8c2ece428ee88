"""AVVP's spatio-temporal stream: a frozen R(2+1)D-18 turning each 1-s segment into one vector (architecture.md §1.2,
§7.2: MGN fuses it as x2_0 = Linear(2d→d)(concat(Linear(f_v), Linear(st)))).

What LLP's `feats/r2plus1d_18/<video_id>.npy` ([10, 512] per clip, used by MGN, AVMoE and CAE-AV) are, read from the
LLP release (YapengTian/AVVP-ECCV20, `scripts/extract_frames.py`, `scripts/extract_3D_feat.py`, `scripts/utils.py`):
frames extracted with ffmpeg at 8 frames/s, 80 of them (round(linspace(0, N−1, 80))) cut into 10 segments of 8
consecutive frames, each frame `Resize((112, 112))` (bilinear, no crop) → /255 → Kinetics mean/std, and torchvision's
`r2plus1d_18` with its Kinetics-400 weights, without its `fc` (`children()[:-1]`: stem, layer1-4, global average
pool) → 512 per segment. The sampling and normalisation are torch-free (`caeav.media.st_frames`); their parameters,
the widths and the weights file are the config's `st` section (`STStreamConfig`).

Architecture (Tran et al., "A Closer Look at Spatiotemporal Convolutions for Action Recognition", CVPR 2018), laid out
as torchvision's `VideoResNet` so its state dict (`r2plus1d_18-91a641e6.pth`) loads key for key:

    stem     Conv(1×7×7, stride 1,2,2) 3→M₀, BN, ReLU, Conv(3×1×1) M₀→C₁, BN, ReLU          (M₀ = `stem_mid`, 45)
    layer s  `depths[s]` BasicBlocks of width C_s (64, 128, 256, 512); the first of layers 2-4 strides 2 in t, h, w
    pool     mean over (t, h, w) → C₄ (`AdaptiveAvgPool3d(1)`)

`BasicBlock`: y = ReLU(BN(C2(ReLU(BN(C1(x))))) + shortcut(x)), shortcut = BN(Conv 1×1×1, stride s) when the shape
changes. C1, C2 are (2+1)D convolutions (`conv2plus1d`). `paper` has torchvision's widths (31.3 M parameters);
`tiny` the same block structure with narrow widths and seeded random weights (`STStreamConfig.seed`), so every
process that builds it (the loaders' feature hook, the model, export) holds the same stream.

Frozen means frozen (decisions D3): no gradients, always in eval mode (BatchNorm running statistics).
"""

from __future__ import annotations

import os
from typing import Optional

import numpy as np
import torch
from torch import Tensor, nn

from caeav.config import ConfigError, STStreamConfig


def stream_dim(cfg) -> int:
    """The width of the R(2+1)D features the task's head fuses (`task.head.st_dim`; AVVP only), 0 = no stream."""
    return int(cfg.task.head.get("st_dim", 0) or 0) if cfg.task.name == "avvp" else 0


def midplanes(c_in: int, c_out: int) -> int:
    """M = ⌊27·C_in·C_out / (9·C_in + 3·C_out)⌋: the (2+1)D width with the parameters of a full 3×3×3 convolution
    (Tran et al. 2018, §3.5; torchvision computes it from the block's input and output widths)."""
    return (c_in * c_out * 27) // (c_in * 9 + 3 * c_out)


def conv2plus1d(c_in: int, c_out: int, mid: int, stride: int = 1) -> nn.Sequential:
    """(2+1)D convolution: Conv(1×3×3, stride 1,s,s) C_in→M, BN, ReLU, Conv(3×1×1, stride s,1,1) M→C_out (no biases;
    keys 0, 1, 3 as torchvision's `Conv2Plus1D`)."""
    return nn.Sequential(
        nn.Conv3d(c_in, mid, (1, 3, 3), stride=(1, stride, stride), padding=(0, 1, 1), bias=False),
        nn.BatchNorm3d(mid),
        nn.ReLU(),
        nn.Conv3d(mid, c_out, (3, 1, 1), stride=(stride, 1, 1), padding=(1, 0, 0), bias=False),
    )


class BasicBlock(nn.Module):
    """ReLU(conv2(conv1(x)) + shortcut(x)); conv1 = [(2+1)D, BN, ReLU], conv2 = [(2+1)D, BN] (module docstring)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        mid = midplanes(c_in, c_out)  # both convolutions of the block use the width computed from (C_in, C_out)
        self.conv1 = nn.Sequential(conv2plus1d(c_in, c_out, mid, stride), nn.BatchNorm3d(c_out), nn.ReLU())
        self.conv2 = nn.Sequential(conv2plus1d(c_out, c_out, mid), nn.BatchNorm3d(c_out))
        self.relu = nn.ReLU()
        self.downsample: Optional[nn.Sequential] = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv3d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm3d(c_out))

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(self.conv2(self.conv1(x)) + shortcut)


class STStream(nn.Module):
    """R(2+1)D-18-family stream: clips `[N, 3, F, S, S]` (normalised, `caeav.media.st_frames`) → `[N, C₄]`."""

    def __init__(self, cfg: STStreamConfig):
        super().__init__()
        channels, depths = tuple(int(c) for c in cfg.channels), tuple(int(d) for d in cfg.depths)
        if len(channels) != 4 or len(depths) != 4 or min(channels + depths) < 1 or cfg.stem_mid < 1:
            raise ConfigError(f"st.channels {list(channels)} and st.depths {list(depths)} must be 4 positive numbers "
                              f"each, st.stem_mid >= 1")
        self.cfg = cfg
        self.dim = channels[-1]
        mid = int(cfg.stem_mid)
        self.stem = nn.Sequential(
            nn.Conv3d(3, mid, (1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False),
            nn.BatchNorm3d(mid),
            nn.ReLU(),
            nn.Conv3d(mid, channels[0], (3, 1, 1), stride=1, padding=(1, 0, 0), bias=False),
            nn.BatchNorm3d(channels[0]),
            nn.ReLU(),
        )
        c_in = channels[0]
        for s, (c_out, depth) in enumerate(zip(channels, depths)):
            stride = 1 if s == 0 else 2
            blocks = [BasicBlock(c_in, c_out, stride)] + [BasicBlock(c_out, c_out) for _ in range(depth - 1)]
            setattr(self, f"layer{s + 1}", nn.Sequential(*blocks))
            c_in = c_out
        self.avgpool = nn.AdaptiveAvgPool3d(1)
        self.requires_grad_(False)
        seeded_init(self, int(cfg.seed))
        self.train(False)

    def train(self, mode: bool = True) -> "STStream":
        """Always eval (frozen: BatchNorm uses its running statistics, decisions D3)."""
        return super().train(False)

    def forward(self, clips: Tensor) -> Tensor:
        x = self.stem(clips)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.avgpool(x).flatten(1)

    def segments(self, clips: Tensor) -> Tensor:
        """`[B, T, 3, F, S, S]` → `[B, T, C₄]`: one vector per 1-s segment (the head's `st`)."""
        return self(clips.flatten(0, 1)).unflatten(0, clips.shape[:2])


def seeded_init(stream: nn.Module, seed: int) -> None:
    """torchvision's `VideoResNet` init drawn from a private generator seeded with `seed`: Conv3d ~ Kaiming normal
    (fan_out, ReLU), BatchNorm weight 1, bias 0 (running statistics 0 / 1). Skipped on the meta device."""
    if any(p.is_meta for p in stream.parameters()):
        return
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in stream.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu", generator=generator)
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)


def build_st_stream(cfg: STStreamConfig, load_weights: bool = True) -> STStream:
    """The frozen stream of `cfg`, with `cfg.weights` loaded when given and `load_weights` (else seeded random)."""
    stream = STStream(cfg)
    if load_weights and cfg.weights:
        from caeav.model.weights import load_st_weights

        load_st_weights(stream, cfg.weights, cfg)
    return stream


class STFeatureEncoder:
    """The datasets' `st_encoder` hook: numpy clips `[T, 3, F, S, S]` → features `[T, C₄]` float32 (CPU, no grad).

    The stream is built on first use (a loader that finds every clip's features in `feats/r2plus1d_18/` never builds
    it), on the GPU when there is one and this is not a DataLoader worker (a forked worker cannot use CUDA), else on
    the CPU; `identity` says which stream it is, for the media cache's key. A config that names published weights
    (`st.weights_name`) but no `st.weights` file refuses to compute features with random weights (one line naming the
    file to download)."""

    def __init__(self, cfg: STStreamConfig):
        self.cfg = cfg
        self._stream: Optional[STStream] = None
        self._device = torch.device("cpu")

    @property
    def identity(self) -> dict:
        arch = {"channels": list(self.cfg.channels), "depths": list(self.cfg.depths), "stem_mid": self.cfg.stem_mid}
        if self.cfg.weights:
            st = os.stat(self.cfg.weights)
            return {**arch, "weights": [os.path.abspath(self.cfg.weights), st.st_size, st.st_mtime_ns]}
        return {**arch, "seed": int(self.cfg.seed)}

    def stream(self) -> STStream:
        main_process = torch.utils.data.get_worker_info() is None
        if self._stream is not None and self._device.type == "cuda" and not main_process:
            self._stream = None  # a worker forked after the main process used the GPU: rebuild on the CPU
        if self._stream is None:
            if self.cfg.weights_name and not self.cfg.weights:
                from caeav.errors import WeightsError
                from caeav.model.weights import st_expected

                raise WeightsError(f"computing R(2+1)D-18 features from the videos needs the stream's weights: "
                                   f"{st_expected(self.cfg)}")
            self._device = torch.device("cuda" if main_process and torch.cuda.is_available() else "cpu")
            self._stream = build_st_stream(self.cfg).to(self._device)
        return self._stream

    def __call__(self, clips: np.ndarray) -> np.ndarray:
        stream = self.stream()
        with torch.inference_mode():
            out = stream(torch.from_numpy(np.ascontiguousarray(clips, dtype=np.float32)).to(self._device))
        return out.float().cpu().numpy()

    def __getstate__(self) -> dict:  # DataLoader workers (spawn) rebuild the stream themselves
        return {"cfg": self.cfg, "_stream": None, "_device": torch.device("cpu")}


__all__ = ["BasicBlock", "stream_dim", "STFeatureEncoder", "STStream", "build_st_stream", "conv2plus1d", "midplanes", "seeded_init"]
