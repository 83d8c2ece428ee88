"""Building blocks of the AVS decoder (architecture.md §7.4; AVS-NET:1141-1584 and AVSBench `model/TPAVI.py`).

Origin: Zhou et al., "Audio-Visual Segmentation", ECCV 2022 (AVSBench: TPAVI, the FPN-like decoder), with the AVS
TemporalAttention of the AVMoE/CAE-AV code (four CMBS-style copies that gate the four decoder inputs).

* `bicubic_matrix` / `resize_bicubic`: PyTorch's `interpolate(mode="bicubic", align_corners=False)` as two fixed
  MatMuls (R_h x R_wᵀ). TensorRT's Resize has no cubic mode (`tensorrt-onnx-ops.json`: nearest/linear only) and
  onnxruntime's cubic Resize differs from PyTorch's by ~5e-4; a MatMul is exact in both (as decisions D6 does for the
  audio front end). The matrices are numpy constants built from static shapes at trace time (no buffers, so the module
  also builds on the meta device).
* `AVSTemporalAttention`: per stage s: pooled map → Linear+ReLU+Dropout → BiLSTMs (audio A→d, visual C→2d) →
  2-layer post-norm encoders (`TemporalEncoder` of `caeav.model.heads.temporal_attention`, shared with the AVE head) →
  gates g_a = σ(Linear(d→1)(audio_kv)), g_v = σ(Linear(d→1)(video_kv)); map_s ← map_s·(1 + γ g_a) (γ = 0.05);
  audio ← audio·(1 + γ·mean_s g_v). The authors also build and run two cross-modal decoders per stage whose outputs are
  never used; they are not built here (no effect on any output or gradient).
* `TPAVI` (dot-product mode, audio as the "other" input, BatchNorm in W_z zero-initialised):
  z = LN_C(W_z(y) + x), y_i = (1/N) Σ_j (θ_i · φ_j) g_j over the N = T·H·W positions of a clip, where φ_j = φ(a_t(j))
  is the aligned audio of position j's frame (repeated over H, W). Since φ is constant over the positions of a frame,
  y_i = (1/N) θ_iᵀ M with M = Σ_t φ(a_t) ⊗ Σ_{(h,w)} g_{t,h,w}  (C'×C'), which is the same sum in another order:
  O(N·C'²) instead of the O(N²·C') affinity matrix (15 680² floats per clip at stage 0 in the paper setting).
* `ResidualConvUnit` / `FeatureFusionBlock` (AVSBench's, from DPT/MiDaS): the authors' ReLU is in-place, so the unit
  computes relu(x) + conv2(relu(conv1(relu(x)))) and also rectifies its input tensor in place; `ResidualConvUnit`
  writes the former out-of-place, and the head exposes relu(map) as the maps the MS3 loss reads (`AVSHead`).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from caeav.model.heads.temporal_attention import BiLSTMEncoder, TemporalEncoder

CUBIC_A = -0.75  # PyTorch's bicubic kernel constant


def _cubic_weights(t: np.ndarray, a: float = CUBIC_A) -> tuple:
    def near(x):  # |x| <= 1
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a

    return far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)


@lru_cache(maxsize=64)
def bicubic_matrix(n_in: int, n_out: int) -> np.ndarray:
    """`[n_out, n_in]` float32 matrix of PyTorch's 1-D bicubic resize with align_corners=False (size given).

    ATen: x = (o + 0.5)·n_in/n_out − 0.5 (no clamp for cubic), i = min(⌊x⌋, n_in−1), t = clamp(x − i, 0, 1),
    taps i−1..i+2 with weights (cc2(t+1), cc1(t), cc1(1−t), cc2(2−t)), each index clamped to [0, n_in−1].
    """
    x = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    i0 = np.minimum(np.floor(x).astype(np.int64), n_in - 1)
    t = np.clip(x - i0, 0.0, 1.0)
    out = np.zeros((n_out, n_in), dtype=np.float64)
    rows = np.arange(n_out)
    for k, w in enumerate(_cubic_weights(t)):
        np.add.at(out, (rows, np.clip(i0 - 1 + k, 0, n_in - 1)), w)
    return out.astype(np.float32)


def resize_bicubic(x: Tensor, size: int) -> Tensor:
    """`[N, C, H, W]` → `[N, C, size, size]`: F.interpolate(bicubic, align_corners=False) up to float rounding."""
    h, w = x.shape[-2], x.shape[-1]
    rh = torch.as_tensor(bicubic_matrix(h, size), dtype=x.dtype, device=x.device)
    rw = torch.as_tensor(bicubic_matrix(w, size), dtype=x.dtype, device=x.device)
    return torch.matmul(torch.matmul(rh, x), rw.transpose(0, 1))


class AVSTemporalAttention(nn.Module):
    """Gates the S stage maps `[BT, C, H_s, W_s]` and the audio `[B, T, A]` (module docstring). Returns (maps, audio
    `[BT, A]`)."""

    def __init__(self, channels: int, audio_dim: int, segments: int, dim: int = 256, heads: int = 4,
                 ffn_dim: int = 1024, stages: int = 4, gamma: float = 0.05, dropout: float = 0.1,
                 feature_dropout: float = 0.2):
        super().__init__()
        self.segments, self.gamma = segments, gamma
        enc = dict(dim=dim, heads=heads, ffn_dim=ffn_dim, num_layers=2, dropout=dropout, keep_unused=False)
        self.v_fc = nn.ModuleList([nn.Linear(channels, channels) for _ in range(stages)])
        self.relu = nn.ReLU()
        self.dropout = nn.Dropout(feature_dropout)
        self.video_encoder = nn.ModuleList([TemporalEncoder(2 * dim, **enc) for _ in range(stages)])
        self.audio_encoder = nn.ModuleList([TemporalEncoder(dim, **enc) for _ in range(stages)])
        self.audio_visual_rnn_layer = nn.ModuleList([BiLSTMEncoder(audio_dim, channels, dim) for _ in range(stages)])
        self.audio_gated = nn.ModuleList([nn.Sequential(nn.Linear(dim, 1), nn.Sigmoid()) for _ in range(stages)])
        self.video_gated = nn.ModuleList([nn.Sequential(nn.Linear(dim, 1), nn.Sigmoid()) for _ in range(stages)])

    def forward(self, maps: list, audio: Tensor) -> tuple[list, Tensor]:
        out, video_gates = [], []
        for s, x in enumerate(maps):
            pooled = x.mean(dim=(2, 3)).reshape(-1, self.segments, x.shape[1])  # [B, T, C]
            visual = self.dropout(self.relu(self.v_fc[s](pooled)))
            audio_rnn, visual_rnn = self.audio_visual_rnn_layer[s](audio, visual)  # [B, T, d], [B, T, 2d]
            video_kv = self.video_encoder[s](visual_rnn)
            audio_kv = self.audio_encoder[s](audio_rnn)
            audio_gate = self.audio_gated[s](audio_kv).reshape(-1, 1, 1, 1)  # [BT, 1, 1, 1]
            video_gates.append(self.video_gated[s](video_kv).reshape(-1, 1))  # [BT, 1]
            out.append(x + audio_gate * x * self.gamma)
        flat = audio.reshape(-1, audio.shape[-1])  # [BT, A]
        video_gate = sum(video_gates) / len(video_gates)
        return out, flat + video_gate * flat * self.gamma


class TPAVI(nn.Module):
    """Temporal pixel-wise audio-visual interaction, dot-product mode (module docstring).

    x `[BT, C, H, W]`, audio `[BT, A]` → (z `[BT, C, H, W]`, aligned audio `[B, T, C]` (the MS3 loss's a_fea)).
    Parameter names follow AVSBench (`align_channel`, `norm_layer`, `g`, `theta`, `phi`, `W_z`).
    """

    def __init__(self, channels: int, audio_dim: int, segments: int, inter_channels: int = 0):
        super().__init__()
        self.segments = segments
        self.inter = inter_channels or max(1, channels // 2)
        self.align_channel = nn.Linear(audio_dim, channels)
        self.norm_layer = nn.LayerNorm(channels)
        self.g = nn.Conv3d(channels, self.inter, kernel_size=1)
        self.W_z = nn.Sequential(nn.Conv3d(self.inter, channels, kernel_size=1), nn.BatchNorm3d(channels))
        nn.init.zeros_(self.W_z[1].weight)
        nn.init.zeros_(self.W_z[1].bias)
        self.theta = nn.Conv3d(channels, self.inter, kernel_size=1)
        self.phi = nn.Conv3d(channels, self.inter, kernel_size=1)

    def forward(self, x: Tensor, audio: Tensor) -> tuple[Tensor, Tensor]:
        c, h, w = x.shape[1], x.shape[2], x.shape[3]
        n = self.segments * h * w
        x5 = x.reshape(-1, self.segments, c, h, w).transpose(1, 2)  # [B, C, T, H, W]
        a = self.align_channel(audio.reshape(-1, self.segments, audio.shape[-1]))  # [B, T, C]
        phi_a = F.linear(a, self.phi.weight.flatten(1), self.phi.bias)  # [B, T, C'] = φ at every position of frame t
        g_sum = self.g(x5).sum(dim=(3, 4)).transpose(1, 2)  # [B, T, C'] = Σ_hw g
        m = torch.matmul(phi_a.transpose(1, 2), g_sum)  # [B, C', C']
        theta = self.theta(x5).flatten(2).transpose(1, 2)  # [B, N, C']
        y = (torch.matmul(theta, m) / n).transpose(1, 2).reshape(-1, self.inter, self.segments, h, w)
        z = self.W_z(y) + x5
        z = self.norm_layer(z.permute(0, 2, 3, 4, 1))  # [B, T, H, W, C]
        return z.permute(0, 1, 4, 2, 3).reshape(-1, c, h, w), a


class ResidualConvUnit(nn.Module):
    """relu(x) + conv2(relu(conv1(relu(x)))), 3×3 convs with bias (AVSBench, with its in-place ReLU made explicit)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(x)
        return x + self.conv2(F.relu(self.conv1(x)))


class FeatureFusionBlock(nn.Module):
    """out = RCU2(x + RCU1(skip)) (or RCU2(x) without skip), then ×2 bilinear upsampling (align_corners=True).

    The deepest block never receives a skip; built with `skip=False` it has no (never-used) `resConfUnit1`.
    """

    def __init__(self, channels: int, skip: bool = True):
        super().__init__()
        if skip:
            self.resConfUnit1 = ResidualConvUnit(channels)
        self.resConfUnit2 = ResidualConvUnit(channels)

    def forward(self, x: Tensor, skip: Tensor | None = None) -> Tensor:
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=True)


class Upsample2x(nn.Module):
    """×2 bilinear upsampling (AVSBench's `Interpolate(scale_factor=2, mode="bilinear")`, align_corners=False)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
