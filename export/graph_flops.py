"""FLOPs per clip of each graph a bundle runs, counted at export time for the torch-free runtime (`caeav bench`).

    flops = bundle_flops(model.cfg)   # {"per": ..., "convention": ..., "graphs": {"encoder": 1.2e9, ...}, "total": ...}

The runtime cannot import torch, so `caeav export` records these figures in `manifest.json` under "flops" and
`caeav bench` divides them by the measured latency (achieved GFLOP/s). Counted like `caeav model summary --flops`
(`caeav.model.flops.count_module_flops`: FlopCounterMode's convention, 1 multiply-add = 2 FLOPs, matrix products
and convolutions only) on a copy of the model built on the meta device (no weights, no memory), batch 1, through
the same graph wrappers the export traces (`caeav.export.graphs`), so a graph's figure is exactly the work of its
ONNX file, e.g. AVS's encoder includes its bicubic resize matrix. The graphs counted are those one clip runs
(`caption_projector`, `st_stream` where the model has it, `encoder`, `head`); the optional `text_encoder` is not in
the per-clip chain (captions come from a cache) and is not counted. The FP16 / INT8 variants of a graph do the same
work and share its figure.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

PER_CLIP = "clip: batch 1, T segments, eval mode, counted on the meta device"


class _Call(nn.Module):
    """`module(*[kwargs[n] for n in names])` as a module taking keywords (what `count_module_flops` calls)."""

    def __init__(self, module: nn.Module, names: tuple):
        super().__init__()
        self.module, self.names = module, names

    def forward(self, **kwargs):
        return self.module(*[kwargs[n] for n in self.names])


def _count(module: nn.Module, inputs: dict) -> int:
    from caeav.model.flops import count_module_flops

    return int(count_module_flops(_Call(module, tuple(inputs)), inputs).total)


@torch.no_grad()
def graph_flops(cfg) -> dict[str, int]:
    """FLOPs per clip of each per-clip graph of a bundle exported for `cfg` (module docstring)."""
    from caeav.export.graphs import (CaptionProjectorGraph, EncoderGraph, HeadGraph, STStreamGraph, head_extra_inputs,
                                     head_output_names)
    from caeav.model.cae_av import build_model
    from caeav.model.summary import _example_inputs

    model = build_model(cfg, device="meta").eval()
    feeds = _example_inputs(cfg, batch=1)
    T = int(cfg.task.segments)
    out: dict[str, int] = {}
    proj = CaptionProjectorGraph(model)
    captions = {"vis_caption": feeds.get("vis_caption", torch.empty(1, cfg.caption.context_length,
                                                                   cfg.caption.text_dim, device="meta"))}
    captions["aud_caption"] = feeds.get("aud_caption", captions["vis_caption"])
    out["caption_projector"] = _count(proj, captions)
    v_cap, a_cap = proj(**captions)
    st = None
    if getattr(model, "st_stream", None) is not None and "st_clips" in feeds:
        stream = STStreamGraph(model)
        out["st_stream"] = _count(stream, {"st_clips": feeds["st_clips"]})
        st = stream(feeds["st_clips"])
    enc = EncoderGraph(model)
    out["encoder"] = _count(enc, {"frames": feeds["frames"], "wave": feeds["wave"]})
    enc_out = enc(feeds["frames"], feeds["wave"])
    head_in = {"v": enc_out[0], "a": enc_out[1], "v_cap": v_cap, "a_cap": a_cap}
    extras = head_extra_inputs(model)
    for name in extras:
        if name.startswith("stage"):  # AVS: the encoder's outputs after v, a
            head_in[name] = enc_out[2 + int(name[len("stage"):])]
        elif name == "st":
            head_in[name] = st if st is not None else torch.empty(1, T, int(model.head.st_dim), device="meta")
        else:
            head_in[name] = feeds[name]
    out["head"] = _count(HeadGraph(model, head_output_names(model), extras), head_in)
    return out


def bundle_flops(cfg, log=lambda s: None) -> Optional[dict]:
    """The manifest's "flops" entry for `cfg`, or None (logged) when the model cannot be counted on meta."""
    from caeav.model.flops import CONVENTION

    try:
        graphs = graph_flops(cfg)
    except Exception as exc:  # a model the meta device cannot run: the bundle says FLOPs are unknown
        log(f"FLOPs per clip not recorded ({type(exc).__name__}: {' '.join(str(exc).split())[:160]})")
        return None
    return {"per": PER_CLIP.replace("T segments", f"T = {int(cfg.task.segments)}"), "convention": CONVENTION,
            "graphs": graphs, "total": int(sum(graphs.values()))}
