"""The whole CAE-AV model for one task (P Fig. 2; architecture.md §2.6, §5-§8).

    frames [B,T,3,H,W], wave [B,T,32000]
      → CAEAVEncoder (front end, lock-step Swin-V2 / HTS-AT with CASTE and AVMoE)      v [BT,L_v,C_v], a [BT,L_a,C_a]
    caption features [B,L_c,D] ×2 (CLIP ViT-L/14 token features, precomputed)
      → CaptionProjector (Eq. 15-16, once per clip)                                     v_cap, a_cap [B,L_c,C]
      → CASE (Eq. 17-21)                                                                v, a (+ aux for the losses)
      → Swin's final norm on v; token means → f_v [B,T,C_v], f_a [B,T,C_a]
      → task head (AVE CMBS / MLP, AVVP MGN, AVQA, AVS decoder)
    AVVP with `task.head.st_dim` > 0 also: st [B,T,st_dim] precomputed, or st_clips [B,T,3,F,S,S] → the frozen
      R(2+1)D-18 stream (`caeav.model.st_stream`, eval mode, no grad) → st

`forward` returns the head's outputs; in training mode it also returns `aux` (CASE projections and selection
probabilities) and `router_probs` (every MoE call), which `loss` turns into Eq. 25 plus load balancing.
The caption text tower is not part of this module: captions arrive as features (the caption cache supplies them);
`caeav.model.text_tower` encodes new captions.
"""

from __future__ import annotations

from typing import Mapping, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from caeav.config import ConfigError, ModelConfig
from caeav.model.avmoe import load_balancing_loss
from caeav.model.captions import CaptionProjector
from caeav.model.case import CASE
from caeav.model.encoder import CAEAVEncoder
from caeav.model.heads import build_head
from caeav.model.losses import total_loss
from caeav.model.st_stream import STStream, stream_dim


class CAEAV(nn.Module):
    """Encoder + caption projector + CASE + task head for `cfg.task`."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.segments = cfg.task.segments
        self.encoder = CAEAVEncoder(cfg)
        vs, aus = self.encoder.visual_shapes, self.encoder.audio_shapes
        self.dim_v, self.dim_a = vs[-1].dim, aus[-1].dim
        self.visual_grid = vs[-1].hw
        self.caption_projector = self.case = None  # the AVMoE baseline (`variant=avmoe`): no caption branch, no CASE
        if cfg.uses_captions:
            self.caption_projector = CaptionProjector(cfg.caption, self.dim_v, self.dim_a)
            self.case = CASE(self.dim_v, self.dim_a, vs[-1].tokens, aus[-1].tokens, cfg.case)
        self.head = build_head(cfg, [s.dim for s in vs], self.dim_a, vs[-1].tokens)
        self.st_stream = build_st_stream(cfg)

    # ------------------------------------------------------------------------------------------------ bookkeeping

    def frozen_parameter_names(self) -> list[str]:
        names = [f"encoder.{n}" for n in self.encoder.frozen_parameter_names()]
        if self.st_stream is not None:
            names += [f"st_stream.{n}" for n, _ in self.st_stream.named_parameters()]
        return names

    def trainable_state_dict(self) -> dict[str, Tensor]:
        """What a caeav checkpoint stores (decisions D9): every parameter and buffer outside the frozen backbones.

        The AVVP R(2+1)D-18 stream is frozen but stored (`st_stream.*`, 31.3 M for `paper`): `tiny`'s random stream can
        only be restored from it, and checkpoint loading knows only the encoder's backbones as restorable from files."""
        frozen = tuple(f"encoder.{name}." for name in self.encoder.frozen_modules())
        return {k: v for k, v in self.state_dict().items() if not k.startswith(frozen)}

    def load_st_weights(self, path: Optional[str] = None) -> None:
        """Load the R(2+1)D-18 stream's weights from `path` or the config's `st.weights` (nothing when neither)."""
        path = path or self.cfg.st.weights
        if self.st_stream is not None and path:
            from caeav.model.weights import load_st_weights

            load_st_weights(self.st_stream, path, self.cfg.st)

    # ------------------------------------------------------------------------------------------------ forward

    def forward(self, frames: Tensor, wave: Tensor, vis_caption: Optional[Tensor] = None,
                aud_caption: Optional[Tensor] = None, **extra: Optional[Tensor]) -> dict:
        """frames `[B,T,3,H,W]`, wave `[B,T,32000]`, captions `[B,L_c,D]` (ignored by the AVMoE baseline); task extras: avvp `st` `[B,T,st_dim]` or
        `st_clips` `[B,T,3,F,S,S]` (when the head uses them; `st` wins when both are given), avqa `question`
        `[B,L_q]` and optional `neg_frames` `[B,T,3,H,W]`."""
        enc = self.encoder(frames, wave)
        caps = self.caption_projector(vis_caption, aud_caption) if self.caption_projector is not None else None
        out, aux = self.case_and_head(enc.v, enc.a, caps, enc, extra)
        if self.training:
            out["aux"] = aux
            out["router_probs"] = enc.router_probs
        return out

    def case_and_head(self, v: Tensor, a: Tensor, caps: Optional[tuple], enc, extra: Mapping[str, Optional[Tensor]]
                      ) -> tuple[dict, Optional[dict]]:
        """Everything after the encoder, for `forward`, the bundle's head graph and `--engine torch`: CASE (P Eq.
        17-21) on the final tokens with the projected captions `caps` = (v_cap, a_cap), Swin's final norm on v, the
        token means f_v `[B,T,C_v]`, f_a `[B,T,C_a]` and the task head. Returns (head outputs, CASE's aux). The AVMoE
        baseline has no CASE (`caps` None, aux None): its head reads the backbones' tokens directly."""
        T = self.segments
        aux = None
        if self.case is not None:
            v, a, aux = self.case(v, a, caps[0], caps[1], T)
        v = self.encoder.visual_norm(v)
        f_v = v.mean(dim=1).unflatten(0, (-1, T))
        f_a = a.mean(dim=1).unflatten(0, (-1, T))
        return dict(self._head(v, f_v, f_a, enc, extra)), aux

    def _head(self, v: Tensor, f_v: Tensor, f_a: Tensor, enc, extra: Mapping[str, Optional[Tensor]]) -> dict:
        name = self.cfg.task.name
        if name == "ave":
            return self.head(f_v, f_a)
        if name == "avvp":
            return self.head(f_a, f_v, self.st_features(extra.get("st"), extra.get("st_clips")))
        if name == "avqa":
            neg = extra.get("neg_frames")
            return self.head(f_v, f_a, self._visual_maps(v), extra["question"],
                             None if neg is None else self._negative_maps(neg))
        return self.head(enc.visual_stages, f_a)  # AVS: pre-CASE multi-scale visual features + CASE audio

    def st_features(self, st: Optional[Tensor], st_clips: Optional[Tensor]) -> Optional[Tensor]:
        """The head's `st` `[B,T,st_dim]`: as given, else the frozen stream on `st_clips` (no grad), else None."""
        if st is not None or st_clips is None or self.st_stream is None:
            return st
        with torch.no_grad():
            return self.st_stream.segments(st_clips)

    def _visual_maps(self, v: Tensor) -> Tensor:
        """Normed final-stage tokens `[BT, L, C]` as spatial maps `[B, T, C, h, w]` (AVQA grounding)."""
        h, w = self.visual_grid
        return v.transpose(1, 2).reshape(-1, self.segments, v.shape[-1], h, w)

    @torch.no_grad()
    def _negative_maps(self, frames: Tensor) -> Tensor:
        """Negative frames for AVQA's AV-match head, encoded by the plain frozen Swin + final norm (architecture.md
        §7.3): `[B,T,3,H,W]` → `[B,T,C,h,w]`."""
        swin = self.encoder.visual
        x = frames.flatten(0, 1)
        size = self.cfg.visual.img_size
        if tuple(x.shape[-2:]) != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False)
        tokens = swin.forward_features(x)  # [BT, h, w, C], normed
        return self._visual_maps(tokens.flatten(1, 2))

    # ------------------------------------------------------------------------------------------------ training

    def loss(self, outputs: Mapping, batch: Mapping, epoch: int) -> tuple[Tensor, dict]:
        """P Eq. 25 on top of the task loss, plus load balancing weighted by `task.avmoe.lb_weight`; the AVMoE
        baseline (no CASE, no aux) trains on the task loss and load balancing only, as AVMoE's scripts do.

        `epoch` is 0-based (the γ warm-up of decisions D7). Returns (total, detached components)."""
        task = self.head.loss(outputs, batch)
        task = task["loss"] if isinstance(task, Mapping) else task
        lb_weight = self.cfg.task.avmoe.lb_weight
        lb = None
        if lb_weight > 0 and outputs.get("router_probs"):
            lb = lb_weight * sum(load_balancing_loss(p) for p in outputs["router_probs"])
        return total_loss(task, outputs.get("aux"), self.cfg.task.loss, epoch, self.segments, lb)

    def predict(self, outputs: Mapping):
        return self.head.predict(outputs)


def build_st_stream(cfg: ModelConfig) -> Optional[STStream]:
    """AVVP's frozen R(2+1)D-18 stream when the head fuses its features (`task.head.st_dim` > 0), else None; the
    stream's width (`st.channels[-1]`) must be `st_dim`."""
    st_dim = stream_dim(cfg)
    if st_dim <= 0:
        return None
    if int(cfg.st.channels[-1]) != st_dim:
        raise ConfigError(f"task.head.st_dim is {st_dim} but the R(2+1)D stream gives {cfg.st.channels[-1]} "
                          f"(st.channels[-1]); make them equal")
    return STStream(cfg.st)


def build_model(cfg: ModelConfig, device: Optional[str | torch.device] = None, load_weights: bool = True) -> CAEAV:
    """Build CAE-AV for `cfg` (on `device`; "meta" builds shapes only). Backbone weights load from the files the config
    names (`visual.weights`, `audio.weights`, AVVP's `st.weights`) unless `load_weights` is False or the device is
    meta."""
    device = torch.device(device) if device is not None else None
    if device is not None and device.type == "meta":
        with torch.device("meta"):
            return CAEAV(cfg)
    model = CAEAV(cfg)
    if load_weights:
        model.encoder.load_backbone_weights()
        model.load_st_weights()
    return model.to(device) if device is not None else model
