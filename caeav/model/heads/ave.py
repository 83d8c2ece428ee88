"""AVE head: audio-visual event localisation from the pooled CASE features (architecture.md §7.1, decisions D7).

Input f_v `[B, T, C_v]`, f_a `[B, T, C_a]` (T = 10 one-second segments). Two kinds, chosen by `cfg.task.head.kind`:

* `"cmbs"` (default; what the authors ran for their numbers, `is_cmbs=1`, `is_temporal_att=1`, `is_inter_in_cmbs=0`):
  `TemporalAttention` (`caeav.model.heads.temporal_attention`) → video_q, audio_q `[B, T, d]` → `CMBS`:
  - class activation per modality: Linear(d→28) per segment; per video the mean of the top-4 segment scores per class
    → score_v, score_a `[B, 28]`; av_score = (score_v + score_a) / 2;
  - fused = (video_q + audio_q) / 2; is_event = Linear(d→1)(fused) `[B, T]` (per-segment event logit);
    event = Linear(d→28)(max_t fused) + 0.3 · av_score `[B, 28]` (one class per video).
  Outputs {"is_event" `[B, T]`, "event" `[B, 28]`, "av_score" `[B, 28]`}.
  Loss (AVE-MAIN:116-128): BCEWithLogits(is_event, y_seg) + CE(event, c) + CE(av_score, c), y_seg = 1 on foreground
  segments, c = the clip's event class (the largest per-segment foreground class index over time, as the authors
  derive it; AVE clips have one event class).
* `"mlp"` (the paper's description, App. B-C): concat(f_v, f_a) → Linear(C_v+C_a → 512) → Linear(512 → 29) per
  segment, no activation in between (as the authors' `is_cmbs=0` branch; `mlp_activation: "relu"` inserts one).
  Output {"segment_logits" `[B, T, 29]`}. Loss: cross-entropy over the 29 segment labels (`mlp_loss: "ce"`); the
  authors' BCEWithLogits applied to the *softmax* of the logits against one-hot labels is `mlp_loss: "bce_softmax"`.
  (The authors' script trains these two linears at lr_mlp = 5e-6, not the adapters' lr.)

Prediction (`predict`, mirrored in numpy by `caeav.model.heads.postprocess.ave_predict`): per-segment label in 0..28 =
argmax(event) if σ(is_event) > 0.5 else 28 (background); for the MLP head argmax over the 29 logits.

Labels in `batch["labels"]`: `[B, T, 29]` one-hot per segment (the authors' `labels.h5` rows, column 28 =
background) or `[B, T]` integer labels in 0..28.

Parameter names follow the authors' (`temporal_attn.*`, `CMBS.localize_module.*`, `CMBS.audio_cas`, `mlp_class`, ...)
so their head weights load under the same keys. No data-dependent control flow in forward (ONNX, dynamic batch).
"""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from caeav.config import ConfigError, TaskConfig
from caeav.model.heads.head_config import head_options
from caeav.model.heads.temporal_attention import TemporalAttention

AVE_HEAD_KINDS = ("cmbs", "mlp")  # `kind` (default cmbs) picks one; the defaults below serve both
AVE_HEAD_DEFAULTS = {
    # TemporalAttention + CMBS (architecture.md §7.1)
    "dim": 256,  # d_model of TemporalAttention and CMBS
    "video_fc_dim": 512,
    "audio_fc_dim": 128,
    "heads": 4,
    "ffn_dim": 1024,
    "encoder_layers": 2,
    "decoder_layers": 1,
    "dropout": 0.1,  # inside the transformer layers
    "feature_dropout": 0.2,  # after ReLU(Linear(C_v→512))
    "gate_gamma": 0.1,  # video_q·(1 + γ·g_a)
    "cas_topk": 4,  # segments averaged per class in the class-activation scores
    "av_score_weight": 0.3,  # event = Linear(max_t fused) + w·av_score
    "keep_unused_layers": True,  # register the authors' never-called layers (parameter count of §10, strict loading)
    # two-layer MLP (paper App. B-C)
    "mlp_hidden": 512,
    "mlp_activation": "none",  # none (authors' code) | relu
    "mlp_loss": "ce",  # ce | bce_softmax (authors' code)
}


class CMBS(nn.Module):
    """Cross-modal background suppression scores (CMBS paper; AVE-NET:258-295, 115-137). Inputs `[B, T, d]` each."""

    def __init__(self, dim: int, num_events: int = 28, topk: int = 4, av_score_weight: float = 0.3):
        super().__init__()
        self.topk = topk
        self.av_score_weight = av_score_weight
        self.localize_module = nn.Module()  # the authors' `SupvLocalizeModule` holds just these two linears
        self.localize_module.classifier = nn.Linear(dim, 1)
        self.localize_module.event_classifier = nn.Linear(dim, num_events)
        self.audio_cas = nn.Linear(dim, num_events)
        self.video_cas = nn.Linear(dim, num_events)

    def _video_score(self, cas: Tensor) -> Tensor:  # [B, T, C] -> mean of the top-k segment scores per class [B, C]
        return cas.topk(min(self.topk, cas.shape[1]), dim=1).values.mean(dim=1)

    def forward(self, visual: Tensor, audio: Tensor) -> dict[str, Tensor]:
        av_score = (self._video_score(self.video_cas(visual)) + self._video_score(self.audio_cas(audio))) / 2
        fused = (visual + audio) / 2
        is_event = self.localize_module.classifier(fused).squeeze(-1)  # [B, T]
        event = self.localize_module.event_classifier(fused.amax(dim=1)) + self.av_score_weight * av_score
        return {"is_event": is_event, "event": event, "av_score": av_score}


class AVEHead(nn.Module):
    """AVE head (module doc). `forward(f_v, f_a)` → dict of named outputs; `loss`, `predict` as documented there."""

    def __init__(self, dim_v: int, dim_a: int, cfg: TaskConfig):
        super().__init__()
        self.kind = (cfg.head or {}).get("kind", AVE_HEAD_KINDS[0])
        if self.kind not in AVE_HEAD_KINDS:
            raise ConfigError(f"task.head.kind for ave must be cmbs or mlp, got {self.kind!r}")
        opts = head_options(cfg.head, AVE_HEAD_DEFAULTS, self.kind)
        self.num_labels = cfg.num_classes  # 29 segment labels
        self.background = cfg.num_classes - 1  # 28
        self.mlp_loss = opts["mlp_loss"]
        if self.kind == "cmbs":
            self.temporal_attn = TemporalAttention(
                dim_v, dim_a, dim=opts["dim"], video_fc_dim=opts["video_fc_dim"], audio_fc_dim=opts["audio_fc_dim"],
                heads=opts["heads"], ffn_dim=opts["ffn_dim"], encoder_layers=opts["encoder_layers"],
                decoder_layers=opts["decoder_layers"], dropout=opts["dropout"],
                feature_dropout=opts["feature_dropout"], gate_gamma=opts["gate_gamma"],
                keep_unused=bool(opts["keep_unused_layers"]))
            self.CMBS = CMBS(opts["dim"], self.background, opts["cas_topk"], opts["av_score_weight"])
            self.output_names = ("is_event", "event", "av_score")
        elif self.kind == "mlp":
            if opts["mlp_activation"] not in ("none", "relu"):
                raise ConfigError(f"task.head.mlp_activation must be none or relu, got {opts['mlp_activation']!r}")
            if self.mlp_loss not in ("ce", "bce_softmax"):
                raise ConfigError(f"task.head.mlp_loss must be ce or bce_softmax, got {self.mlp_loss!r}")
            self.mlp_class = nn.Linear(dim_v + dim_a, opts["mlp_hidden"])
            self.mlp_act = nn.ReLU() if opts["mlp_activation"] == "relu" else nn.Identity()
            self.mlp_class_2 = nn.Linear(opts["mlp_hidden"], self.num_labels)
            self.output_names = ("segment_logits",)

    def forward(self, f_v: Tensor, f_a: Tensor) -> dict[str, Tensor]:
        if self.kind == "mlp":
            return {"segment_logits": self.mlp_class_2(self.mlp_act(self.mlp_class(torch.cat([f_v, f_a], dim=-1))))}
        return self.CMBS(*self.temporal_attn(f_v, f_a))

    # ---- training --------------------------------------------------------------------------------------------------

    def targets(self, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(segment label `[B, T]` long in 0..28, y_seg `[B, T]` float foreground flag, c `[B]` clip event class)."""
        target = labels.argmax(dim=-1) if labels.dim() == 3 else labels.long()
        foreground = target != self.background
        clip_class = torch.where(foreground, target, torch.zeros_like(target)).amax(dim=1)
        return target, foreground.to(torch.float32), clip_class

    def loss_terms(self, outputs: Mapping[str, Tensor], batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The task-loss terms by name (their sum is `loss`)."""
        target, y_seg, clip_class = self.targets(batch["labels"])
        if self.kind == "mlp":
            logits = outputs["segment_logits"].flatten(0, 1)
            if self.mlp_loss == "bce_softmax":
                onehot = F.one_hot(target.flatten(), self.num_labels).to(logits.dtype)
                return {"segment": F.binary_cross_entropy_with_logits(logits.softmax(dim=-1), onehot)}
            return {"segment": F.cross_entropy(logits, target.flatten())}
        has_event = y_seg.amax(dim=1) > 0
        if bool(has_event.all()):  # every real AVE clip has an event
            event = F.cross_entropy(outputs["event"], clip_class)
            av_score = F.cross_entropy(outputs["av_score"], clip_class)
        else:  # all-background clips (audio-visual shuffling, `caeav.train.augment`) have no class to learn
            event = _masked_ce(outputs["event"], clip_class, has_event)
            av_score = _masked_ce(outputs["av_score"], clip_class, has_event)
        return {
            "is_event": F.binary_cross_entropy_with_logits(outputs["is_event"], y_seg.to(outputs["is_event"].dtype)),
            "event": event,
            "av_score": av_score,
        }

    def loss(self, outputs: Mapping[str, Tensor], batch: Mapping[str, Tensor]) -> Tensor:
        """L_AVE (architecture.md §7.1): a scalar."""
        return sum(self.loss_terms(outputs, batch).values())

    # ---- inference -------------------------------------------------------------------------------------------------

    @staticmethod
    def predict(outputs: Mapping[str, Tensor]) -> Tensor:
        """Per-segment labels `[B, T]` int64 in 0..28 (rule in `caeav.model.heads.postprocess`)."""
        return ave_predict(outputs)


def _masked_ce(logits: Tensor, target: Tensor, keep: Tensor) -> Tensor:
    """Cross-entropy averaged over the rows in `keep` (zero, still attached to the graph, when none is kept)."""
    if not bool(keep.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits[keep], target[keep])


def ave_predict(outputs: Mapping[str, Tensor]) -> Tensor:
    """Torch twin of `postprocess.ave_predict`: argmax(event) where is_event > 0 (σ > 0.5), else background."""
    if "segment_logits" in outputs:
        return outputs["segment_logits"].argmax(dim=-1)
    event = outputs["event"]
    cls = event.argmax(dim=-1, keepdim=True)  # [B, 1]
    return torch.where(outputs["is_event"] > 0, cls, torch.full_like(cls, event.shape[-1]))
