"""AVVP head: MGN, the Multi-modal Grouping Network (architecture.md §7.2; AVVP-NET:785-872, 1150-1199; GRP).

Origin: Mo & Tian, NeurIPS 2022 (blocks in `caeav.model.heads.grouping`). Inputs are the pooled CASE features
f_a `[B, T, C_a]`, f_v `[B, T, C_v]` (`paper`: 768 / 1536) and, when `st_dim` > 0, precomputed R(2+1)D-18 clip features
st `[B, T, st_dim]` (the official model uses them; `st_dim` = 0 drops that branch and x2_0 = Linear(C_v→dim)(f_v)).

    x1_0 = Linear(C_a→d)(f_a);  x2_0 = Linear(2d→d)(concat(Linear(C_v→d)(f_v), Linear(st→d)(st)))
    x2, A_v = visual_cug(x2_0, visual_token)             (depth_vis blocks)
    x1, A_a = audio_cug(x1_0, audio_token, x_other=x2_0)  (depth_aud blocks + HAN over the visual segments)
    x, _    = av_mcg(x1, groups=x2)                      (depth_av blocks)
    global_prob = σ(Linear(d→1)(x)), a_prob = σ(Linear(d→1)(x1)), v_prob = σ(Linear(d→1)(x2))   [B, C]
    a_frame_prob = (a_prob ⊙ A_a)ᵀ, v_frame_prob = (v_prob ⊙ A_v)ᵀ                             [B, T, C]
    aud_cls, vis_cls = Linear(d→C)(audio_token), Linear(d→C)(visual_token)                    [C, C]

A is the assignment of the grouping block selected by `unimodal_assign` (soft: values in (1, 2), so frame
probabilities can exceed the video-level ones, as in the authors' code). Class tokens start at 0; every Linear
~ truncated N(0, 0.02²), bias 0 (MGN's init). Decisions D2: any batch size (the authors' pooling permute only worked
for B = 1; here the caller passes proper `[B, T, ·]` tensors).

Loss (AVVP-MAIN:47-79): probabilities clamped to [1e-7, 1 − 1e-7];
    L = BCE(global_prob, y) + BCE(a_prob, s_a·y + (1−s_a)/2) + BCE(v_prob, s_v·y + (1−s_v)/2)
        + CE(aud_cls, arange C) + CE(vis_cls, arange C),          s_a = 1.0, s_v = 0.9 (label smoothing of v).
The AVMoE load-balancing term (weight 1 for AVVP) belongs to the encoder's adapters and is added by the caller.
Prediction: `caeav.model.heads.postprocess_avvp` (numpy) and `AVVPHead.predict` (torch), same rule.
"""

from __future__ import annotations

from typing import Mapping, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from caeav.config import ConfigError, TaskConfig
from caeav.model.heads.grouping import ModalityTrans, init_mgn_weights
from caeav.model.heads.head_config import head_options
from caeav.model.heads.postprocess_avvp import AVVP_THRESHOLD

AVVP_HEAD_DEFAULTS = {
    "dim": 128,
    "depth_aud": 3,
    "depth_vis": 3,
    "depth_av": 6,
    "heads": 8,
    "mlp_ratio": 4.0,
    "drop_path": 0.1,
    "st_dim": 512,
    "unimodal_assign": "soft",
    "crossmodal_assign": "soft",
    "gumbel_tau": 1.0,
    "smooth_a": 1.0,
    "smooth_v": 0.9,
}
PROB_EPS = 1e-7


class AVVPHead(nn.Module):
    """MGN head. forward(f_a, f_v, st=None) → dict of named tensors (module docstring)."""

    kind = "mgn"
    # the outputs an inference graph needs (aud_cls / vis_cls do not depend on the input)
    export_outputs = ("global_prob", "a_prob", "v_prob", "a_frame_prob", "v_frame_prob")

    def __init__(self, dim_v: int, dim_a: int, cfg: TaskConfig):
        super().__init__()
        o = head_options(cfg.head, AVVP_HEAD_DEFAULTS, self.kind)
        for key in ("unimodal_assign", "crossmodal_assign"):
            if o[key] not in ("soft", "hard"):
                raise ConfigError(f"task.head.{key} must be 'soft' or 'hard', got {o[key]!r}")
        d, classes, segments = int(o["dim"]), int(cfg.num_classes), int(cfg.segments)
        self.options, self.num_classes, self.segments = o, classes, segments
        self.st_dim = int(o["st_dim"])
        self.fc_a = nn.Linear(dim_a, d)
        self.fc_v = nn.Linear(dim_v, d)
        if self.st_dim > 0:
            self.fc_st = nn.Linear(self.st_dim, d)
            self.fc_fusion = nn.Linear(2 * d, d)
        self.audio_token = nn.Parameter(torch.zeros(classes, d))
        self.visual_token = nn.Parameter(torch.zeros(classes, d))
        uni_hard, cross_hard = o["unimodal_assign"] == "hard", o["crossmodal_assign"] == "hard"
        common = dict(dim=d, heads=int(o["heads"]), num_group_tokens=classes, num_output_groups=classes,
                      mlp_ratio=float(o["mlp_ratio"]), drop_path=float(o["drop_path"]),
                      gumbel_tau=float(o["gumbel_tau"]))
        self.audio_cug = ModalityTrans(depth=int(o["depth_aud"]), hard=uni_hard, han_tokens=segments, **common)
        self.visual_cug = ModalityTrans(depth=int(o["depth_vis"]), hard=uni_hard, **common)
        self.av_mcg = ModalityTrans(depth=int(o["depth_av"]), hard=cross_hard, **common)
        self.fc_prob = nn.Linear(d, 1)
        self.fc_prob_a = nn.Linear(d, 1)
        self.fc_prob_v = nn.Linear(d, 1)
        self.fc_cls = nn.Linear(d, classes)
        self.apply(init_mgn_weights)

    def forward(self, f_a: Tensor, f_v: Tensor, st: Optional[Tensor] = None) -> dict:
        """f_a `[B, T, C_a]`, f_v `[B, T, C_v]`, st `[B, T, st_dim]` (only when st_dim > 0)."""
        x1_0 = self.fc_a(f_a)
        x2_0 = self.fc_v(f_v)
        if self.st_dim > 0:  # configuration, not data
            if st is None:
                raise ValueError(f"this AVVP head fuses R(2+1)D features (st_dim={self.st_dim}): "
                                 f"pass st [B, T, {self.st_dim}]")
            x2_0 = self.fc_fusion(torch.cat([x2_0, self.fc_st(st)], dim=-1))
        x2, attn_v = self.visual_cug(x2_0, self.visual_token)
        x1, attn_a = self.audio_cug(x1_0, self.audio_token, x2_0)
        x, _ = self.av_mcg(x1, x2)
        a_prob = torch.sigmoid(self.fc_prob_a(x1))  # [B, C, 1]
        v_prob = torch.sigmoid(self.fc_prob_v(x2))
        return {
            "global_prob": torch.sigmoid(self.fc_prob(x)).squeeze(-1),  # [B, C]
            "a_prob": a_prob.squeeze(-1),
            "v_prob": v_prob.squeeze(-1),
            "a_frame_prob": (a_prob * attn_a).transpose(1, 2),  # [B, T, C]
            "v_frame_prob": (v_prob * attn_v).transpose(1, 2),
            "aud_cls": self.fc_cls(self.audio_token),  # [C, C]
            "vis_cls": self.fc_cls(self.visual_token),
        }

    def loss(self, outputs: Mapping[str, Tensor], batch: Mapping[str, Tensor]) -> dict:
        """MGN loss (module docstring). batch["labels"]: weak video-level labels `[B, C]` (multi-hot); with
        `task.train.av_shuffle` also "labels_audio" / "labels_visual" (`caeav.train.augment`)."""
        return avvp_loss(outputs, batch["labels"], self.options["smooth_a"], self.options["smooth_v"],
                         batch.get("labels_audio"), batch.get("labels_visual"))

    @staticmethod
    def predict(outputs: Mapping[str, Tensor], threshold: float = AVVP_THRESHOLD) -> dict:
        """Torch version of `postprocess_avvp.avvp_predict`: {"video" [B,C], "audio"/"visual"/"av" [B,C,T]} int64."""
        video = outputs["global_prob"] >= threshold
        audio = ((outputs["a_frame_prob"] >= threshold) & video[:, None, :]).transpose(1, 2)
        visual = ((outputs["v_frame_prob"] >= threshold) & video[:, None, :]).transpose(1, 2)
        return {"video": video.long(), "audio": audio.long(), "visual": visual.long(), "av": (audio & visual).long()}


def avvp_loss(outputs: Mapping[str, Tensor], labels: Tensor, smooth_a: float = 1.0, smooth_v: float = 0.9,
              labels_audio: Optional[Tensor] = None, labels_visual: Optional[Tensor] = None) -> dict:
    """{"loss": total, "av", "a", "v", "cls_a", "cls_v"}; computed in float32 (BCE is not autocast-safe). The audio
    and visual terms take `labels_audio` / `labels_visual` where given (audio-visual shuffling), else `labels`."""
    y = labels.float()
    y_a = y if labels_audio is None else labels_audio.float()
    y_v = y if labels_visual is None else labels_visual.float()
    probs = {k: outputs[k].float().clamp(PROB_EPS, 1.0 - PROB_EPS) for k in ("global_prob", "a_prob", "v_prob")}
    classes = outputs["aud_cls"].shape[0]
    target = torch.arange(classes, device=y.device)
    terms = {
        "av": F.binary_cross_entropy(probs["global_prob"], y),
        "a": F.binary_cross_entropy(probs["a_prob"], smooth_a * y_a + (1.0 - smooth_a) * 0.5),
        "v": F.binary_cross_entropy(probs["v_prob"], smooth_v * y_v + (1.0 - smooth_v) * 0.5),
        "cls_a": F.cross_entropy(outputs["aud_cls"].float(), target),
        "cls_v": F.cross_entropy(outputs["vis_cls"].float(), target),
    }
    return {"loss": sum(terms.values()), **terms}
