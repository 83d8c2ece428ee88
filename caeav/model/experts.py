"""AVMoE experts: the cross-modal adapter (CMA) and the unimodal adapter (UA) (architecture.md §3.2).

The experts come from AVMoE (Cheng et al., "Mixtures of experts for audio-visual learning", NeurIPS 2024; reference
[18] of the CAE-AV paper). CAE-AV reuses them unchanged inside its AVMoE module Φ (P Eq. 11); the CAE-AV paper has no
equations of its own for their insides, so the steps below are named after the authors' code (AVE-NET:298-444,
AVVP-NET:84-153, AVS-NET:143-227).

Every expert maps self tokens x `[BT, L, C]` (and, for the CMA, the aligned other modality ŷ `[BT, L, C]`) to a
residual `[BT, L, C]`:

* an attention step that differs per expert kind (below), then the shared bottleneck tail
* LN_pre → down (1×1 conv C→C/r, groups g, no bias) → BN → [ReLU, CMA only] → up (1×1 conv C/r→C, groups g, no bias)
  → BN → LN_post → ·gate.

The bottleneck runs as `Conv2d` on `[BT, C, L, 1]`: the weights have the authors' shapes, BatchNorm2d normalises over
channels (statistics over BT·L positions), and the graph exports as plain Conv + BatchNormalization. LayerNorms act on
the channel-last `[BT, L, C]` view. Optional parts (BN, LNs) are `nn.Identity` when off; the final `gate` (init 0) is
None when the expert is not gated. Inits are PyTorch defaults except latent tokens ~ U[0,1) (`torch.rand`) and the
scalar gates (0), as the authors' code.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from caeav.config import AVMoEConfig, ConfigError

UA_ATTENTION = ("none", "paramfree", "mhsa", "latent")
MHSA_AXES = ("tokens", "batch")  # `avmoe.ua_mhsa_axis`: caeav (default) | the authors' code
MHSA_HEADS = 4  # AVS v1 unimodal self-attention (AVS-NET:143-148)
MHSA_DROPOUT = 0.2


def latent_token_attention(latent: Tensor, source: Tensor, x: Tensor) -> Tensor:
    """Latent tokens read `source`, then x reads the latent tokens (AVE-NET:379-391; no 1/√d scaling anywhere).

    latent Z `[N, C]`, source `[BT, L_src, C]`, x `[BT, L, C]` → x_res `[BT, L, C]`:
      Z' = Z + softmax_over_L_src(Z sourceᵀ) source       `[BT, N, C]`
      x_res = softmax_over_N(x Z'ᵀ) Z'
    """
    weights = torch.softmax(torch.matmul(latent, source.transpose(1, 2)), dim=-1)  # [BT, N, L_src]
    tokens = latent + torch.matmul(weights, source)  # [BT, N, C]
    weights = torch.softmax(torch.matmul(x, tokens.transpose(1, 2)), dim=-1)  # [BT, L, N]
    return torch.matmul(weights, tokens)


def mhsa_over_batch(mhsa: nn.MultiheadAttention, x: Tensor) -> Tensor:
    """The authors' AVS v1 unimodal self-attention, reproduced (AVS-NET:143-148,205; `avmoe.ua_mhsa_axis=batch`).

    Their `nn.MultiheadAttention` is sequence-first, but they call it on x `[BT, L, C]`: it reads BT as the sequence
    and L as the batch, so at each token position l the BT frames of the whole batch attend to one another. `mhsa`
    here is batch-first, so the same computation is mhsa(xᵀ, xᵀ, xᵀ)ᵀ with xᵀ = x.transpose(0, 1) `[L, BT, C]`
    (same weights, same keys). One clip's output then depends on the other clips of its batch.
    """
    xt = x.transpose(0, 1)
    return mhsa(xt, xt, xt, need_weights=False)[0].transpose(0, 1)


def paramfree_self_attention(x: Tensor) -> Tensor:
    """AVVP's parameter-free token self-attention, reproduced with its normalisation (AVVP-NET:135-141).

    A = softmax over j of (x_i · x_j) `[BT, L, L]`; the code then computes x_res_j = Σ_i A_ij x_i, i.e. Aᵀ x: each
    output token sums over the axis that was *not* normalised (column sums of A are not 1).
    """
    weights = torch.softmax(torch.matmul(x, x.transpose(1, 2)), dim=-1)  # [BT, L, L], rows sum to 1
    return torch.matmul(weights.transpose(1, 2), x)


class _BottleneckExpert(nn.Module):
    """Shared tail of both experts: LN_pre → down → BN → act → up → BN → LN_post → ·gate."""

    def __init__(self, dim: int, cfg: AVMoEConfig, gated: bool, relu: bool):
        super().__init__()
        hidden = _bottleneck_width(dim, cfg)
        self.ln_pre = nn.LayerNorm(dim) if cfg.pre_ln else nn.Identity()
        self.down = nn.Conv2d(dim, hidden, 1, groups=cfg.groups, bias=False)
        self.bn_down = nn.BatchNorm2d(hidden) if cfg.use_bn else nn.Identity()
        self.act = nn.ReLU() if relu else nn.Identity()
        self.up = nn.Conv2d(hidden, dim, 1, groups=cfg.groups, bias=False)
        self.bn_up = nn.BatchNorm2d(dim) if cfg.use_bn else nn.Identity()
        self.ln_post = nn.LayerNorm(dim) if cfg.post_ln else nn.Identity()
        if gated:
            self.gate = nn.Parameter(torch.zeros(1))
        else:
            self.register_parameter("gate", None)

    def bottleneck(self, x: Tensor) -> Tensor:
        """`[BT, L, C]` → `[BT, L, C]`."""
        z = self.ln_pre(x).transpose(1, 2).unsqueeze(-1)  # [BT, C, L, 1]
        z = self.act(self.bn_down(self.down(z)))  # [BT, C/r, L, 1]
        z = self.bn_up(self.up(z)).squeeze(-1).transpose(1, 2)  # [BT, L, C]
        z = self.ln_post(z)
        return z if self.gate is None else self.gate * z


class CrossModalExpert(_BottleneckExpert):
    """CMA (AVE-NET:315-337,379-405): latent tokens carry the other modality into x, then a ReLU bottleneck.

    x ← x + gate_av · latent_token_attention(Z, ŷ, x); return bottleneck(x).
    """

    def __init__(self, dim: int, cfg: AVMoEConfig, gated: bool):
        super().__init__(dim, cfg, gated, relu=True)
        self.latent = nn.Parameter(torch.rand(cfg.num_latent_tokens, dim))  # Z, U[0,1)
        self.gate_av = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor, other: Tensor) -> Tensor:
        x = x + self.gate_av * latent_token_attention(self.latent, other, x)
        return self.bottleneck(x)


class UnimodalExpert(_BottleneckExpert):
    """UA (AVE-NET:339-365,407-424): an optional self-attention step, then a *linear* bottleneck (no activation).

    `cfg.ua_attention`:
    * ``none`` (AVE, AVQA): nothing.
    * ``paramfree`` (AVVP): x ← x + gate_self · `paramfree_self_attention`(x); gate_self init 0 (authors: `gate_av`).
    * ``mhsa`` (AVS v1): x ← MHSA(x, x, x), 4 heads, dropout 0.2, *replacing* x (no residual, as the code). Attention
      runs over the L tokens of each frame. The authors call `nn.MultiheadAttention` (sequence-first) on `[BT, L, C]`,
      which attends across the BT frames of the whole batch per token position instead, so one video's output depends
      on the others in its batch; treated as a bug and fixed here (decisions D2), weights are interchangeable.
      `cfg.ua_mhsa_axis = "batch"` reproduces the authors' axis (`mhsa_over_batch`), for checkpoints trained with
      their code.
    * ``latent`` (AVS v2): x ← x + gate_self · latent_token_attention(Z, x, x), own Z ~ U[0,1), gate_self init 0.
    """

    def __init__(self, dim: int, cfg: AVMoEConfig, gated: bool):
        super().__init__(dim, cfg, gated, relu=False)
        self.attention = cfg.ua_attention
        if self.attention == "paramfree":
            self.gate_self = nn.Parameter(torch.zeros(1))
        elif self.attention == "mhsa":
            if dim % MHSA_HEADS:
                raise ConfigError(f"avmoe.ua_attention=mhsa needs channels divisible by {MHSA_HEADS}, got {dim}")
            if cfg.ua_mhsa_axis not in MHSA_AXES:
                raise ConfigError(f"avmoe.ua_mhsa_axis must be one of {', '.join(MHSA_AXES)}, got {cfg.ua_mhsa_axis!r}")
            self.mhsa_axis = cfg.ua_mhsa_axis
            self.mhsa = nn.MultiheadAttention(dim, MHSA_HEADS, dropout=MHSA_DROPOUT, batch_first=True)
        elif self.attention == "latent":
            self.latent = nn.Parameter(torch.rand(cfg.num_latent_tokens, dim))
            self.gate_self = nn.Parameter(torch.zeros(1))
        elif self.attention != "none":
            raise ConfigError(f"avmoe.ua_attention must be one of {', '.join(UA_ATTENTION)}, got {self.attention!r}")

    def forward(self, x: Tensor, other: Tensor | None = None) -> Tensor:
        # `other` is accepted (and ignored) so the mixture can call every expert alike.
        if self.attention == "paramfree":
            x = x + self.gate_self * paramfree_self_attention(x)
        elif self.attention == "mhsa" and self.mhsa_axis == "batch":
            x = mhsa_over_batch(self.mhsa, x)
        elif self.attention == "mhsa":
            x = self.mhsa(x, x, x, need_weights=False)[0]
        elif self.attention == "latent":
            x = x + self.gate_self * latent_token_attention(self.latent, x, x)
        return self.bottleneck(x)


def _bottleneck_width(dim: int, cfg: AVMoEConfig) -> int:
    """C // r (as the code), checked against the group count (both grouped convs need it to divide C and C/r)."""
    hidden = dim // cfg.reduction if cfg.reduction >= 1 else 0
    if hidden < 1:
        raise ConfigError(f"avmoe.reduction={cfg.reduction} leaves no bottleneck channels for {dim} channels")
    if cfg.groups < 1 or dim % cfg.groups or hidden % cfg.groups:
        raise ConfigError(
            f"avmoe.groups={cfg.groups} must divide both {dim} channels and the bottleneck width {hidden} "
            f"(= {dim} / reduction {cfg.reduction})"
        )
    return hidden
