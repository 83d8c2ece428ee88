"""CASE: caption-aligned saliency-guided enrichment after the backbones (P Eq. 17-21, architecture.md §6).

Follows the authors' code (decisions D1; AVE-NET:592-781). Inputs: v `[BT, L_v, C_v]`, a `[BT, L_a, C_a]` (last-stage
backbone tokens, rows video-major) and the projected captions v_cap `[B, L_c, C_v]`, a_cap `[B, L_c, C_a]`
(`captions.py`, one per clip). Steps (§6):

1. v0, a0 = v, a.
2. Self-attention on the four streams (`sa_v`, `sa_a`, `sa_vcap`, `sa_acap`).
3. Caption cross-attention, backbone tokens as queries, captions as keys/values (`ca_v_qcap`, `ca_a_qcap`).
4. Cross-modal refinement (P Eq. 17-18): v̂ = Att(v, W^{v←a} a), â = Att(a, W^{a←v} v), both from step-3 outputs.
5. v̄ = TDW_v(FFN_v(v̂)), ā = TDW_a(FFN_a(â)) (P: v̄ = T_v(v̂)); captions: FFN_vcap, FFN_acap.
6. Frame gates g = σ(cos(mean_L v̄, mean_Lc v̄_cap)) (P Eq. 19), without gradient.
7. Token masks M from `GumbelTopK` on ‖v̄_i‖², ‖ā_i‖² (one module, one learnable temperature, shared by v and a).
8. v_case = LN(v0 + g·M·v̄ + (1−g)·v̄), a_case likewise (P Eq. 20-21, code form).
9. Projection heads for the losses (P Eq. 22-23): P_v, P_a on mean_L of v_case, a_case; P_vc, P_ac on mean_Lc of the
   step-5 captions; learnable InfoNCE temperature τ (init 0.2).

Where the authors' code (and so this module) differs from the paper (architecture.md §9 items 7-13):
* backbone tokens are the queries of the caption cross-attention; the extra FFNs (v, a and both captions) are not in
  the paper (§9.7);
* TDW has no residual: v̄ = LN(PW(DW(FFN(v̂)))) (§9.8);
* the frame gate has no gradient and uses the CASE-processed captions, not v_cap of Eq. 19 (§9.9);
* selection is a Gumbel-softmax soft mask renormalised over the kept tokens in training and a 1/K hard mask in eval,
  not binary Top-K masks (§9.10);
* injection is LN(v0 + g·M·v̄ + (1−g)·v̄): no learnable γ_v, every token gets (1−g)·v̄, a LayerNorm on the sum, and
  LN(v̄) of Eq. 20 is not re-applied (v̄ already leaves a LayerNorm) (§9.11);
* the caption projections of the losses use the CASE-processed captions (§9.12); τ is learnable (§9.13).

Where we differ from the authors' code, with the same numbers (decisions D8): the caption branch (steps 2, 5, 9) runs
once per clip on `[B, ...]`; step 3 shares each clip's caption keys/values by folding the clip's T frames into one
query row, and the gate of step 6 broadcasts over T. K is static per stream: K = max(1, int(ratio·L)) from the
constructor's token counts (TensorRT TopK; the authors compute the same value at run time).

Paper size (C_v 1536, C_a 768, L_v 36, L_a 64, proj 512, 8 heads): 78,559,234 parameters.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from caeav.config import CASEConfig
from caeav.model.blocks import AttentionBlock, FeedForwardBlock, conv_over_time

TEMPORAL_KERNEL = 3  # TDW kernel along time (AVE-NET:705-706)


def static_topk(ratio: float, tokens: int) -> int:
    """K = max(1, int(ratio·L)), the authors' rounding (floor for positive values)."""
    return max(1, int(tokens * ratio))


class GumbelTopK(nn.Module):
    """Token selection for the injection (P "Top-K per frame"; code semantics, AVE-NET:614-651; §9.10).

    Saliency s_i = ‖x_i‖² over channels. forward(x `[N, L, C]`, k) → (mask `[N, L, 1]`, prob `[N, L]` or None).
    * training: p = softmax((s + G) / max(τ_g, 1e-3)), G ~ Gumbel(0, 1) i.i.d.; keep the tokens with p ≥ the K-th
      largest p (threshold detached); mask = p·keep / Σ(p·keep) (sums to 1 per frame); returns p for the entropy term (Eq. 24).
    * eval: hard top-K of s (no noise), mask = 1/K on the K kept tokens, 0 elsewhere; prob None. Static K, TopK +
      ScatterElements in ONNX, no data-dependent control flow.
    """

    def __init__(self, tau: float = 1.0):
        super().__init__()
        self.tau = nn.Parameter(torch.tensor(float(tau)))  # learnable Gumbel temperature τ_g

    def forward(self, x: Tensor, k: int) -> tuple[Tensor, Optional[Tensor]]:
        saliency = x.pow(2).sum(dim=-1)  # [N, L]
        if self.training:
            gumbel = -torch.empty_like(saliency).exponential_().log()
            prob = torch.softmax((saliency + gumbel) / self.tau.clamp(min=1e-3), dim=-1)
            threshold = prob.topk(k, dim=-1).values[:, -1:].detach()
            kept = prob * (prob >= threshold).to(prob.dtype)
            mask = kept / kept.sum(dim=-1, keepdim=True).clamp(min=1e-6)
            return mask.unsqueeze(-1), prob
        index = saliency.topk(k, dim=-1).indices  # [N, K]
        mask = torch.zeros_like(saliency).scatter(-1, index, 1.0 / k)
        return mask.unsqueeze(-1), None


class TemporalDWConv(nn.Module):
    """TDW(x) = LN(PW(DW(x))) along the T frames of each clip; no residual (§9.8; AVE-NET:654-672).

    DW = depthwise Conv1d (kernel 3, zero padding 1, bias), PW = 1×1 Conv1d (bias). The "depthwise separable temporal
    convolution" T of P Eq. 7 as CASE uses it after Eq. 17-18.
    """

    def __init__(self, dim: int, kernel_size: int = TEMPORAL_KERNEL):
        super().__init__()
        self.dw = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.pw = nn.Conv1d(dim, dim, 1)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, segments: int) -> Tensor:  # x: [BT, L, C]
        return self.norm(conv_over_time(x, segments, self.dw, self.pw))


def _projection_head(dim: int, proj_dim: int) -> nn.Sequential:
    """LN + Linear(dim→proj) (the authors' `proj_*`; P: projection heads P_v, P_a, P_vc, P_ac of Eq. 22-23)."""
    return nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, proj_dim))


def _per_frame(x: Tensor, segments: int) -> Tensor:
    """`[B, ...]` → `[BT, ...]`, each clip's row repeated for its T frames (expand, no copy until needed)."""
    return x.unsqueeze(1).expand(-1, segments, *x.shape[1:]).flatten(0, 1)


def _frame_gate(x: Tensor, cap: Tensor, segments: int) -> Tensor:
    """g = σ(cos(mean_L x, mean_Lc cap)) per frame, no gradient (P Eq. 19; §9.9). x `[BT,L,C]`, cap `[B,Lc,C]`."""
    frames = F.normalize(x.detach().mean(dim=1), dim=-1).unflatten(0, (-1, segments))  # [B, T, C]
    clips = F.normalize(cap.detach().mean(dim=1), dim=-1).unsqueeze(1)  # [B, 1, C]
    return torch.sigmoid((frames * clips).sum(dim=-1)).reshape(-1, 1, 1)  # [BT, 1, 1]


class CASE(nn.Module):
    """Caption-aligned saliency-guided enrichment (P Eq. 17-21); see the module docstring for the steps.

    forward(v `[BT,L_v,C_v]`, a `[BT,L_a,C_a]`, v_cap `[B,L_c,C_v]`, a_cap `[B,L_c,C_a]`, segments T)
      → (v_case `[BT,L_v,C_v]`, a_case `[BT,L_a,C_a]`, aux) with aux = {Pv, Pa, Pvcap, Pacap: `[BT, proj]` (caption
      rows repeated over each clip's T frames), prob_v `[BT,L_v]`, prob_a `[BT,L_a]` (training only, else None),
      mask_v `[BT,L_v,1]`, mask_a `[BT,L_a,1]` (the injection masks), tau (the InfoNCE temperature parameter)}.
    """

    def __init__(self, dim_v: int, dim_a: int, tokens_v: int, tokens_a: int, cfg: CASEConfig):
        super().__init__()
        self.k_v = static_topk(cfg.topk_ratio, tokens_v)
        self.k_a = static_topk(cfg.topk_ratio, tokens_a)

        def att(dim: int) -> AttentionBlock:
            return AttentionBlock(dim, cfg.heads, attn_dropout=cfg.attn_dropout, dropout=cfg.dropout)

        self.sa_v, self.sa_a = att(dim_v), att(dim_a)  # step 2: self-attention
        self.sa_vcap, self.sa_acap = att(dim_v), att(dim_a)
        self.ca_v_qcap, self.ca_a_qcap = att(dim_v), att(dim_a)  # step 3: q = backbone tokens, kv = caption
        self.ca_vqa, self.ca_aqv = att(dim_v), att(dim_a)  # step 4: P Eq. 17-18
        self.ffn_v, self.ffn_a = FeedForwardBlock(dim_v, cfg.dropout), FeedForwardBlock(dim_a, cfg.dropout)
        self.ffn_vcap, self.ffn_acap = FeedForwardBlock(dim_v, cfg.dropout), FeedForwardBlock(dim_a, cfg.dropout)
        self.topk = GumbelTopK(cfg.gumbel_tau_init)
        self.linear_v_from_a = nn.Linear(dim_a, dim_v)  # W^{v←a}
        self.linear_a_from_v = nn.Linear(dim_v, dim_a)  # W^{a←v}
        self.proj_v, self.proj_a = _projection_head(dim_v, cfg.proj_dim), _projection_head(dim_a, cfg.proj_dim)
        self.proj_vcap, self.proj_acap = _projection_head(dim_v, cfg.proj_dim), _projection_head(dim_a, cfg.proj_dim)
        self.tau = nn.Parameter(torch.tensor(float(cfg.tau_init)))  # InfoNCE temperature (§9.13)
        self.tmp_v, self.tmp_a = TemporalDWConv(dim_v), TemporalDWConv(dim_a)
        self.norm_v, self.norm_a = nn.LayerNorm(dim_v), nn.LayerNorm(dim_a)

    @staticmethod
    def _cross_caption(block: AttentionBlock, x: Tensor, cap: Tensor, segments: int) -> Tensor:
        """Step 3 per frame with one caption per clip: fold the T frames of a clip into one query row
        `[B, T·L, C]` against the clip's caption keys `[B, L_c, C]` (each query's softmax is over the same keys, so this
        equals repeating the caption T times; D8)."""
        L = x.shape[1]
        out = block(x.unflatten(0, (-1, segments)).flatten(1, 2), cap)  # [B, T·L, C]
        return out.unflatten(1, (segments, L)).flatten(0, 1)  # [BT, L, C]

    def forward(self, v: Tensor, a: Tensor, v_cap: Tensor, a_cap: Tensor, segments: int):
        v0, a0 = v, a
        # step 2: intra-modal self-attention; captions once per clip
        v, a = self.sa_v(v), self.sa_a(a)
        v_cap, a_cap = self.sa_vcap(v_cap), self.sa_acap(a_cap)
        # step 3: caption cross-attention (backbone tokens are the queries)
        v = self._cross_caption(self.ca_v_qcap, v, v_cap, segments)
        a = self._cross_caption(self.ca_a_qcap, a, a_cap, segments)
        # step 4: cross-modal refinement, P Eq. 17-18, both from the step-3 outputs
        v, a = self.ca_vqa(v, self.linear_v_from_a(a)), self.ca_aqv(a, self.linear_a_from_v(v))
        # step 5: FFN + temporal consolidation (v̄, ā); caption FFNs
        v, a = self.tmp_v(self.ffn_v(v), segments), self.tmp_a(self.ffn_a(a), segments)
        v_cap, a_cap = self.ffn_vcap(v_cap), self.ffn_acap(a_cap)
        # step 6: frame gates (P Eq. 19), step 7: token masks, step 8: injection (P Eq. 20-21, code form)
        g_v, g_a = _frame_gate(v, v_cap, segments), _frame_gate(a, a_cap, segments)
        mask_v, prob_v = self.topk(v, self.k_v)
        mask_a, prob_a = self.topk(a, self.k_a)
        v_case = self.norm_v(v0 + g_v * v * mask_v + (1 - g_v) * v)
        a_case = self.norm_a(a0 + g_a * a * mask_a + (1 - g_a) * a)
        # step 9: projections for the losses (P Eq. 22-23)
        aux = {
            "Pv": self.proj_v(v_case.mean(dim=1)),
            "Pa": self.proj_a(a_case.mean(dim=1)),
            "Pvcap": _per_frame(self.proj_vcap(v_cap.mean(dim=1)), segments),
            "Pacap": _per_frame(self.proj_acap(a_cap.mean(dim=1)), segments),
            "prob_v": prob_v, "prob_a": prob_a, "mask_v": mask_v, "mask_a": mask_a, "tau": self.tau,
        }
        return v_case, a_case, aux
