"""FP32 ONNX -> mixed-precision FP16 ONNX (decisions D10: precision lives in the graph, for TensorRT 11's strongly
typed networks and TensorRT 10.3 alike).

Kept in FP32, with Cast nodes at their boundaries:
* by op type (`KEEP_FP32_OPS`): L2-normalise (ReduceL2, SwinV2's cosine attention), LayerNormalization, Softmax,
  Pow/ReduceSum (CASE's saliency ‖x‖² over 1536 channels overflows 65504), Log;
* by module: every node the exporter recorded under the log-mel front end (`frontend` scope): power spectra span
  many decades before the log;
* by value (Model Optimizer only): nodes whose outputs exceed `data_max` on the example inputs (their first clip,
  `one_clip`).
Graph inputs and outputs stay float32 (`keep_io_types`), so the runtime feeds and reads the same dtypes.

Backends: NVIDIA Model Optimizer's AutoCast (`modelopt.onnx.autocast`, the export extra) when importable and its
reference run fits in memory, else onnxconverter-common's `float16` converter with the same block lists. AutoCast's
reference run keeps every intermediate tensor of the graph: for the paper AVE encoder that is 19.3 GB at one clip
(`reference_run_bytes`), and it was killed for memory on a 24 GB machine, so a graph whose reference run needs more
than half the available memory goes to onnxconverter-common, with a log line saying so. `convert_fp16(..., backend=...)` forces one.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Mapping, Optional

import numpy as np

from caeav.errors import ExportError
from caeav.export.scratch import private_copy

KEEP_FP32_OPS = ("ReduceL2", "LayerNormalization", "Softmax", "Pow", "ReduceSum", "Log")
KEEP_FP32_SCOPES = ("frontend",)
DATA_MAX = 512.0


def _scoped_nodes(model, scopes) -> list[str]:
    from caeav.calibration.ptq import nodes_in_scopes

    return nodes_in_scopes(model, scopes)


_ELEM_BYTES = {1: 4, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 16: 2}  # float, int32, int64, bool, float16, double, bfloat16


def reference_run_bytes(model, feeds: Mapping[str, np.ndarray], segments: int = 10) -> int:
    """Bytes of every intermediate tensor of `model` (its value_info shapes) at the shapes of `feeds`: what
    AutoCast's reference run holds at once. Symbolic dims take their size from the graph inputs that carry them,
    else the bundle contract's (`batch` = clips, `batch_t` = clips × `segments`); any other counts 1."""
    clips = min((int(np.shape(v)[0]) for v in feeds.values()), default=1)
    sizes: dict = {"batch": clips, "batch_t": clips * int(segments)}
    for inp in model.graph.input:
        if inp.name in feeds:
            for d, n in zip(inp.type.tensor_type.shape.dim, np.shape(feeds[inp.name])):
                if d.dim_param:
                    sizes[d.dim_param] = int(n)
    total = 0
    for v in model.graph.value_info:
        t = v.type.tensor_type
        n = 1
        for d in t.shape.dim:
            n *= d.dim_value or sizes.get(d.dim_param, 1)
        total += n * _ELEM_BYTES.get(t.elem_type, 4)
    return total


def available_bytes() -> Optional[int]:
    """MemAvailable of /proc/meminfo (None where there is none)."""
    try:
        with open("/proc/meminfo") as fh:
            return next((int(ln.split()[1]) * 1024 for ln in fh if ln.startswith("MemAvailable:")), None)
    except OSError:
        return None


def _backend(choice: str, model=None, feeds=None, log=None, segments: int = 10) -> str:
    """`choice`, or for "auto": Model Optimizer's AutoCast when it is installed and its reference run fits in half
    of this machine's available memory, else onnxconverter-common (`log` says why)."""
    if choice != "auto":
        return choice
    if model is not None:
        need, have = reference_run_bytes(model, feeds or {}, segments), available_bytes()
        if have is not None and need > have / 2:
            if log:
                log(f"fp16: AutoCast's reference run would hold {need / 1e9:.1f} GB of intermediate tensors (this "
                    f"machine has {have / 1e9:.1f} GB available): converting by op type and scope only "
                    "(onnxconverter-common), without the data_max check")
            return "onnxconverter"
    try:
        import modelopt.onnx.autocast  # noqa: F401

        return "modelopt"
    except Exception:
        return "onnxconverter"


def _modelopt(src: Path, feeds: Optional[Mapping[str, np.ndarray]], exclude_nodes: list[str]):
    from modelopt.onnx.autocast import convert_to_mixed_precision

    with tempfile.TemporaryDirectory() as tmp:
        # Model Optimizer may rewrite the graph it is given (shape inference saved in place): hand it a copy so the
        # FP32 graph keeps the bytes (and sha256) the manifest records
        src = private_copy(src, Path(tmp) / "graph")
        calib = None
        if feeds:  # a folder of .npz files is read as whole batches (one .npz is split along axis 0, which breaks
            # graphs whose inputs have different leading dims, like the head's B and B·T)
            calib = os.path.join(tmp, "calib")
            os.mkdir(calib)
            np.savez(os.path.join(calib, "batch0.npz"), **{k: np.asarray(v) for k, v in feeds.items()})
        loggers = [logging.getLogger(n) for n in list(logging.root.manager.loggerDict) if n.startswith("modelopt")]
        levels = [lg.level for lg in loggers]
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                return convert_to_mixed_precision(
                    onnx_path=str(src), low_precision_type="fp16", keep_io_types=True,
                    op_types_to_exclude=list(KEEP_FP32_OPS),
                    nodes_to_exclude=[f"^{re.escape(n)}$" for n in exclude_nodes] or None,
                    data_max=DATA_MAX, calibration_data=calib, providers=["cpu"])
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


def _onnxconverter(model, exclude_nodes: list[str]):
    from onnxconverter_common import float16

    return float16.convert_float_to_float16(model, keep_io_types=True, op_block_list=list(KEEP_FP32_OPS),
                                            node_block_list=exclude_nodes, disable_shape_infer=False)


def _symbolic_shapes(fp32, out) -> None:
    """Give the converted graph's value_info the FP32 graph's (symbolic) shapes: AutoCast records the shapes it saw
    at the example batch size, which pins the batch for onnxruntime; dropping value_info altogether crashes
    onnxruntime's layout optimiser on FP16 graphs. A Cast output `<x>_cast_to_fp16/32` takes the shape of `<x>`."""
    g = fp32.graph
    shapes = {v.name: v.type.tensor_type.shape for v in list(g.value_info) + list(g.input) + list(g.output)}
    for v in out.graph.value_info:
        base = re.sub(r"_cast_to_fp(16|32)$", "", v.name)
        tt = v.type.tensor_type
        if base in shapes:
            tt.shape.CopyFrom(shapes[base])
        elif any(d.dim_value for d in tt.shape.dim):
            tt.ClearField("shape")


def one_clip(feeds: Mapping[str, np.ndarray]) -> dict:
    """The first clip of example inputs: per-clip inputs [B, ...] keep 1 row, per-frame inputs [B·T, ...] keep T.
    AutoCast's reference run keeps every intermediate tensor of the graph in memory: on the paper AVE encoder at
    batch 2 that passed 24 GB (killed for memory), so it runs on one clip."""
    if not feeds:
        return {}
    clips = min(int(np.shape(v)[0]) for v in feeds.values())
    if clips <= 1:
        return dict(feeds)
    return {k: np.asarray(v)[: int(np.shape(v)[0]) // clips] for k, v in feeds.items()}


def convert_fp16(src, dst, feeds: Optional[Mapping[str, np.ndarray]] = None, backend: str = "auto",
                 log=None, segments: int = 10) -> Path:
    """Write the mixed FP16 version of the ONNX graph `src` to `dst` (module doc); `feeds` are example inputs,
    `segments` the T of the graph's `batch_t` dims."""
    import onnx

    src, dst = Path(src), Path(dst)
    model = onnx.load(str(src))
    inputs = {i.name for i in model.graph.input}
    feeds = one_clip({k: v for k, v in (feeds or {}).items() if k in inputs})
    exclude = _scoped_nodes(model, KEEP_FP32_SCOPES)
    chosen = _backend(backend, model, feeds, log, segments)
    try:
        if chosen == "modelopt":
            out = _modelopt(src, feeds, exclude)
        elif chosen == "onnxconverter":
            out = _onnxconverter(model, exclude)
        else:
            raise ExportError(f"unknown FP16 backend {backend!r} (auto, modelopt, onnxconverter)")
    except ExportError:
        raise
    except Exception as err:
        raise ExportError(f"FP16 conversion of {src.name} failed ({chosen}): {str(err).splitlines()[0]}") from err
    _symbolic_shapes(model, out)
    io = lambda m: [(v.name, v.type.tensor_type.elem_type) for v in list(m.graph.input) + list(m.graph.output)]  # noqa: E731
    if io(out) != io(model):
        raise ExportError(f"FP16 conversion of {src.name} ({chosen}) changed the graph's input/output names or dtypes")
    big = out.ByteSize() > (1 << 30)
    onnx.save(out, str(dst), save_as_external_data=big, location=dst.name + ".data" if big else None)
    onnx.checker.check_model(str(dst))
    return dst
