"""MGN building blocks: class-aware grouping of segment tokens (architecture.md §7.2; AVVP `nets/grouping.py`).

Origin: Mo & Tian, "Multi-modal Grouping Network for Weakly-Supervised Audio-Visual Video Parsing", NeurIPS 2022
(stoneMo/MGN), itself built on GroupViT's grouping block. Written from their description and code semantics:

* `AttnBlock`: pre-norm transformer block (fused qkv with bias, GELU MLP ×4, DropPath on both residuals).
* `CrossAttnBlock` (post-norm variant only, as MGN uses it): q + Attn(q, k); + MLP(LN(·)); then LN.
* `AssignAttention` (GRP:70-163): one head; raw logits r = q kᵀ/√d between the S₂ groups (queries) and the L tokens
  (keys); the attention is normalised over the *group* axis (`assignment`):
    soft:  A = softmax_S₂(r)
    hard:  A = one-hot(argmax_S₂ softmax_S₂(r))        (straight-through: forward one-hot, gradient of the softmax)
    hard + Gumbel, training only: softmax_S₂((r + g)/τ) with g ~ Gumbel(0, 1), then the same straight-through
  then out = Proj((A / (Σ_L A + 1)) V) (`assign_weights`). The map returned for MGN's segment-level probabilities
  (`frame_map`) is the authors' attention dict entry of the block's kind: hard → A itself; soft →
  1 + softmax_L(softmax_S₂(r)), in (1, 2), a visualisation map that only the frame probabilities use.
* `GroupingBlock`: LN on group tokens and on x; token-axis MLP (S₁ → ⌊dim/2⌋ → S₂) + LN; CrossAttnBlock(groups, x);
  AssignAttention(groups, x) + groups; + channel MLP (×4) on LN. Returns `[B, S₂, dim]` and the frame map
  `[B, S₂, L]`.
  MGN's "HAN" block (`GroupingBlock_Han`) is the same module with the T segments of the other modality as groups.
* `ModalityTrans`: concat(x, groups) → `depth` AttnBlocks → split → [HAN(x, x_other)] → GroupingBlock(x, groups).

Stochastic parts (DropPath, Gumbel noise) act only in training mode; the eval forward has no data-dependent Python
control flow (ONNX export with a dynamic batch). Batch size is general (B ≥ 1).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def drop_path(x: Tensor, p: float, training: bool) -> Tensor:
    """Stochastic depth per sample (timm's `drop_path`): drop a sample's residual with probability p, else ×1/(1-p)."""
    if p == 0.0 or not training:
        return x
    keep = 1.0 - p
    mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
    return x * mask / keep


class Mlp(nn.Module):
    """Linear → GELU → Linear (MGN's `Mlp`, dropout 0)."""

    def __init__(self, dim_in: int, hidden: int, dim_out: int):
        super().__init__()
        self.fc1 = nn.Linear(dim_in, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


def _heads(x: Tensor, heads: int) -> Tensor:  # [B, N, C] -> [B, h, N, C/h]
    return x.unflatten(-1, (heads, x.shape[-1] // heads)).transpose(1, 2)


def _merge(x: Tensor) -> Tensor:  # [B, h, N, C/h] -> [B, N, C]
    return x.transpose(1, 2).flatten(2)


class _MultiHead(nn.Module):
    """Shared set-up of MGN's attention variants: head split, 1/sqrt(d) scale and the output projection."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"MGN width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.proj = nn.Linear(dim, dim)

    def attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """softmax(q kᵀ · scale) v over heads, merged and projected: `[B, h, N, C/h]` ×3 → `[B, N, C]`."""
        attn = torch.softmax(torch.matmul(q, k.transpose(-2, -1)) * self.scale, dim=-1)
        return self.proj(_merge(torch.matmul(attn, v)))


class SelfAttention(_MultiHead):
    """Multi-head self-attention with a fused qkv Linear (bias) and an output projection (MGN `Attention`, qkv_fuse)."""

    def __init__(self, dim: int, heads: int):
        super().__init__(dim, heads)
        self.qkv = nn.Linear(dim, 3 * dim)

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = (_heads(t, self.heads) for t in self.qkv(x).chunk(3, dim=-1))
        return self.attend(q, k, v)


class CrossAttention(_MultiHead):
    """Multi-head attention of queries over keys with separate q/k/v Linears (bias) (MGN `Attention`, unfused)."""

    def __init__(self, dim: int, heads: int):
        super().__init__(dim, heads)
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)

    def forward(self, query: Tensor, key: Tensor) -> Tensor:
        q = _heads(self.q_proj(query), self.heads)
        k, v = _heads(self.k_proj(key), self.heads), _heads(self.v_proj(key), self.heads)
        return self.attend(q, k, v)


class AttnBlock(nn.Module):
    """Pre-norm block: x + DropPath(Attn(LN(x))); x + DropPath(MLP(LN(x)))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), dim)
        self.drop_path = drop_path

    def forward(self, x: Tensor) -> Tensor:
        x = x + drop_path(self.attn(self.norm1(x)), self.drop_path, self.training)
        return x + drop_path(self.mlp(self.norm2(x)), self.drop_path, self.training)


class CrossAttnBlock(nn.Module):
    """Post-norm cross-attention block: LN_post(y + MLP(LN2(y))), y = q + Attn(q, k)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.attn = CrossAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), dim)
        self.norm_post = nn.LayerNorm(dim)

    def forward(self, query: Tensor, key: Tensor) -> Tensor:
        x = query + self.attn(query, key)
        return self.norm_post(x + self.mlp(self.norm2(x)))


def gumbel_noise(like: Tensor) -> Tensor:
    """Standard Gumbel samples −log(−log U), U clamped away from 0 and 1 (no ±inf, unlike `exponential_().log()`)."""
    tiny = torch.finfo(like.dtype).tiny
    u = torch.rand_like(like).clamp_(min=tiny, max=1.0 - torch.finfo(like.dtype).eps)
    return -torch.log(-torch.log(u))


def straight_through_one_hot(y_soft: Tensor, dim: int) -> Tensor:
    """One-hot of argmax(y_soft) along `dim` in the forward pass, gradient of y_soft in the backward pass."""
    index = y_soft.argmax(dim=dim, keepdim=True)
    y_hard = torch.zeros_like(y_soft).scatter(dim, index, torch.ones_like(index, dtype=y_soft.dtype))
    return y_hard - y_soft.detach() + y_soft


class AssignAttention(nn.Module):
    """Single-head assignment of L tokens to S₂ groups (rule in the module docstring). Returns (out, A)."""

    def __init__(self, dim: int, hard: bool, gumbel: bool, gumbel_tau: float = 1.0, assign_eps: float = 1.0):
        super().__init__()
        self.scale = dim**-0.5
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.hard, self.gumbel, self.gumbel_tau, self.assign_eps = hard, gumbel, gumbel_tau, assign_eps

    def assignment(self, raw: Tensor) -> Tensor:
        """A `[B, S₂, L]` from raw logits, normalised over the group axis (−2) (GRP `get_attn`)."""
        if self.gumbel and self.training:
            y = torch.softmax((raw + gumbel_noise(raw)) / self.gumbel_tau, dim=-2)
            return straight_through_one_hot(y, dim=-2) if self.hard else y
        if self.hard:
            return straight_through_one_hot(torch.softmax(raw, dim=-2), dim=-2)
        return torch.softmax(raw, dim=-2)

    def assign_weights(self, assign: Tensor) -> Tensor:
        """The attention weights A / (Σ_L A + eps), eps = 1 (GRP's `sum_assign=False` branch)."""
        return assign / (assign.sum(dim=-1, keepdim=True) + self.assign_eps)

    def frame_map(self, raw: Tensor, assign: Tensor) -> Tensor:
        """The map MGN's frame probabilities use (GRP `attn_dict[kind]`): A when hard, else
        1 + softmax_L(softmax_S₂(r)) (the un-noised soft assignment, whatever the training mode)."""
        if self.hard:
            return assign
        return 1.0 + torch.softmax(torch.softmax(raw, dim=-2), dim=-1)

    def forward(self, query: Tensor, key: Tensor) -> tuple[Tensor, Tensor]:
        raw = torch.matmul(self.q_proj(query), self.k_proj(key).transpose(-2, -1)) * self.scale  # [B, S₂, L]
        assign = self.assignment(raw)
        out = self.proj(torch.matmul(self.assign_weights(assign), self.v_proj(key)))
        return out, self.frame_map(raw, assign)


class GroupingBlock(nn.Module):
    """Groups L tokens into S₂ new group tokens seeded by S₁ group tokens. (x `[B,L,C]`, groups `[B,S₁,C]`)."""

    def __init__(self, dim: int, heads: int, num_group_tokens: int, num_output_groups: int, hard: bool,
                 gumbel: bool, gumbel_tau: float = 1.0, mlp_ratio: tuple = (0.5, 4.0)):
        super().__init__()
        self.norm_tokens = nn.LayerNorm(dim)
        self.mlp_inter = Mlp(num_group_tokens, int(mlp_ratio[0] * dim), num_output_groups)
        self.norm_post_tokens = nn.LayerNorm(dim)
        self.norm_x = nn.LayerNorm(dim)
        self.pre_assign_attn = CrossAttnBlock(dim, heads, mlp_ratio=4.0)
        self.assign = AssignAttention(dim, hard=hard, gumbel=gumbel, gumbel_tau=gumbel_tau)
        self.norm_new_x = nn.LayerNorm(dim)
        self.mlp_channels = Mlp(dim, int(mlp_ratio[1] * dim), dim)

    def forward(self, x: Tensor, group_tokens: Tensor) -> tuple[Tensor, Tensor]:
        group_tokens = self.norm_tokens(group_tokens)
        x = self.norm_x(x)
        projected = self.norm_post_tokens(self.mlp_inter(group_tokens.transpose(1, 2)).transpose(1, 2))
        projected = self.pre_assign_attn(projected, x)
        new_x, assign = self.assign(projected, x)
        new_x = new_x + projected
        return new_x + self.mlp_channels(self.norm_new_x(new_x)), assign


class ModalityTrans(nn.Module):
    """MGN's grouping transformer: `depth` AttnBlocks over concat(x, groups), optional HAN, then a GroupingBlock.

    x `[B, L, C]`, group_tokens `[S, C]` (learned class tokens, broadcast over the batch) or `[B, S, C]`;
    x_other `[B, T, C]` is required when the module has a HAN block (`han_tokens` = T > 0).
    Returns the new groups `[B, S_out, C]` and the frame map `[B, S_out, L]` (`AssignAttention.frame_map`).
    """

    def __init__(self, dim: int, depth: int, heads: int, num_group_tokens: int, num_output_groups: int,
                 hard: bool, mlp_ratio: float = 4.0, drop_path: float = 0.1, gumbel_tau: float = 1.0,
                 han_tokens: int = 0):
        super().__init__()
        self.num_group_tokens = num_group_tokens
        self.blocks = nn.ModuleList([AttnBlock(dim, heads, mlp_ratio, drop_path) for _ in range(depth)])
        # HAN: the opposite assignment type of the modality's grouping (MGN: soft grouping -> hard Gumbel HAN)
        self.han_encoder: Optional[GroupingBlock] = None
        if han_tokens > 0:
            self.han_encoder = GroupingBlock(dim, heads, han_tokens, han_tokens, hard=not hard, gumbel=not hard,
                                             gumbel_tau=gumbel_tau)
        self.grouping = GroupingBlock(dim, heads, num_group_tokens, num_output_groups, hard=hard, gumbel=hard,
                                      gumbel_tau=gumbel_tau)

    def forward(self, x: Tensor, group_tokens: Tensor, x_other: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        if group_tokens.dim() == 2:
            group_tokens = group_tokens.unsqueeze(0).expand(x.shape[0], -1, -1)
        length = x.shape[1]
        cat = torch.cat([x, group_tokens], dim=1)
        for block in self.blocks:
            cat = block(cat)
        x, group_tokens = cat[:, :length], cat[:, length:]
        if self.han_encoder is not None:
            if x_other is None:
                raise ValueError("this ModalityTrans has a HAN block: pass x_other (the other modality's segments)")
            x, _ = self.han_encoder(x, x_other)
        return self.grouping(x, group_tokens)


def init_mgn_weights(module: nn.Module) -> None:
    """MGN's `_init_weights`: Linear ~ truncated N(0, 0.02²) (cut at ±2), bias 0; LayerNorm weight 1, bias 0."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


__all__ = ["AssignAttention", "AttnBlock", "CrossAttnBlock", "GroupingBlock", "ModalityTrans", "init_mgn_weights",
           "drop_path", "gumbel_noise", "straight_through_one_hot"]
