"""CASTE: Cross-modal Agreement-guided Spatio-Temporal Enrichment (paper §III-B, Eq. 1-9; architecture.md §4).

One CASTE per stage per modality (architecture.md §2.4). `CASTE(x, y)` takes the module's own stream x `[BT, L, C_self]`
and the other modality's stream y `[BT, L_other, C_other]` and returns the residual γ·(x̂ ⊙ M) of P Eq. 9; the caller
adds it. Pieces, each named after its equation:

* `AgreementGate` (Eq. 1-4): per-frame weights [w_sp, w_tm].
* `SpatialEnrichment` (Eq. 5-6) and `TemporalEnrichment` (Eq. 7-8), in `caeav.model.enrichment`.
* mix x̂ = w_sp·x_sp + w_tm·x_tm, then `topk_token_mask` and γ (Eq. 9, selective injection).

We follow the authors' code (decisions D1, AVE-NET:786-1041). Where it differs from the paper (architecture.md §9):

* §9.1: the paper places CASTE before every block; the code (and the caller) uses it once per stage per modality.
* §9.4: spatial context weights are a softmax over tokens, not a per-token sigmoid.
* §9.5: LayerNorm on the branch, x + γ·LN(branch), not LN(x + γ·branch).
* §9.6: the top-K saliency ‖x_i‖² is taken on the CASTE *input* x, not on the mixed x̂; K = max(1, ⌊ρL⌋), not ⌈ρL⌉.

Export (decisions D8, D10): K is fixed at construction from `tokens_self`; the batch is reshaped with -1 (B = BT // T,
T fixed); the mask is TopK (sorted, K ≤ 1228 < 3840) + ScatterElements, which keeps exactly K tokens per frame even when
saliencies tie (comparing against the K-th value would keep every tied token). No data-dependent control flow.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from caeav.config import CASTEConfig, ConfigError
from caeav.model.enrichment import SpatialEnrichment, TemporalEnrichment


def topk_count(tokens: int, ratio: float) -> int:
    """K of the selective injection: max(1, ⌊ratio·L⌋) as in the authors' code (the paper writes ⌈ρL⌉, §9.6)."""
    if not 0.0 < ratio <= 1.0:
        raise ConfigError(f"caste.topk_ratio must be in (0, 1], got {ratio}")
    return max(1, math.floor(tokens * ratio))


def topk_token_mask(x: Tensor, k: int) -> Tensor:
    """Hard binary top-K mask per frame (P Eq. 9's M, code semantics): `[BT, L, C]` → `[BT, L, 1]` in x's dtype.

    Saliency s_i = ‖x_i‖² over channels. The mask carries no gradient (no straight-through, no Gumbel).
    Exactly k ones per frame: TopK indices are distinct, and scattering ones at them cannot over-select on ties.
    """
    saliency = x.detach().pow(2).sum(dim=-1)  # [BT, L]
    index = saliency.topk(k, dim=1).indices  # [BT, k]
    ones = torch.ones_like(index, dtype=x.dtype)
    mask = torch.zeros_like(saliency).scatter(1, index, ones)  # [BT, L]
    return mask.unsqueeze(-1)


class AgreementGate(nn.Module):
    """Frame-level audio-visual agreement gate (P Eq. 1-4; AVE-NET:939-980). Returns w `[BT, 2]` = [w_sp, w_tm].

    Eq. 1: x̄, ȳ = token means. ṽ = x̄ W_s + b_s, ã = ȳ W_o + b_o (shared space of `gate_dim`).
    Eq. 2: g = cos(ṽ, ã) ∈ [-1, 1] per frame (F.normalize, eps 1e-12, as the code).
    Eq. 3: λ = W_2 ReLU(W_1 ξ + b_1) + b_2, ξ = [ṽ, ã, ṽ − ã, ṽ ⊙ ã].
    Eq. 4: [w_sp, w_tm] = softmax(λ + [g, −g]): agreement favours spatial, disagreement temporal enrichment.
    The paper's "visual/audio" read here as "own/other": the audio CASTE uses the same gate with roles swapped.
    """

    def __init__(self, dim_self: int, dim_other: int, gate_dim: int = 128, gate_hidden: int = 64):
        super().__init__()
        self.self_proj = nn.Linear(dim_self, gate_dim)
        self.other_proj = nn.Linear(dim_other, gate_dim)
        self.mlp = nn.Sequential(nn.Linear(4 * gate_dim, gate_hidden), nn.ReLU(), nn.Linear(gate_hidden, 2))

    def agreement(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Eq. 1-2: (ṽ `[BT, D]`, ã `[BT, D]`, g `[BT, 1]`)."""
        v = self.self_proj(x.mean(dim=1))
        a = self.other_proj(y.mean(dim=1))
        g = (F.normalize(v, dim=-1) * F.normalize(a, dim=-1)).sum(dim=-1, keepdim=True)
        return v, a, g

    def forward(self, x: Tensor, y: Tensor) -> Tensor:  # x: [BT, L, C_self], y: [BT, L_other, C_other]
        v, a, g = self.agreement(x, y)
        logits = self.mlp(torch.cat([v, a, v - a, v * a], dim=-1))  # λ, [BT, 2]
        return torch.softmax(logits + torch.cat([g, -g], dim=-1), dim=-1)


class CASTE(nn.Module):
    """One CASTE module; `forward(x, y)` returns the residual γ·(x̂ ⊙ M) `[BT, L, C_self]` (P Eq. 9, caller adds it).

    Args:
        dim_self, dim_other: channels of the own stream x and of the other stream y.
        tokens_self: L, tokens per frame of x; fixes K = max(1, ⌊topk_ratio·L⌋) (static K, decisions D8).
        segments: T, frames per clip; BT must be a multiple of it (rows video-major).
        cfg: `CASTEConfig` (gate_dim, gate_hidden, topk_ratio, temporal_kernel, init_std).

    All three γ (γ_sp, γ_tm, γ) start at 0: the residual is exactly 0 at init and only γ gets gradient at step 0.
    Parameter names follow the authors' `CASTEBlock` except the gate's projections (`self_proj`/`other_proj` for their
    `v_proj`/`a_proj`); `convert_authors_caste_state_dict` maps their keys.
    """

    def __init__(self, dim_self: int, dim_other: int, tokens_self: int, segments: int, cfg: CASTEConfig):
        super().__init__()
        self.tokens = tokens_self
        self.segments = segments
        self.k = topk_count(tokens_self, cfg.topk_ratio)
        self.gate = AgreementGate(dim_self, dim_other, cfg.gate_dim, cfg.gate_hidden)
        self.spatial = SpatialEnrichment(dim_self, cfg.init_std)
        self.temporal = TemporalEnrichment(dim_self, segments, cfg.temporal_kernel)
        self.gamma = nn.Parameter(torch.zeros(1))

    def extra_repr(self) -> str:
        return f"tokens={self.tokens}, segments={self.segments}, k={self.k}"

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        if x.shape[1] != self.tokens:  # static shape, not data: safe under export
            raise ValueError(f"CASTE built for {self.tokens} tokens per frame, got {x.shape[1]}")
        w = self.gate(x, y)  # [BT, 2]
        w_sp, w_tm = w[:, 0:1].unsqueeze(-1), w[:, 1:2].unsqueeze(-1)  # [BT, 1, 1] each
        mixed = w_sp * self.spatial(x) + w_tm * self.temporal(x)  # x̂
        return self.gamma * (mixed * topk_token_mask(x, self.k))


_AUTHORS_KEYS = {"gate.v_proj.": "gate.self_proj.", "gate.a_proj.": "gate.other_proj."}


def convert_authors_caste_state_dict(state_dict: dict) -> dict:
    """Map one authors' `CASTEBlock` state dict (keys relative to the block) onto `CASTE`'s names."""
    out = {}
    for key, value in state_dict.items():
        for old, new in _AUTHORS_KEYS.items():
            if key.startswith(old):
                key = new + key[len(old):]
                break
        out[key] = value
    return out
