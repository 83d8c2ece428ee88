"""INT8 post-training quantisation of an ONNX graph into a Q/DQ graph with NVIDIA Model Optimizer's ONNX PTQ
(`modelopt.onnx.quantization.quantize`, decisions D10), calibrated on the CPU execution provider.

    from caeav.calibration import quantize_int8
    quantize_int8("bundle/encoder.onnx", feeds, "bundle/encoder.int8.onnx")   # feeds: {"frames": ..., "wave": ...}

Choices (all overridable by keyword):
- weights per channel, activations per tensor, symmetric INT8 (what TensorRT's explicit quantisation wants; Model
  Optimizer's defaults); calibration `method` "max" (Model Optimizer's "entropy" is the alternative).
- nodes exported from the modules named in `exclude_scopes` stay unquantised. Default: the log-mel front end
  (`frontend`: DFT convolution, power, mel MatMul, log10, bn0, interpolation MatMul): its values span many decades
  before the log, and a per-tensor INT8 scale there wipes out the quiet bins. Scopes come from the node metadata
  `pkg.torch.onnx.name_scopes` that torch's dynamo exporter writes.
- the unquantised float ops stay FP32 (`high_precision="fp32"`, the default): the graph then runs unchanged on
  TensorRT 10.3's weakly typed path (FP16 builder flag) and on a strongly typed network, and the front end cannot
  overflow. `high_precision="fp16"` asks Model Optimizer to convert the rest to FP16 for TensorRT 11 (its FP16
  exclusion is by op type only, see `FP16_KEEP_FP32`), which is slower to produce on CPU.
Model Optimizer is imported lazily: it lives in the `export` extra, never in the runtime (decisions D10).
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from caeav.errors import ExportError
from caeav.export.scratch import private_copy

DEFAULT_EXCLUDE_SCOPES = ("frontend",)
# Op types kept in FP32 when high_precision="fp16" (decisions D10: L2-normalise, LayerNorm, softmax, log).
FP16_KEEP_FP32 = ("ReduceL2", "LayerNormalization", "Softmax", "Log", "Pow", "ReduceSum")
SCOPE_KEY = "pkg.torch.onnx.name_scopes"
METHODS = ("max", "entropy")


def _modelopt_quantize():
    try:
        from modelopt.onnx.quantization import quantize
    except ImportError as err:
        raise ExportError(f"INT8 needs NVIDIA Model Optimizer's ONNX PTQ ({err}); install the export extra: "
                          "pip install 'caeav[export]'") from err
    return quantize


def node_scopes(node) -> str:
    """The module path(s) the exporter recorded for a node ('' when the graph carries no scope metadata)."""
    for prop in node.metadata_props:
        if prop.key == SCOPE_KEY:
            return prop.value
    return ""


def nodes_in_scopes(model, scopes: Iterable[str]) -> list[str]:
    """Names of the nodes exported from a module whose dotted path has one of `scopes` as a component
    (e.g. "frontend" matches `e.frontend` and `encoder.frontend.bn0`)."""
    wanted = [re.compile(rf"(^|[.'\"\s]){re.escape(s)}($|[.'\"\s])") for s in scopes]
    return [n.name for n in model.graph.node if n.name and any(w.search(node_scopes(n)) for w in wanted)]


def graph_inputs(model) -> list[str]:
    """Real graph inputs (initializers listed as inputs by old exporters are skipped)."""
    inits = {i.name for i in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in inits]


def check_calib_inputs(model, calib_inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Calibration arrays in the graph's input order, float inputs as float32; one-line ExportError on a mismatch."""
    names = graph_inputs(model)
    missing = [n for n in names if n not in calib_inputs]
    extra = [n for n in calib_inputs if n not in names]
    if missing or extra:
        raise ExportError(f"calibration inputs do not match the graph: missing {missing}, unexpected {extra}")
    counts = {n: int(np.shape(calib_inputs[n])[0]) for n in names}
    if len(set(counts.values())) != 1 or 0 in counts.values():
        raise ExportError(f"calibration inputs need the same non-zero number of samples on axis 0, got {counts}")
    out = {}
    for n in names:
        arr = np.ascontiguousarray(calib_inputs[n])
        out[n] = arr.astype(np.float32) if arr.dtype.kind == "f" else arr
    return out


def _anchored(names: Iterable[str]) -> list[str]:
    # Model Optimizer matches nodes_to_exclude as regular expressions
    return [f"^{re.escape(n)}$" for n in names]


def quantize_int8(onnx_path, calib_inputs: Mapping[str, np.ndarray], out_path, *, method: str = "max",
                  high_precision: str = "fp32", exclude_scopes: Sequence[str] = DEFAULT_EXCLUDE_SCOPES,
                  nodes_to_exclude: Sequence[str] = (), op_types_to_exclude: Sequence[str] = (),
                  fp16_keep_fp32: Sequence[str] = FP16_KEEP_FP32, log_level: str = "WARNING") -> Path:
    """Write a Q/DQ INT8 graph of `onnx_path` to `out_path` (atomically) and return its path.

    `calib_inputs`: graph input name -> array with the samples stacked on axis 0 (calibration runs one sample at a
    time on onnxruntime's CPU EP). The output keeps the input's I/O names and float32 boundary dtypes.
    """
    import onnx

    if method not in METHODS:
        raise ExportError(f"unknown calibration method {method!r} (choose from {', '.join(METHODS)})")
    if high_precision not in ("fp32", "fp16"):
        raise ExportError(f"high_precision must be fp32 or fp16, got {high_precision!r}")
    src, out = Path(onnx_path), Path(out_path)
    if not src.is_file():
        raise ExportError(f"ONNX graph {src} not found")
    model = onnx.load(str(src), load_external_data=False)
    feeds = check_calib_inputs(model, calib_inputs)
    quantize = _modelopt_quantize()
    excluded = list(nodes_in_scopes(model, exclude_scopes)) + list(nodes_to_exclude)
    del model
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.stem}.tmp-{os.getpid()}{out.suffix}")
    logging.getLogger("modelopt").setLevel(log_level)
    scratch = tempfile.TemporaryDirectory()
    try:
        # a private copy: Model Optimizer saves a shape-inferred model over the path it is given
        work = private_copy(src, scratch.name)
        quantize(str(work), quantize_mode="int8", calibration_data=feeds, calibration_method=method,
                 calibration_eps=["cpu"], high_precision_dtype=high_precision,
                 op_types_to_exclude=list(op_types_to_exclude) or None,
                 op_types_to_exclude_fp16=list(fp16_keep_fp32) if high_precision == "fp16" else None,
                 nodes_to_exclude=_anchored(excluded) or None, output_path=str(tmp), log_level=log_level)
        if not tmp.is_file():
            raise ExportError(f"Model Optimizer wrote no INT8 graph for {src.name}")
        os.replace(tmp, out)
    except (AssertionError, ValueError, RuntimeError) as err:
        raise ExportError(f"INT8 quantisation of {src.name} failed: {str(err).splitlines()[0] if str(err) else err!r}")
    finally:
        scratch.cleanup()
        if tmp.exists():
            tmp.unlink()
    return out


def count_qdq(path) -> dict[str, int]:
    """Number of QuantizeLinear / DequantizeLinear nodes in a graph (0 means nothing was quantised)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    ops = [n.op_type for n in model.graph.node]
    return {"QuantizeLinear": ops.count("QuantizeLinear"), "DequantizeLinear": ops.count("DequantizeLinear")}


def excluded_nodes_quantized(int8_path, source_path, scopes: Sequence[str] = DEFAULT_EXCLUDE_SCOPES) -> list[str]:
    """Nodes of the excluded scopes (found in the FP32 `source_path`, whose scope metadata the quantised graph no
    longer carries) that read a DequantizeLinear output in `int8_path`; should be empty."""
    import onnx

    inside = set(nodes_in_scopes(onnx.load(str(source_path), load_external_data=False), scopes))
    model = onnx.load(str(int8_path), load_external_data=False)
    dq_outputs = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return [n.name for n in model.graph.node if n.name in inside and any(i in dq_outputs for i in n.input)]
