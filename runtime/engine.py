"""The model as three runnable graphs (caption_projector -> encoder -> head) on one engine.

    model = load_model(bundle, engine="auto", precision="fp32")
    outputs = model.run(frames, wave, vis_caption, aud_caption)   # head outputs by name, numpy

Engines: ``ort`` (onnxruntime, providers by availability), ``trt`` (the bundle's prebuilt TensorRT engines; each must
have been built for this GPU's compute capability and this TensorRT version), ``torch`` (the PyTorch model, for
comparison; needs the `train` extra and a checkpoint), ``auto`` (``trt`` when the bundle has engines that fit this
machine, else ``ort``). Batches larger than the bundle's maximum are split.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from caeav.errors import BundleError, CaeavError

from .bundle import GRAPHS, Bundle

ENGINES = ("auto", "trt", "ort", "torch")
HEAD_INPUTS = ("v", "a", "v_cap", "a_cap")


def engine_problem(bundle: Bundle, name: str, precision: str) -> Optional[str]:
    """None when graph `name` has an engine at `precision` that fits this machine, else why not (one line)."""
    spec = bundle.engine(name, precision)
    if spec is None:
        return f"the bundle has no TensorRT engine for {name}.{precision}"
    check = importlib.import_module("caeav.export.trt_runtime_check")  # torch-free helper shared with the builder
    reason = check.engine_compatible({"tensorrt": spec.tensorrt, "compute_capability": spec.compute_capability})
    if reason is None:
        return None
    return (f"engine {spec.key} was built for sm{spec.compute_capability.replace('.', '')} with TensorRT "
            f"{spec.tensorrt} and cannot run here ({reason}); rebuild it on this machine with `caeav export "
            f"--engine trt`, or use --engine ort")


@dataclass
class LoadedModel:
    """Three graphs on one engine; `run` chains them for a batch of clips."""

    bundle: Bundle
    engine: str
    precision: str
    graphs: dict
    notes: list = field(default_factory=list)

    @property
    def max_batch(self) -> int:
        return max(1, self.bundle.max_batch)

    def run(self, frames: np.ndarray, wave: np.ndarray, vis_caption: np.ndarray, aud_caption: np.ndarray) -> dict:
        """frames [B,T,3,H,W], wave [B,T,32000], captions [B,L,D] -> head outputs {name: [B, ...]}."""
        n, step = frames.shape[0], self.max_batch
        if n > step:
            parts = [self.run(frames[i:i + step], wave[i:i + step], vis_caption[i:i + step], aud_caption[i:i + step])
                     for i in range(0, n, step)]
            return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        caps = self.graphs["caption_projector"].run({"vis_caption": vis_caption, "aud_caption": aud_caption})
        enc = self.graphs["encoder"].run({"frames": frames, "wave": wave})
        return self.graphs["head"].run({**enc, **caps})

    def describe(self) -> str:
        return f"{self.engine} {self.precision}: " + "; ".join(g.describe() for g in self.graphs.values())


def _ort_graphs(bundle: Bundle, precision: str, providers, threads, notes: list) -> dict:
    from .session_ort import OrtSession, pick_providers

    chosen = pick_providers(providers)
    out = {}
    for name in GRAPHS:
        spec = bundle.graph(name, precision)
        if spec.precision != precision:
            notes.append(f"{name}: no {precision} graph in the bundle, using {spec.precision}")
        out[name] = OrtSession(bundle.graph_path(spec), chosen, threads)
    return out


def _trt_graphs(bundle: Bundle, precision: str) -> dict:
    problems = [p for p in (engine_problem(bundle, n, precision) for n in GRAPHS) if p]
    missing = importlib.util.find_spec("tensorrt") is None
    if problems:  # what is wrong with the bundle's engines comes first: it holds whatever machine this is
        raise BundleError(problems[0] + ("; TensorRT is not installed here either (its Python package `tensorrt`)"
                                         if missing else ""))
    if missing:
        raise CaeavError("--engine trt: TensorRT is not installed here (its Python package `tensorrt` is missing; "
                         "JetPack ships it, or pip install tensorrt on a CUDA machine); use --engine ort")
    from .session_trt import TrtSession

    out = {}
    for name in GRAPHS:
        spec = bundle.engine(name, precision)
        out[name] = TrtSession(bundle.verified(spec.file, spec.sha256))
    return out


def load_model(bundle: Bundle, engine: str = "auto", precision: str = "fp32",
               providers: Optional[Sequence[str]] = None, checkpoint=None, threads: Optional[int] = None
               ) -> LoadedModel:
    """Open the bundle's graphs on `engine` (module docstring). One-line CaeavError for anything unusable."""
    if engine not in ENGINES:
        raise CaeavError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    notes: list[str] = []
    if engine == "torch":
        from .session_torch import torch_graphs

        return LoadedModel(bundle, "torch", "fp32", torch_graphs(bundle, checkpoint, threads), notes)
    extra = [i["name"] for i in bundle.graph("head").inputs if i["name"] not in HEAD_INPUTS]
    if extra:
        raise BundleError(f"{bundle.path}: the head graph also needs {', '.join(extra)}, which `caeav infer` cannot "
                          "compute from a video (an AVVP head with R(2+1)D features: export with task.head.st_dim=0)")
    if precision not in bundle.precisions and precision != "fp32":
        raise BundleError(f"{bundle.path}: no {precision} graphs in this bundle "
                          f"(it has {', '.join(bundle.precisions)})")
    if engine == "trt" or (engine == "auto" and bundle.manifest.get("engines")):
        problem = next((p for p in (engine_problem(bundle, n, precision) for n in GRAPHS) if p), None)
        if engine == "trt" or problem is None:
            return LoadedModel(bundle, "trt", precision, _trt_graphs(bundle, precision), notes)
        notes.append(f"TensorRT engines not used: {problem.split(' (')[0]}")
    return LoadedModel(bundle, "ort", precision, _ort_graphs(bundle, precision, providers, threads, notes), notes)
