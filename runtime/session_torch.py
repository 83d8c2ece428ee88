"""`--engine torch`: the PyTorch model behind the same graph interface, for comparison and benchmarks.

This is the only runtime module that imports torch, and only when `torch_graphs` is called (the `train` extra must be
installed). The weights come from a caeav checkpoint (decisions D9) passed explicitly, else the bundle's
`checkpoint/` folder, else the manifest's `source` (the checkpoint it was exported from, or the seeded random
weights of `caeav export --random-weights`), rebuilt by `caeav.export.source.rebuild`. The three callables mirror the
bundle's graphs (same input and output names), so the pipeline cannot tell them apart.
"""

from __future__ import annotations

import os
from types import SimpleNamespace
from typing import Mapping, Optional

import numpy as np

from caeav.errors import BundleError


def reference_model(bundle, checkpoint: Optional[os.PathLike] = None):
    """(PyTorch model in eval mode, its ModelConfig) with the bundle's weights (module docstring)."""
    from caeav.export.source import rebuild
    from caeav.model.checkpoint import load_checkpoint

    source = bundle.manifest.get("source")
    for rel, entry in (bundle.manifest.get("files") or {}).items():  # the bundle's own checkpoint/ is checksummed
        if rel.startswith("checkpoint/") and checkpoint is None:
            bundle.verified(rel, entry.get("sha256"))
    if isinstance(source, dict) and source.get("kind") in ("checkpoint", "random"):
        return rebuild(source, bundle.manifest.get("config"), bundle=bundle.path, checkpoint=checkpoint)
    if checkpoint is not None:
        return load_checkpoint(checkpoint, device="cpu")
    if (bundle.path / "checkpoint").is_dir():
        return load_checkpoint(bundle.path / "checkpoint", device="cpu")
    raise BundleError(f"{bundle.path}: the torch engine needs the model weights and the manifest does not say where "
                      "they came from: pass --checkpoint DIR (a caeav checkpoint)")


TORCH_PRECISIONS = ("fp32", "bf16")


class TorchGraph:
    """A piece of the PyTorch model called like a bundle graph: numpy dict in, numpy dict out."""

    kind = "torch"

    def __init__(self, name: str, fn, input_names, output_names, torch_module, precision: str = "fp32"):
        self.name, self.fn = name, fn
        self.input_names, self.output_names = list(input_names), list(output_names)
        self.torch, self.precision = torch_module, precision

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self.torch
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            args = [torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in self.input_names]
            outs = self.fn(*args)
        return {n: outs[n].float().numpy() if outs[n].is_floating_point() else outs[n].numpy()
                for n in self.output_names}

    def describe(self) -> str:
        mode = " BF16 autocast" if self.precision == "bf16" else ""
        return f"PyTorch {self.torch.__version__} eager{mode} {self.name}"


def torch_graphs(bundle, checkpoint: Optional[os.PathLike] = None, threads: Optional[int] = None,
                 precision: str = "fp32") -> dict:
    """{"caption_projector", "encoder", "head" (+ "st_stream"): TorchGraph} built from a checkpoint (module
    docstring). `precision` "bf16": every graph runs under CPU BF16 autocast (`torch.autocast("cpu",
    torch.bfloat16)`: matrix products and convolutions in BF16, the rest FP32), a reference row of `caeav bench`."""
    if precision not in TORCH_PRECISIONS:
        raise BundleError(f"the torch engine runs {' or '.join(TORCH_PRECISIONS)}, not {precision}")
    import torch  # lazily: the runtime never imports torch unless this engine is asked for

    if threads:
        torch.set_num_threads(int(threads))
    model, cfg = reference_model(bundle, checkpoint)
    model.eval()
    if cfg.task.name != bundle.task:
        raise BundleError(f"the checkpoint is for task {cfg.task.name!r}, the bundle for {bundle.task!r}")

    def projector(vis, aud):
        v_cap, a_cap = model.caption_projector(vis, aud)
        return {"v_cap": v_cap, "a_cap": a_cap}

    enc_outputs = bundle.graph("encoder").output_names or ["v", "a"]
    head_inputs = bundle.graph("head").input_names or ["v", "a", "v_cap", "a_cap"]

    def encoder(frames, wave):
        enc = model.encoder(frames, wave)
        stages = {f"stage{i}": s for i, s in enumerate(enc.visual_stages)}  # AVS bundles export them
        return {"v": enc.v, "a": enc.a, **stages}

    def head(*args):
        named = dict(zip(head_inputs, args))  # v, a, v_cap, a_cap, then the task's extras (stage0..3, question, st)
        caps = (named["v_cap"], named["a_cap"]) if "v_cap" in named else None  # None: the AVMoE baseline
        stages = SimpleNamespace(visual_stages=[named[n] for n in sorted(named) if n.startswith("stage")])
        out, _ = model.case_and_head(named["v"], named["a"], caps, stages, {k: named.get(k) for k in ("question", "st")})
        return out

    head_outputs = [o["name"] for o in bundle.graph("head").outputs] or list(
        getattr(model.head, "export_outputs", None) or getattr(model.head, "output_names", ()))
    graphs = {}
    if "st_stream" in bundle.chain:
        if getattr(model, "st_stream", None) is None:
            raise BundleError(f"{bundle.path}: the bundle runs the R(2+1)D-18 stream but the checkpoint's model has "
                              "none (task.head.st_dim = 0)")
        graphs["st_stream"] = TorchGraph("st_stream", lambda clips: {"st": model.st_stream.segments(clips)},
                                         ["st_clips"], ["st"], torch, precision)
    if "caption_projector" in bundle.chain:
        graphs["caption_projector"] = TorchGraph("caption_projector", projector, ["vis_caption", "aud_caption"],
                                                 ["v_cap", "a_cap"], torch, precision)
    return {
        **graphs,
        "encoder": TorchGraph("encoder", encoder, ["frames", "wave"], enc_outputs, torch, precision),
        "head": TorchGraph("head", head, head_inputs, head_outputs, torch, precision),
    }
