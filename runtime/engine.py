"""The model as runnable graphs (caption_projector -> [st_stream ->] encoder -> head) on one engine.

    model = load_model(bundle, engine="auto", precision="fp32")
    outputs = model.run(frames, wave, vis_caption, aud_caption)   # head outputs by name, numpy
    feats = model.encode(frames, wave, vis_caption, aud_caption)  # encoder + caption features, once per window
    feats = model.encode(..., st_clips=clips)                     # AVVP bundles with an st_stream graph: its clips
    outputs = model.head(model.take(feats, [0, 0, 1]), {"question": q})  # the head per query (AVQA), extra inputs
    per_item = model.items(outputs, 3)                            # one dict per batch item, no batch axis

Engines: ``ort`` (onnxruntime, providers by availability), ``trt`` (the bundle's prebuilt TensorRT engines; each must
have been built for this GPU's compute capability and this TensorRT version), ``torch`` (the PyTorch model, for
comparison; needs the `train` extra and a checkpoint), ``auto`` (``trt`` when the bundle has engines that fit this
machine, else ``ort``). Batches larger than the bundle's maximum are split.

Axis 0 of a graph tensor is either one row per clip ("batch": captions, AVQA's question, AVE's event logits) or one
row per frame ("batch_t" = B·T rows: the encoder's tokens, AVS's stage features and masks), as the manifest declares
it; `take` and `items` pick clips out of both kinds.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from caeav.errors import BundleError, CaeavError

from .bundle import Bundle

ENGINES = ("auto", "trt", "ort", "torch")


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


def per_frame_names(bundle: Bundle) -> frozenset:
    """Names of the graph tensors whose axis 0 is B·T (the manifest's "batch_t"), over all three graphs."""
    names = set()
    for graph in bundle.chain:
        spec = bundle.graph(graph)
        for tensor in spec.inputs + spec.outputs:
            if (tensor.get("shape") or [None])[0] == "batch_t":
                names.add(tensor["name"])
    return frozenset(names)


@dataclass
class LoadedModel:
    """Three graphs on one engine; `run` chains them for a batch of clips (`encode` + `head` for several queries)."""

    bundle: Bundle
    engine: str
    precision: str
    graphs: dict
    notes: list = field(default_factory=list)
    per_frame: frozenset = frozenset()  # tensor names with B·T rows (module docstring)

    @property
    def max_batch(self) -> int:
        return max(1, self.bundle.max_batch)

    def run(self, frames: np.ndarray, wave: np.ndarray, vis_caption: np.ndarray, aud_caption: np.ndarray,
            extra: Optional[dict] = None, st_clips: Optional[np.ndarray] = None) -> dict:
        """frames [B,T,3,H,W], wave [B,T,32000], captions [B,L,D] (+ extra head inputs [B, ...], AVVP's stream clips
        [B,T,3,F,S',S']) -> head outputs."""
        return self.head(self.encode(frames, wave, vis_caption, aud_caption, st_clips), extra)

    @property
    def has_stream(self) -> bool:
        """The bundle runs AVVP's R(2+1)D-18 stream: `encode` needs `st_clips`."""
        return "st_stream" in self.graphs

    def encode(self, frames: np.ndarray, wave: np.ndarray, vis_caption: np.ndarray, aud_caption: np.ndarray,
               st_clips: Optional[np.ndarray] = None) -> dict:
        """Encoder, caption-projector (and st_stream) outputs {name: array} for B clips: what the head takes besides
        extras. `st_clips` (normalised, `caeav.media.st_frames.st_clip_input`) is required when `has_stream`."""
        feeds = {"frames": frames, "wave": wave, "vis_caption": vis_caption, "aud_caption": aud_caption}
        if self.has_stream:
            if st_clips is None:
                raise CaeavError(f"{self.bundle.path}: this AVVP bundle runs the R(2+1)D-18 stream; pass its clips "
                                 "(st_clips)")
            feeds["st_clips"] = st_clips
        return self._split(feeds, frames.shape[0], self._encode_once)

    def head(self, features: dict, extra: Optional[dict] = None) -> dict:
        """Head outputs for B clips from `encode`'s features (B clips, maybe repeated by `take`) and extra inputs."""
        feeds = {**features, **(extra or {})}
        return self._split(feeds, _clips(features, self.bundle.segments), self.graphs["head"].run)

    def _encode_once(self, feeds: dict) -> dict:
        caps = {}
        if "caption_projector" in self.graphs:  # absent: the AVMoE baseline ignores captions
            caps = self.graphs["caption_projector"].run({k: feeds[k] for k in ("vis_caption", "aud_caption")})
        if self.has_stream:
            caps.update(self.graphs["st_stream"].run({"st_clips": feeds["st_clips"]}))
        return {**self.graphs["encoder"].run({k: feeds[k] for k in ("frames", "wave")}), **caps}

    def _split(self, feeds: dict, n: int, fn) -> dict:
        """fn(feeds) for at most `max_batch` clips at a time; outputs concatenated along axis 0."""
        step = self.max_batch
        if n <= step:
            return fn(feeds)
        parts = [fn(self.take(feeds, range(i, min(n, i + step)), n)) for i in range(0, n, step)]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def _frames_axis(self, name: str, value: np.ndarray, n: int) -> bool:
        if name in self.per_frame:
            return True
        return value.shape[0] != n and value.shape[0] == n * self.bundle.segments

    def take(self, tensors: dict, items: Sequence[int], n: Optional[int] = None) -> dict:
        """The rows of clips `items` (in that order, repeats allowed) of every tensor; `n` = clips in `tensors`."""
        items = list(items)
        n = n if n is not None else _clips(tensors, self.bundle.segments)
        if items == list(range(n)):
            return tensors
        out = {}
        for name, value in tensors.items():
            if self._frames_axis(name, value, n):
                out[name] = value.reshape((n, -1) + value.shape[1:])[items].reshape((-1,) + value.shape[1:])
            else:
                out[name] = value[items]
        return out

    def items(self, outputs: dict, n: int) -> list[dict]:
        """Head outputs of n clips -> one dict per clip without the batch axis ([T, ...] for per-frame outputs)."""
        per = [{} for _ in range(n)]
        for name, value in outputs.items():
            rows = value.reshape((n, -1) + value.shape[1:]) if self._frames_axis(name, value, n) else value
            for i in range(n):
                per[i][name] = rows[i]
        return per

    def describe(self) -> str:
        return f"{self.engine} {self.precision}: " + "; ".join(g.describe() for g in self.graphs.values())


def _clips(tensors: dict, segments: Optional[int] = None) -> int:
    """Clips in `tensors`: rows of a per-clip tensor, else the encoder's per-frame rows / `segments`."""
    for key in ("v_cap", "vis_caption", "frames"):
        if key in tensors:
            return int(tensors[key].shape[0])
    if segments and "v" in tensors:
        return int(tensors["v"].shape[0]) // int(segments)
    raise ValueError("cannot tell the number of clips of these tensors")


def _ort_graphs(bundle: Bundle, precision: str, providers, threads, notes: list) -> dict:
    from .session_ort import OrtSession, pick_providers

    chosen = pick_providers(providers)
    out = {}
    for name in bundle.chain:
        spec = bundle.graph(name, precision)
        if spec.precision != precision:
            notes.append(f"{name}: no {precision} graph in the bundle, using {spec.precision}")
        out[name] = OrtSession(bundle.graph_path(spec), chosen, threads)
    return out


def _trt_graphs(bundle: Bundle, precision: str) -> dict:
    problems = [p for p in (engine_problem(bundle, n, precision) for n in bundle.chain) if p]
    missing = importlib.util.find_spec("tensorrt") is None
    if problems:  # what is wrong with the bundle's engines comes first: it holds whatever machine this is
        raise BundleError(problems[0] + ("; TensorRT is not installed here either (its Python package `tensorrt`)"
                                         if missing else ""))
    if missing:
        raise CaeavError("--engine trt: TensorRT is not installed here (its Python package `tensorrt` is missing; "
                         "JetPack ships it, or pip install tensorrt on a CUDA machine); use --engine ort")
    from .session_trt import TrtSession

    out = {}
    for name in bundle.chain:
        spec = bundle.engine(name, precision)
        out[name] = TrtSession(bundle.verified(spec.file, spec.sha256))
    return out


def load_model(bundle: Bundle, engine: str = "auto", precision: str = "fp32",
               providers: Optional[Sequence[str]] = None, checkpoint=None, threads: Optional[int] = None
               ) -> LoadedModel:
    """Open the bundle's graphs on `engine` (module docstring). One-line CaeavError for anything unusable; which head
    inputs the bundle needs is checked when it is loaded (`caeav.runtime.tasks.base.TaskAdapter.check_bundle`)."""
    if engine not in ENGINES:
        raise CaeavError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    notes: list[str] = []
    frames = per_frame_names(bundle)
    if engine == "torch":
        from .session_torch import torch_graphs

        precision = precision if precision == "bf16" else "fp32"  # the bundle's fp16/int8 graphs have no torch twin
        return LoadedModel(bundle, "torch", precision, torch_graphs(bundle, checkpoint, threads, precision), notes,
                           frames)
    if precision not in bundle.precisions and precision != "fp32":
        raise BundleError(f"{bundle.path}: no {precision} graphs in this bundle "
                          f"(it has {', '.join(bundle.precisions)})")
    if engine == "trt" or (engine == "auto" and bundle.manifest.get("engines")):
        problem = next((p for p in (engine_problem(bundle, n, precision) for n in bundle.chain) if p), None)
        if engine == "trt" or problem is None:
            return LoadedModel(bundle, "trt", precision, _trt_graphs(bundle, precision), notes, frames)
        notes.append(f"TensorRT engines not used: {problem.split(' (')[0]}")
    return LoadedModel(bundle, "ort", precision, _ort_graphs(bundle, precision, providers, threads, notes), notes,
                       frames)
