"""TensorRT engines from a bundle's ONNX graphs (decisions D10), one engine per graph:

- TensorRT >= 10.12 (11.x has nothing else): a strongly typed network built from the graph of the requested precision
  (`encoder.fp16.onnx`, `encoder.int8.onnx`); the precision is whatever the ONNX says, no precision flags.
- Older TensorRT (10.3 on JetPack 6): weakly typed. fp16 parses the FP32 graph and sets `BuilderFlag.FP16`, with the
  overflow-prone layers (normalisation, reductions such as L2-normalise, softmax) pinned to FP32 under
  `OBEY_PRECISION_CONSTRAINTS`; int8 parses the Q/DQ graph and sets `INT8` plus `FP16` (so the float remainder is not
  FP32); fp32 sets nothing.
- One optimisation profile covering the batch range on every dynamic input: a `batch` axis gets B, a `batch_t`
  axis (the encoder's outputs, i.e. the head's v/a inputs) gets B*T.
- A timing cache shared by all builds and kept in the bundle (`timing.cache`), engines written atomically as
  `engines/<graph>.<precision>.sm<major><minor>.trt<version>.engine`.
TensorRT is imported lazily; without it `build_engines` stops with one ExportError line before writing anything.
"""

from __future__ import annotations

import datetime as _dt
import re
from pathlib import Path
from typing import Mapping, Optional, Sequence

from caeav.errors import ExportError
from caeav.files import sha256_file, write_bytes_atomic

from .trt_runtime_check import (
    engine_compatible,
    engine_filename,
    gpu_compute_capability,
    import_tensorrt,
    short_version,
    uses_strong_typing,
    version_tuple,
)

__all__ = ["build_engines", "engine_compatible", "engine_filename", "profile_shapes", "select_sources",
           "uses_strong_typing"]

PRECISIONS = ("fp32", "fp16", "int8")
FALLBACK = {"fp32": ("fp32",), "fp16": ("fp16", "fp32"), "int8": ("int8", "fp16", "fp32")}
KEEP_FP32_LAYERS = ("NORMALIZATION", "REDUCE", "SOFTMAX")   # weak FP16 path: layer types pinned to FP32
TIMING_CACHE = "timing.cache"
ENGINE_DIR = "engines"


def resolve_dim(dim, batch: int, segments: int) -> int:
    """A manifest shape entry at batch size `batch`: ints stay, "batch" -> B, "batch_t" -> B*T, "<k>*batch" -> k*B."""
    if isinstance(dim, int):
        return dim
    name = str(dim).replace(" ", "")
    if name == "batch":
        return batch
    if name in ("batch_t", "batch*T", "T*batch"):
        return batch * segments
    match = re.fullmatch(r"(\d+)\*batch|batch\*(\d+)", name)
    if match:
        return batch * int(match.group(1) or match.group(2))
    raise ExportError(f"cannot size dynamic axis {dim!r} from the batch range (expected batch, batch_t or k*batch)")


def profile_shapes(shape: Sequence, batch: Sequence[int], segments: int) -> tuple[tuple, tuple, tuple]:
    """(min, opt, max) shapes of one input for the batch range (min, opt, max)."""
    return tuple(tuple(resolve_dim(d, b, segments) for d in shape) for b in batch)  # type: ignore[return-value]


def check_batch(batch: Sequence[int]) -> tuple[int, int, int]:
    if len(batch) != 3 or not all(isinstance(b, int) for b in batch) or not 1 <= batch[0] <= batch[1] <= batch[2]:
        raise ExportError(f"batch range must be MIN:OPT:MAX with 1 <= MIN <= OPT <= MAX, got {tuple(batch)}")
    return int(batch[0]), int(batch[1]), int(batch[2])


def base_graphs(manifest: Mapping) -> list[str]:
    """Names of the FP32 graphs (the ones without a precision suffix)."""
    graphs = manifest.get("graphs") or {}
    return [name for name, g in graphs.items() if g.get("precision", "fp32") == "fp32" and "." not in name]


def select_sources(manifest: Mapping, precision: str, strong: bool) -> dict[str, str]:
    """graph -> manifest key of the ONNX graph its engine is built from. Strongly typed: the requested precision's
    variant, falling back int8 -> fp16 -> fp32 for graphs without that variant. Weakly typed: the int8 variant for
    int8 when present, else the FP32 graph (TensorRT lowers precision itself)."""
    if precision not in PRECISIONS:
        raise ExportError(f"unknown precision {precision!r} (choose from {', '.join(PRECISIONS)})")
    graphs = manifest.get("graphs") or {}
    order = FALLBACK[precision] if strong else (("int8", "fp32") if precision == "int8" else ("fp32",))
    out = {}
    for base in base_graphs(manifest):
        for p in order:
            key = base if p == "fp32" else f"{base}.{p}"
            if key in graphs:
                out[base] = key
                break
    if not out:
        raise ExportError("the manifest lists no graphs to build engines from")
    return out


def _network_flags(trt, strong: bool) -> int:
    if not strong:
        return 0
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    return 0 if flag is None else 1 << int(flag)


def _parse(trt, builder, logger, path: Path, strong: bool):
    network = builder.create_network(_network_flags(trt, strong))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(path)):  # by path, so an external .onnx.data sidecar is found
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors)) or "unknown parser error"
        raise ExportError(f"TensorRT could not parse {path.name}: {errors}")
    return network, parser


def _set_profile(trt, builder, config, network, inputs: Mapping[str, Sequence], batch, segments: int) -> dict:
    profile = builder.create_optimization_profile()
    shapes = {}
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        dims = tuple(tensor.shape)
        if all(d >= 0 for d in dims):
            continue
        if tensor.name not in inputs:
            raise ExportError(f"dynamic input {tensor.name!r} of the network is not described in the manifest")
        lo, opt, hi = profile_shapes(inputs[tensor.name], batch, segments)
        if len(dims) != len(lo) or any(d >= 0 and not d == a == c for d, a, c in zip(dims, lo, hi)):
            raise ExportError(f"input {tensor.name!r}: network shape {dims} does not fit the manifest shape "
                              f"{list(inputs[tensor.name])}")
        profile.set_shape(tensor.name, lo, opt, hi)
        shapes[tensor.name] = {"min": list(lo), "opt": list(opt), "max": list(hi)}
    config.add_optimization_profile(profile)
    return shapes


def _pin_fp32(trt, network) -> int:
    """Weak FP16 path: keep normalisation / reduction / softmax layers (and their float outputs) in FP32."""
    keep = {getattr(trt.LayerType, name) for name in KEEP_FP32_LAYERS if hasattr(trt.LayerType, name)}
    pinned = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.type not in keep:
            continue
        layer.precision = trt.float32
        for j in range(layer.num_outputs):
            if layer.get_output(j).dtype in (trt.float32, trt.float16):
                layer.set_output_type(j, trt.float32)
        pinned += 1
    return pinned


def _set_weak_precision(trt, config, network, precision: str) -> None:
    if precision == "fp32":
        return
    config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)   # explicit Q/DQ graph: no calibrator
    elif _pin_fp32(trt, network):
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)


def _input_specs(graph: Mapping) -> dict[str, Sequence]:
    return {spec["name"]: spec["shape"] for spec in graph.get("inputs", [])}


def build_engines(bundle_dir, manifest: Mapping, precision: str, batch: Sequence[int], *,
                  graphs: Optional[Sequence[str]] = None, workspace_gb: float = 4.0,
                  log_level: str = "WARNING") -> dict:
    """Build one engine per graph of the bundle at `precision` for the batch range (min, opt, max); returns the
    manifest's `engines` entries ("<graph>.<precision>" -> file, sha256, bytes, compute_capability, tensorrt,
    typing, onnx, profile, built). The timing cache `timing.cache` in the bundle is read and updated."""
    bundle = Path(bundle_dir)
    batch = check_batch(tuple(batch))
    trt = import_tensorrt()
    version = str(getattr(trt, "__version__", "0"))
    if version_tuple(version)[:1] < (10,):
        raise ExportError(f"TensorRT {version} is too old: caeav builds engines with TensorRT 10.x or newer")
    strong = uses_strong_typing(version)
    cc = gpu_compute_capability()
    sources = select_sources(manifest, precision, strong)
    if graphs is not None:
        unknown = sorted(set(graphs) - set(sources))
        if unknown:
            raise ExportError(f"no ONNX graph named {', '.join(unknown)} in the bundle")
        sources = {g: k for g, k in sources.items() if g in graphs}
    segments = int(manifest.get("segments", 1))
    logger = trt.Logger(getattr(trt.Logger, log_level, trt.Logger.WARNING))
    builder = trt.Builder(logger)
    cache_path = bundle / TIMING_CACHE
    cache_bytes = cache_path.read_bytes() if cache_path.is_file() else b""
    timing_cache = None
    (bundle / ENGINE_DIR).mkdir(parents=True, exist_ok=True)
    entries = {}
    for base, key in sources.items():
        graph = manifest["graphs"][key]
        network, _parser = _parse(trt, builder, logger, bundle / graph["file"], strong)
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
        if timing_cache is None:
            timing_cache = config.create_timing_cache(cache_bytes)
        config.set_timing_cache(timing_cache, False)
        if not strong:
            _set_weak_precision(trt, config, network, precision)
        shapes = _set_profile(trt, builder, config, network, _input_specs(graph), batch, segments)
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise ExportError(f"TensorRT failed to build the {precision} engine of {graph['file']} (see its log above)")
        name = engine_filename(base, precision, cc, version)
        path = bundle / ENGINE_DIR / name
        write_bytes_atomic(path, plan)
        entries[f"{base}.{precision}"] = {
            "file": f"{ENGINE_DIR}/{name}", "sha256": sha256_file(path), "bytes": path.stat().st_size,
            "compute_capability": f"{cc[0]}.{cc[1]}", "tensorrt": short_version(version), "tensorrt_build": version,
            "typing": "strong" if strong else "weak", "onnx": key, "profile": shapes,
            "built": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
    if timing_cache is not None:
        write_bytes_atomic(cache_path, timing_cache.serialize())
    return entries
