"""Building blocks shared by the caption mapper (P Eq. 15-16) and CASE (P Eq. 17-21).

One definition of each, used everywhere (architecture.md §5-§6, AVE-NET:505-612):

* `MultiHeadAttention`: separate q/k/v Linears + output Linear, scaled dot product, dropout on the attention map.
  Written out as MatMul/Softmax (no SDPA, no `nn.MultiheadAttention`) so the ONNX graph never holds an `Attention`
  node at any opset and reads the same in TensorRT 10.3 (decisions D10).
* `AttentionBlock`: post-norm residual attention, LN(q + Dropout(MHA(q, kv, kv))) (the authors' `att`, `FeatureMapper`).
* `FeedForwardBlock`: post-norm residual FFN, LN(x + Dropout(W₂ Dropout(ReLU(W₁ x)))), width 2C (the authors' `ffn`).
* `conv_over_time`: Conv1d layers applied along the T frames of every clip, per token position.

Submodule names follow the authors' code (`linear_q`, `linear_merge`, `attention`, `norm`, `ffn.dense1`, ...) so their
weights load with at most a prefix rename. All linears keep PyTorch's default init.

Tensors are per-frame and flattened video-major: row b·T + t of `[BT, L, C]` is frame t of clip b.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn


class MultiHeadAttention(nn.Module):
    """Multi-head scaled dot-product attention with separate q/k/v projections (the authors' `MHAtt`, AVE-NET:554-589).

    softmax(Q Kᵀ / √d_head) V per head, dropout on the attention map, then `linear_merge`. No mask (the authors never
    pass one). q `[N, Lq, C]`, k and v `[N, Lk, C]` → `[N, Lq, C]`.
    """

    def __init__(self, dim: int, heads: int, attn_dropout: float = 0.1):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.head_dim = dim // heads
        self.linear_v = nn.Linear(dim, dim)
        self.linear_k = nn.Linear(dim, dim)
        self.linear_q = nn.Linear(dim, dim)
        self.linear_merge = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(attn_dropout)

    def _split(self, x: Tensor) -> Tensor:  # [N, L, C] -> [N, heads, L, head_dim]
        return x.unflatten(-1, (self.heads, self.head_dim)).transpose(1, 2)

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        q, k, v = self._split(self.linear_q(q)), self._split(self.linear_k(k)), self._split(self.linear_v(v))
        scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(self.head_dim)  # [N, h, Lq, Lk]
        attn = self.dropout(torch.softmax(scores, dim=-1))
        out = torch.matmul(attn, v).transpose(1, 2).flatten(2)  # [N, Lq, C]
        return self.linear_merge(out)


class AttentionBlock(nn.Module):
    """Residual attention with a post LayerNorm: LN(q + Dropout(MHA(Q=q, K=V=kv))).

    Self-attention when `kv` is omitted. Used as the shared caption mapper (P Eq. 15-16: attention-map dropout 0.2,
    output dropout 0.2) and as every attention step of CASE (P Eq. 17-18; attention-map dropout 0.1, output 0.2).
    The batch of `q` and `kv` must match; CASE feeds one clip's T frames as one long query row to share the caption
    keys (decisions D8).
    """

    def __init__(self, dim: int, heads: int, attn_dropout: float = 0.1, dropout: float = 0.2):
        super().__init__()
        self.attention = MultiHeadAttention(dim, heads, attn_dropout)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(self, q: Tensor, kv: Optional[Tensor] = None) -> Tensor:
        kv = q if kv is None else kv
        return self.norm(q + self.dropout(self.attention(q, kv, kv)))


class PositionWiseFFN(nn.Module):
    """Linear(C→2C) → ReLU → Dropout → Linear(2C→C) (the authors' `PositionWiseFFN`, AVE-NET:505-514)."""

    def __init__(self, dim: int, dropout: float = 0.2):
        super().__init__()
        self.dense1 = nn.Linear(dim, 2 * dim)
        self.relu = nn.ReLU()
        self.dropout = nn.Dropout(dropout)
        self.dense2 = nn.Linear(2 * dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.dense2(self.dropout(self.relu(self.dense1(x))))


class FeedForwardBlock(nn.Module):
    """Residual FFN with a post LayerNorm: LN(x + Dropout(PositionWiseFFN(x))) (the authors' `ffn`, AVE-NET:603-612)."""

    def __init__(self, dim: int, dropout: float = 0.2):
        super().__init__()
        self.ffn = PositionWiseFFN(dim, dropout)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x + self.dropout(self.ffn(x)))


def conv_over_time(x: Tensor, segments: int, *convs: nn.Module) -> Tensor:
    """Apply `convs` (Conv1d layers, in order) along the T frames of each clip, separately per token position.

    `[BT, L, C]` → `[B·L, C, T]` → convs → back to `[BT, L, C]`. Each clip is its own conv batch row, so zero padding
    happens at the clip ends and frames of different clips never mix. Only reshapes with -1 for the batch: safe for a
    dynamic batch in ONNX.
    """
    L = x.shape[1]
    z = x.unflatten(0, (-1, segments)).permute(0, 2, 3, 1).flatten(0, 1)  # [B·L, C, T]
    for conv in convs:
        z = conv(z)
    return z.unflatten(0, (-1, L)).permute(0, 3, 1, 2).flatten(0, 1)  # [BT, L, C]
