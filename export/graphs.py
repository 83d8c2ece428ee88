"""The inference graphs of a bundle, cut out of `CAEAV` and the caption text tower (bundle contract):

    text_encoder        tokens [N,77] int64                   -> features [N,77,D]
    caption_projector   vis_caption, aud_caption [B,77,D]     -> v_cap [B,L_c,C_v], a_cap [B,L_c,C_a]
    st_stream           st_clips [B,T,3,F,S',S']              -> st [B,T,D_st]   (AVVP with the R(2+1)D-18 stream)
    encoder             frames [B,T,3,S,S], wave [B,T,32000]  -> v [BT,L_v,C_v], a [BT,L_a,C_a] (+ AVS: stage0..3)
    head                v, a, v_cap, a_cap (+ avqa question, avvp st, avs stage0..3) -> the head's outputs

AVVP's R(2+1)D-18 stream is a graph of its own, not part of the encoder: it is a plain 3-D CNN (Conv 1×k×k / k×1×1,
BatchNorm folded, ReLU, GlobalAveragePool; every op in TensorRT's ONNX matrix, checked by the pre-flight) that gets
its own FP16/INT8 variant and TensorRT profile, its input has a batch axis of clips rather than the encoder's, and a
bundle without it keeps the encoder graph it always had.

`HeadGraph` repeats the few lines of `CAEAV.forward` that follow the encoder (CASE, Swin's final norm, token means,
the task head); the parity checks compare the chained graphs with `CAEAV.forward` itself, so the two cannot drift
apart unnoticed. Each wrapper returns a tuple in the order of its output names (ONNX has no dict outputs).

Where the task's frames arrive at another size than the Swin input (AVS: 224 -> 192), `EncoderGraph` resizes them
with a fixed bicubic matrix (`resize_bicubic`, equal to `F.interpolate(bicubic, align_corners=False)` up to float
rounding) instead of `F.interpolate`, which would export as a cubic `Resize` that TensorRT does not parse.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch
from torch import Tensor, nn

GRAPH_ORDER = ("text_encoder", "caption_projector", "st_stream", "encoder", "head")
AVS_TASKS = ("avs_s4", "avs_ms3")


def stage_names(n: int = 4) -> tuple[str, ...]:
    return tuple(f"stage{i}" for i in range(n))


class TextEncoderGraph(nn.Module):
    """tokens `[N, 77]` -> caption token features `[N, 77, D]` (the frozen CLIP text tower)."""

    def __init__(self, tower: nn.Module):
        super().__init__()
        self.tower = tower

    def forward(self, tokens: Tensor) -> Tensor:
        return self.tower(tokens)


class CaptionProjectorGraph(nn.Module):
    """P Eq. 15-16 + bottlenecks, once per clip: (vis_caption, aud_caption) -> (v_cap, a_cap)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.projector = model.caption_projector

    def forward(self, vis_caption: Tensor, aud_caption: Tensor) -> tuple[Tensor, Tensor]:
        return self.projector(vis_caption, aud_caption)


class STStreamGraph(nn.Module):
    """AVVP's frozen R(2+1)D-18 stream: st_clips `[B,T,3,F,S',S']` -> st `[B,T,D_st]` (`caeav.model.st_stream`)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.stream = model.st_stream

    def forward(self, st_clips: Tensor) -> Tensor:
        return self.stream.segments(st_clips)


class EncoderGraph(nn.Module):
    """Front end + both backbones in lock-step with CASTE and AVMoE: (frames, wave) -> (v, a[, stage0..3])."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.encoder = model.encoder
        self.with_stages = model.cfg.task.name in AVS_TASKS
        self.img_size = model.cfg.visual.img_size

    def resizes(self, frames) -> bool:
        return tuple(frames.shape[-2:]) != (self.img_size, self.img_size)

    def forward(self, frames: Tensor, wave: Tensor) -> tuple[Tensor, ...]:
        if self.resizes(frames):  # static shapes, not data
            from caeav.model.heads.avs_blocks import resize_bicubic

            x = resize_bicubic(frames.flatten(0, 2), self.img_size)
            frames = x.reshape(frames.shape[0], frames.shape[1], frames.shape[2], self.img_size, self.img_size)
        enc = self.encoder(frames, wave)
        if self.with_stages:
            return (enc.v, enc.a, *enc.visual_stages)
        return enc.v, enc.a


class HeadGraph(nn.Module):
    """CASE (P Eq. 17-21) + Swin's final norm + token means + the task head (mirrors `CAEAV.forward`)."""

    def __init__(self, model: nn.Module, output_names: tuple[str, ...], extra_names: tuple[str, ...]):
        super().__init__()
        self.model = model
        self.output_names = output_names
        self.extra_names = extra_names

    def forward(self, v: Tensor, a: Tensor, *extra: Tensor) -> tuple[Tensor, ...]:
        """(v, a, v_cap, a_cap, *extras); the AVMoE baseline has no CASE and takes (v, a, *extras)."""
        m = self.model
        caps = None
        if m.case is not None:
            v_cap, a_cap, *extra = extra
            caps = (v_cap, a_cap)
        named = dict(zip(self.extra_names, extra))
        stages = [named[s] for s in stage_names()] if m.cfg.task.name in AVS_TASKS else []
        out, _ = m.case_and_head(v, a, caps, _Stages(stages), {k: named.get(k) for k in ("question", "st")})
        return tuple(out[name] for name in self.output_names)


@dataclass
class _Stages:
    visual_stages: list


@dataclass
class GraphSpec:
    """One graph to export: the wrapper, its named inputs/outputs, which axes are dynamic ("batch" = B,
    "batch_t" = B·T, "n" = captions) and example inputs (batch ≥ 2, as decisions D10 asks)."""

    name: str
    module: nn.Module
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    dynamic: dict[str, str] = field(default_factory=dict)  # input name -> kind of its axis 0
    example: dict[str, np.ndarray] = field(default_factory=dict)


def head_output_names(model: nn.Module) -> tuple[str, ...]:
    """The head's inference outputs: `head.export_outputs` where the head declares them, else every key it returns
    (AVE: is_event, event, av_score or segment_logits; AVQA: answer)."""
    declared = getattr(model.head, "export_outputs", None)
    if declared:
        return tuple(declared)
    name = model.cfg.task.name
    if name == "ave":
        return ("segment_logits",) if model.head.kind == "mlp" else ("is_event", "event", "av_score")
    if name == "avqa":
        return ("answer",)
    raise ValueError(f"no export outputs known for task {name!r}")


def head_extra_inputs(model: nn.Module) -> tuple[str, ...]:
    name = model.cfg.task.name
    if name == "avqa":
        return ("question",)
    if name == "avvp" and getattr(model.head, "st_dim", 0) > 0:
        return ("st",)
    if name in AVS_TASKS:
        return stage_names()
    return ()


@torch.no_grad()
def graph_specs(model: nn.Module, tower: Optional[nn.Module], feeds: dict[str, np.ndarray]) -> list[GraphSpec]:
    """The bundle's graphs for `model` (eval mode) and the caption `tower`, with example inputs derived from `feeds`
    (`caeav.export.inputs.sample_inputs`); intermediate examples come from running the PyTorch modules."""
    t = lambda name: torch.from_numpy(feeds[name])  # noqa: E731
    specs = []
    if tower is not None:
        specs.append(GraphSpec("text_encoder", TextEncoderGraph(tower), ("tokens",), ("features",),
                               {"tokens": "n"}, {"tokens": feeds["tokens"]}))
    proj = CaptionProjectorGraph(model) if model.caption_projector is not None else None  # None: AVMoE baseline
    if proj is not None:
        specs.append(GraphSpec("caption_projector", proj, ("vis_caption", "aud_caption"), ("v_cap", "a_cap"),
                               {"vis_caption": "batch", "aud_caption": "batch"},
                               {"vis_caption": feeds["vis_caption"], "aud_caption": feeds["aud_caption"]}))
    stream_st = None
    if getattr(model, "st_stream", None) is not None:
        stream = STStreamGraph(model)
        specs.append(GraphSpec("st_stream", stream, ("st_clips",), ("st",), {"st_clips": "batch"},
                               {"st_clips": feeds["st_clips"]}))
        stream_st = stream(t("st_clips"))
    enc = EncoderGraph(model)
    enc_out_names = ("v", "a") + (stage_names() if enc.with_stages else ())
    specs.append(GraphSpec("encoder", enc, ("frames", "wave"), enc_out_names, {"frames": "batch", "wave": "batch"},
                           {"frames": feeds["frames"], "wave": feeds["wave"]}))
    enc_out = dict(zip(enc_out_names, enc(t("frames"), t("wave"))))
    extras = head_extra_inputs(model)
    head_in = {"v": enc_out["v"], "a": enc_out["a"]}
    if proj is not None:
        head_in["v_cap"], head_in["a_cap"] = proj(t("vis_caption"), t("aud_caption"))
    for name in extras:
        if name.startswith("stage"):
            head_in[name] = enc_out[name]
        else:
            head_in[name] = stream_st if name == "st" and stream_st is not None else t(name)
    dynamic = {n: ("batch" if n in ("v_cap", "a_cap", "question", "st") else "batch_t") for n in head_in}
    specs.append(GraphSpec("head", HeadGraph(model, head_output_names(model), extras), tuple(head_in),
                           head_output_names(model), dynamic, {k: v.numpy() for k, v in head_in.items()}))
    return specs
