"""FP32 ONNX -> mixed-precision FP16 ONNX (decisions D10: precision lives in the graph, for TensorRT 11's strongly
typed networks and TensorRT 10.3 alike).

Kept in FP32, with Cast nodes at their boundaries:
* by op type (`KEEP_FP32_OPS`): L2-normalise (ReduceL2, SwinV2's cosine attention), LayerNormalization, Softmax,
  Pow/ReduceSum (CASE's saliency ‖x‖² over 1536 channels overflows 65504), Log;
* by module: every node the exporter recorded under the log-mel front end (`frontend` scope): power spectra span
  many decades before the log;
* by value (Model Optimizer only): nodes whose outputs exceed `data_max` on the example inputs.
Graph inputs and outputs stay float32 (`keep_io_types`), so the runtime feeds and reads the same dtypes.

Backends: NVIDIA Model Optimizer's AutoCast (`modelopt.onnx.autocast`, the export extra) when importable, else
onnxconverter-common's `float16` converter with the same block lists. `convert_fp16(..., backend=...)` forces one.
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


def _backend(choice: str) -> str:
    if choice != "auto":
        return choice
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


def convert_fp16(src, dst, feeds: Optional[Mapping[str, np.ndarray]] = None, backend: str = "auto") -> Path:
    """Write the mixed FP16 version of the ONNX graph `src` to `dst` (module doc); `feeds` are example inputs."""
    import onnx

    src, dst = Path(src), Path(dst)
    model = onnx.load(str(src))
    inputs = {i.name for i in model.graph.input}
    feeds = {k: v for k, v in (feeds or {}).items() if k in inputs}
    exclude = _scoped_nodes(model, KEEP_FP32_SCOPES)
    chosen = _backend(backend)
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
