"""CASTE's two enrichment branches: spatial (P Eq. 5-6) and temporal (P Eq. 7-8).

Both follow the authors' code (decisions D1; AVE-NET:786-936), which differs from the paper in two places
(architecture.md §9):

* §9.4: the spatial context weights are a softmax over the tokens of a frame (standard MobileViTv2 separable attention),
  not the per-token logistic σ(v W_i) of P Eq. 5.
* §9.5: the LayerNorm sits on the branch, not on the sum: x + γ·LN(branch), where P Eq. 6 / 8 write LN(x + γ·branch).
  With γ initialised to 0 each branch starts as the identity.

Tensors are per-frame and flattened video-major: row b·T + t of `[BT, L, C]` is frame t of clip b.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from caeav.model.blocks import conv_over_time


class SeparableSelfAttention(nn.Module):
    """MobileViTv2 separable self-attention over the L tokens of one frame (P Eq. 5, code semantics).

    s = x W_i `[L,1]`; α = softmax over tokens (P: σ per token, §9.4); context c = Σ_p α_p (x W_k)_p `[1,C]`;
    output o = ((x W_v) ⊙ c) W_o (no activation on the value branch). Linear cost in L.
    All four linears start at weight N(0, init_std²), bias 0 (AVE-NET:800-812).
    Submodule names follow the authors' code (`fc_i`, `fc_k`, `fc_v`, `fc_o`) so their weights load unchanged.
    """

    def __init__(self, dim: int, init_std: float = 1e-3):
        super().__init__()
        self.fc_i = nn.Linear(dim, 1)
        self.fc_k = nn.Linear(dim, dim)
        self.fc_v = nn.Linear(dim, dim)
        self.fc_o = nn.Linear(dim, dim)
        for fc in (self.fc_i, self.fc_k, self.fc_v, self.fc_o):
            nn.init.normal_(fc.weight, mean=0.0, std=init_std)
            nn.init.zeros_(fc.bias)

    def forward(self, x: Tensor) -> Tensor:  # x: [BT, L, C]
        alpha = torch.softmax(self.fc_i(x), dim=1)  # [BT, L, 1], softmax over tokens
        context = (alpha * self.fc_k(x)).sum(dim=1, keepdim=True)  # [BT, 1, C]
        return self.fc_o(self.fc_v(x) * context)  # [BT, L, C]


class SpatialEnrichment(nn.Module):
    """Spatial enrichment within each frame (P Eq. 5-6): x_sp = x + γ_sp · LN(o), o = SeparableSelfAttention(x).

    Parameters are shared over the T frames (the authors loop over t with one module; attention is per frame, so running
    it on all BT frames at once is the same computation). γ_sp is a scalar initialised to 0. LN placement per §9.5.
    """

    def __init__(self, dim: int, init_std: float = 1e-3):
        super().__init__()
        self.attn = SeparableSelfAttention(dim, init_std)
        self.norm = nn.LayerNorm(dim)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:  # x: [BT, L, C]
        return x + self.gamma * self.norm(self.attn(x))


class TemporalEnrichment(nn.Module):
    """Temporal enrichment across the T frames of one clip (P Eq. 7-8): x_tm = x + γ_tm · LN(Z), Z = P_1(D_k(x)).

    Every token position of a clip is a length-T sequence; D_k is a depthwise Conv1d over time (kernel k, zero padding
    k//2, bias) and P_1 a pointwise Conv1d mixing channels (bias). Zero padding at both ends of each clip: frames of
    different clips never mix (the reshape to `[B, T, ...]` puts every clip in its own conv batch row). γ_tm is a scalar
    initialised to 0. LN placement per §9.5. The authors' disabled TSM mode is not provided.
    Submodule names follow the authors' code (`dw`, `pw`, `norm`, `gamma`).
    """

    def __init__(self, dim: int, segments: int, kernel_size: int = 3):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"temporal kernel must be odd and positive, got {kernel_size}")
        self.segments = segments
        self.dw = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.pw = nn.Conv1d(dim, dim, 1)
        self.norm = nn.LayerNorm(dim)
        self.gamma = nn.Parameter(torch.zeros(1))

    def temporal_mix(self, x: Tensor) -> Tensor:
        """Z of P Eq. 7: `[BT, L, C]` → `[BT, L, C]`, convolving along t within each clip."""
        return conv_over_time(x, self.segments, self.dw, self.pw)

    def forward(self, x: Tensor) -> Tensor:  # x: [BT, L, C]
        return x + self.gamma * self.norm(self.temporal_mix(x))
