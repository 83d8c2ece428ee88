"""CAE-AV auxiliary losses (P Eq. 22-25; architecture.md §8.1, decisions D7).

The authors' code returns the quantities (CASE's `aux`) but not the losses; these follow the paper. Every function takes
per-frame rows, flattened video-major: row i is frame i mod T of video i // T (N = B·T rows).

* `caption_infonce` (P Eq. 22): one direction, modality → caption, with the *within-video negatives removed*: for row
  i the softmax runs over its own caption row (the positive) and every caption row of *other* videos. With one video in
  the batch there are no negatives and the loss is exactly 0. The temperature is CASE's learnable τ, clamped ≥ τ_min
  (not in the paper or the code; §9.13).
* `va_consistency` (P Eq. 23): 1 − mean_i ⟨ẑ_v,i, ẑ_a,i⟩.
* `entropy_term` (P Eq. 24): L_ent = −mean_i (H(p_v,i) + H(p_a,i)), p = CASE's Gumbel-softmax selection distributions
  (training only). `LossConfig.entropy_sign = "literal"` (default) keeps the sign of Eq. 24, whose minimisation *raises*
  the entropy; `"sharpen"` flips it (+H) to match the text's "encourage sharper Top-K selections" (§9.14).
* `gamma_at` (the staged γ of Eq. 25, D7): epochs are **0-based** (the first epoch is epoch 0). γ = 0 for epochs
  0 … Z−1 (Z = `gamma_zero_epochs`), then rises linearly and reaches the target at epoch Z + R − 1
  (R = `gamma_ramp_epochs`): γ(e) = γ_target · min(1, (e − Z + 1) / R). R = 0 jumps to the target at epoch Z.
* `total_loss` (P Eq. 25): L = L_task (+ LB) + α(L_cap^v + L_cap^a) + β L_va + γ(epoch) L_ent.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from caeav.config import LossConfig

ENTROPY_SIGNS = {"literal": -1.0, "sharpen": 1.0}  # L_ent = sign · mean_i (H(p_v,i) + H(p_a,i))


def caption_infonce(z: Tensor, z_cap: Tensor, tau: Tensor, segments: int, tau_min: float = 0.01) -> Tensor:
    """P Eq. 22: −mean_i log[exp(⟨ẑ_i, ĉ_i⟩/τ) / Σ_{j ∈ N(i) ∪ {i}} exp(⟨ẑ_i, ĉ_j⟩/τ)], N(i) = rows of other videos.

    z, z_cap `[N, D]` (frame projections and caption projections, per frame); tau a scalar tensor (learnable);
    segments = T (N must be a multiple of T).
    """
    n = z.shape[0]
    if n % segments:
        raise ValueError(f"{n} rows are not a whole number of {segments}-frame videos")
    logits = F.normalize(z, dim=-1) @ F.normalize(z_cap, dim=-1).t() / tau.clamp(min=tau_min)  # [N, N]
    rows = torch.arange(n, device=z.device)
    video = rows // segments
    same_video_other_frame = (video[:, None] == video[None, :]) & (rows[:, None] != rows[None, :])
    logits = logits.masked_fill(same_video_other_frame, float("-inf"))
    return F.cross_entropy(logits, rows)


def va_consistency(z_v: Tensor, z_a: Tensor) -> Tensor:
    """P Eq. 23: 1 − mean_i ⟨ẑ_v,i, ẑ_a,i⟩ (same frame, cosine similarity)."""
    return 1 - (F.normalize(z_v, dim=-1) * F.normalize(z_a, dim=-1)).sum(dim=-1).mean()


def entropy(p: Tensor) -> Tensor:
    """H(p) = −Σ_i p_i log p_i over the last axis (p clamped ≥ 1e-12 inside the log)."""
    return -(p * p.clamp(min=1e-12).log()).sum(dim=-1)


def entropy_term(prob_v: Optional[Tensor], prob_a: Optional[Tensor], sign: str = "literal") -> Tensor:
    """P Eq. 24 with the configured sign: literal = −mean_i (H(p_v,i) + H(p_a,i)), sharpen = +mean_i (...).

    prob_v `[N, L_v]`, prob_a `[N, L_a]`; None (CASE in eval mode) gives 0.
    """
    if sign not in ENTROPY_SIGNS:
        raise ValueError(f"loss.entropy_sign must be one of {', '.join(ENTROPY_SIGNS)}, got {sign!r}")
    if prob_v is None or prob_a is None:
        ref = prob_v if prob_v is not None else prob_a
        return torch.zeros((), device=None if ref is None else ref.device)
    return ENTROPY_SIGNS[sign] * (entropy(prob_v) + entropy(prob_a)).mean()


def gamma_at(epoch: int, cfg: LossConfig) -> float:
    """Entropy weight γ at 0-based `epoch`: 0 for the first `gamma_zero_epochs` epochs, then a linear ramp that reaches
    `cfg.gamma` after `gamma_ramp_epochs` epochs (the first ramp epoch already has γ/R)."""
    if epoch < cfg.gamma_zero_epochs:
        return 0.0
    if cfg.gamma_ramp_epochs <= 0:
        return float(cfg.gamma)
    return float(cfg.gamma) * min(1.0, (epoch - cfg.gamma_zero_epochs + 1) / cfg.gamma_ramp_epochs)


def total_loss(task_loss: Tensor, aux: Optional[dict], loss_cfg: LossConfig, epoch: int, segments: int,
               lb: Optional[Tensor] = None) -> tuple[Tensor, dict]:
    """P Eq. 25: L = L_task (+ lb) + α(L_cap^v + L_cap^a) + β L_va + γ(epoch) L_ent.

    aux: CASE's aux dict (Pv, Pa, Pvcap, Pacap `[BT, proj]`, prob_v, prob_a, tau). lb: the load-balancing term, already
    weighted by the task's `avmoe.lb_weight` (None = unused). epoch: 0-based (see `gamma_at`).
    Returns (total, components) with detached components: task, lb, cap_v, cap_a, va, ent, gamma, total. With `aux`
    None (the AVMoE baseline has no CASE) the CASE terms are zero: L = L_task (+ lb).
    """
    if aux is None:
        zero = torch.zeros((), device=task_loss.device)
        lb_term = zero if lb is None else lb
        total = task_loss + lb_term
        parts = {"task": task_loss, "lb": lb_term, "cap_v": zero, "cap_a": zero, "va": zero, "ent": zero,
                 "total": total}
        return total, {**{k: v.detach() for k, v in parts.items()}, "gamma": gamma_at(epoch, loss_cfg)}
    tau = aux["tau"]
    cap_v = caption_infonce(aux["Pv"], aux["Pvcap"], tau, segments, loss_cfg.tau_min)
    cap_a = caption_infonce(aux["Pa"], aux["Pacap"], tau, segments, loss_cfg.tau_min)
    va = va_consistency(aux["Pv"], aux["Pa"])
    ent = entropy_term(aux.get("prob_v"), aux.get("prob_a"), loss_cfg.entropy_sign).to(task_loss.device)
    gamma = gamma_at(epoch, loss_cfg)
    lb_term = torch.zeros((), device=task_loss.device) if lb is None else lb
    total = task_loss + lb_term + loss_cfg.alpha * (cap_v + cap_a) + loss_cfg.beta * va + gamma * ent
    parts = {"task": task_loss, "lb": lb_term, "cap_v": cap_v, "cap_a": cap_a, "va": va, "ent": ent, "total": total}
    components = {name: value.detach() for name, value in parts.items()}
    components["gamma"] = gamma
    return total, components
