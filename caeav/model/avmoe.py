"""AVMoE: the mixture-of-experts adapter Φ of P Eq. 11 (architecture.md §3; experts in `caeav.model.experts`).

The CAE-AV paper names the module Φ and uses it only from outside:

* P Eq. 11: v_moe = Φ_v(v_caste, a_caste), a_moe = Φ_a(a_caste, v_caste), i.e. `MoEAdapter(self=x, other=y)`;
* P Eq. 12-13: the output is added residually next to the frozen attention, v ← v + MHA(v) + v_moe (the caller's job;
  in the code there are two Φ per modality and block, p1 around attention and p2 around the MLP, architecture.md §2.5).

Its insides are AVMoE's (Cheng et al., NeurIPS 2024, reference [18] of the paper), as in the authors' code
(AVE-NET:446-489, AVVP-NET:156-227, AVS-NET:229-319):

1. Other-modality alignment, shared by all experts: token mixing ŷ' = W_tok y + b_tok (L_o → L_s, a 1×1 conv with
   tokens as channels, as the code) and a channel map ŷ = Linear(C_o → C_s)(ŷ').
2. Router: concat(mean_L x, mean_L ŷ) → Linear(2C_s, 128) → ReLU → Linear(128, 32) → ReLU → Linear(32, E) → softmax;
   one decision per frame; N(0, σ²) noise on the logits in training when `router_noise_std` σ > 0 (AVS).
3. Dense soft mixture of all E = num_cma + num_ua experts (CMA first, as the code): out = Σ_e p_e · expert_e(x, ŷ).
4. `load_balancing_loss` = E·KL(U ‖ mean_BT p), the gradient of the authors' per-call term (AVVP, AVS-MS3).

Export: no data-dependent control flow (branches depend on the config and on `self.training` only), the batch axis
only ever appears through broadcasting, experts are an unrolled static loop. The order of the two alignment products
is fixed at construction to whichever needs fewer multiply-adds (exact up to rounding, see `MoEAdapter.align`).
"""

from __future__ import annotations

import math
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from caeav.config import AVMoEConfig, ConfigError
from caeav.model.experts import CrossModalExpert, UnimodalExpert


class MoEAdapter(nn.Module):
    """Φ: x `[BT, L_s, C_s]` (self), y `[BT, L_o, C_o]` (other) → (residual `[BT, L_s, C_s]`, router probs `[BT, E]`).

    `gated`: every expert ends with a scalar gate initialised to 0, so the module outputs exactly 0 at init.
    The encoder passes True for visual adapters always and for audio adapters when `cfg.audio_gate`
    (AVE-NET:1161,1171).
    """

    def __init__(
        self, dim_self: int, tokens_self: int, dim_other: int, tokens_other: int, cfg: AVMoEConfig, gated: bool
    ):
        super().__init__()
        if cfg.num_cma < 0 or cfg.num_ua < 0 or cfg.num_cma + cfg.num_ua < 1:
            raise ConfigError(f"avmoe needs at least one expert, got num_cma={cfg.num_cma}, num_ua={cfg.num_ua}")
        self.num_experts = cfg.num_cma + cfg.num_ua
        self.router_noise_std = float(cfg.router_noise_std)
        # 1. alignment of the other modality onto the self tokens and channels
        self.token_mix = nn.Conv2d(tokens_other, tokens_self, 1)  # W_tok [L_s, L_o, 1, 1], b_tok [L_s]
        self.channel_map = nn.Linear(dim_other, dim_self)
        token_first = tokens_self * tokens_other * dim_other + tokens_self * dim_other * dim_self
        channel_first = tokens_other * dim_other * dim_self + tokens_self * tokens_other * dim_self
        self.channel_first = channel_first < token_first
        # 2. router
        widths = (2 * dim_self, *cfg.router_hidden, self.num_experts)
        layers: list[nn.Module] = []
        for i, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:])):
            layers += [nn.Linear(n_in, n_out)] + ([nn.ReLU()] if i < len(widths) - 2 else [])
        self.router = nn.Sequential(*layers)
        # 3. experts
        self.cma = nn.ModuleList(CrossModalExpert(dim_self, cfg, gated) for _ in range(cfg.num_cma))
        self.ua = nn.ModuleList(UnimodalExpert(dim_self, cfg, gated) for _ in range(cfg.num_ua))

    def align(self, y: Tensor) -> Tensor:
        """ŷ = Linear_{C_o→C_s}(W_tok y + b_tok): `[BT, L_o, C_o]` → `[BT, L_s, C_s]` (AVE-NET:470-472).

        Both products are linear, so they may run in either order; the bias of the token mixing then has to pass
        through the channel map: W(yFᵀ) + b_tok (F·1)ᵀ + b_fc equals the code's (Wy + b_tok 1ᵀ)Fᵀ + b_fc. The cheaper
        order was chosen at construction (channel map first for the audio adapters of AVE, where C_s < C_o).
        """
        w_tok, b_tok = self.token_mix.weight, self.token_mix.bias
        if not self.channel_first:
            y = F.conv2d(y.unsqueeze(-1), w_tok, b_tok).squeeze(-1)  # [BT, L_s, C_o]
            return self.channel_map(y)
        w_fc, b_fc = self.channel_map.weight, self.channel_map.bias
        y = F.linear(y, w_fc)  # [BT, L_o, C_s]
        y = F.conv2d(y.unsqueeze(-1), w_tok).squeeze(-1)  # [BT, L_s, C_s]
        return y + (b_tok[:, None] * w_fc.sum(dim=1) + b_fc)

    def route(self, x: Tensor, other: Tensor) -> Tensor:
        """Router probabilities `[BT, E]` from concat(mean_L x, mean_L ŷ) (AVE-NET:474-481, AVS-NET:296-298)."""
        logits = self.router(torch.cat([x.mean(dim=1), other.mean(dim=1)], dim=-1))
        if self.training and self.router_noise_std > 0:
            logits = logits + torch.randn_like(logits) * self.router_noise_std
        return torch.softmax(logits, dim=-1)

    def forward(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        other = self.align(y)
        probs = self.route(x, other)
        out = None
        for e, expert in enumerate([*self.cma, *self.ua]):
            term = probs[:, e, None, None] * expert(x, other)
            out = term if out is None else out + term
        return out, probs


def load_balancing_loss(probs: Tensor) -> Tensor:
    """E·KL(U ‖ p̄) = Σ_e (log(1/E) − log p̄_e), p̄ = mean of the router probabilities over frames (§3.1 item 3).

    `probs` `[BT, E]` → scalar; 0 iff p̄ is uniform. Scale, from the authors' code (AVVP-NET:223-227, AVS-NET:316-320):
    their router probabilities are shaped [BT, 1, E], so p̄ = mean over dim 0 is [1, E], `full_like(p̄, 1/p̄.size(0))`
    is 1.0 and `F.kl_div(p̄.log(), 1.0, reduction="batchmean")` divides by 1: their per-call value is

        L_authors = Σ_e 1·(log 1 − log p̄_e) = −Σ_e log p̄_e = E·KL(U ‖ p̄) + E·log E.

    E·log E is a constant, so ∇L_authors = ∇(E·KL(U ‖ p̄)) = the gradient of this function, and the task weight is
    the authors' own weight: AVVP 1 (`use_load_balacing_loss=1`, each of the 48 calls added with weight 1,
    AVVP-MAIN:77-79; E = 1 CMA + 1 UA), AVS-MS3 0.01 (`load_balancing_loss_weight=0.01`, avs_ms3/train_v2.sh;
    E = 2 CMA + 2 UA). The logged value is the authors' minus E·log E per call (0 at balance, not E·log E).
    """
    mean = probs.mean(dim=0)
    log_uniform = -math.log(mean.shape[-1])
    return (log_uniform - mean.clamp_min(torch.finfo(mean.dtype).tiny).log()).sum()


# Official AVMoE/CAE-AV `MoEAdapter` key pieces → ours (module-relative keys, applied in this order).
_OFFICIAL_KEYS = (
    ("conv_adapter.", "token_mix."),
    ("fc.", "channel_map."),
    ("multimodal_experts.", "cma."),
    ("singlemodal_experts.", "ua."),
    (".my_tokens", ".latent"),
    (".down_sampler.", ".down."),
    (".up_sampler.", ".up."),
    (".bn1.", ".bn_down."),
    (".bn2.", ".bn_up."),
    (".ln_before.", ".ln_pre."),
    (".self_attention.", ".mhsa."),
)


def convert_official_state_dict(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename one official `MoEAdapter` state dict (keys relative to that module) to this module's keys.

    Shapes are unchanged (both use 1×1 Conv2d weights). The unimodal expert's self-attention gate is `gate_av` in
    AVVP and `gate_self` in AVS; both become `ua.i.gate_self`. AVS v1 MHSA weights load; they attend over tokens
    unless the config sets `avmoe.ua_mhsa_axis=batch`, the authors' axis (see `UnimodalExpert`).
    """
    out = {}
    for key, value in state.items():
        new = key
        for old, ours in _OFFICIAL_KEYS:
            if old.startswith("."):  # a piece inside an expert
                new = new.replace(old, ours, 1)
            elif new.startswith(old):  # a top-level submodule
                new = ours + new[len(old):]
        if new.startswith("ua.") and new.endswith(".gate_av"):
            new = new[: -len("gate_av")] + "gate_self"
        out[new] = value
    return out
