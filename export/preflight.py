"""Pre-flight: would TensorRT's ONNX parser take every node of a graph? (issue 7; export-notes §2.7)

Each node is checked against the operator matrix bundled at `caeav/assets/reference/tensorrt-onnx-ops.json`
(onnx-tensorrt's operators.md of TensorRT 10.1 GA, the oldest TensorRT we target apart from JetPack's 10.3):

* the op exists in the matrix, in the default ONNX domain, and is marked supported;
* the graph's opset lies in the matrix's range (9-20; opset 23 brings `Attention`, which 10.3 cannot parse);
* the node's data type is among the op's types (INT64 passes where INT32 is listed: TensorRT narrows it);
* the restrictions that apply to graphs like ours: TopK `sorted` = 1 and K a constant < 3840; `axes`/`axis`
  arguments that must be initializers (Pad, Reduce*, Slice, Squeeze, Unsqueeze, CumSum); ScatterND without
  `reduction`; LayerNormalization with only its first output used; Resize modes; Dropout's `training_mode`;
  MaxPool without `Indices`; Q/DQ zero points equal to 0; GridSample on 4-D input.

`check_graph(path)` returns the problems as `Problem(node, op, reason)`; `preflight(paths)` raises `ExportError`
naming every offending node. Needs `onnx` (not torch); the weights are not loaded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Iterable, Optional

from caeav.errors import ExportError

TOPK_MAX = 3840
_TYPE_NAMES = {1: "FP32", 2: "UINT8", 3: "INT8", 6: "INT32", 7: "INT64", 9: "BOOL", 10: "FP16", 16: "BF16",
               17: "FP8", 22: "INT4"}
# input index of an argument that must be an initializer (or a Constant), per op
_CONSTANT_ARGS = {"Pad": (3, "axes"), "Slice": (3, "axes"), "Squeeze": (1, "axes"), "Unsqueeze": (1, "axes"),
                  "CumSum": (1, "axis")}
_DATA_INPUT = {"Where": 1}  # ops whose data type is not that of input 0
_TYPE_FROM_OUTPUT = ("ConstantOfShape", "Shape", "EyeLike", "RandomNormal", "RandomUniform")
_RESIZE_MODES = ("nearest", "linear")
_RESIZE_COORDS = ("half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners")


@dataclass(frozen=True)
class Problem:
    node: str
    op: str
    reason: str

    def __str__(self) -> str:
        return f"{self.node} ({self.op}): {self.reason}"


@lru_cache(maxsize=1)
def operator_matrix() -> dict:
    """The bundled matrix: {"operators": {op: {supported, types, restrictions, experimental}}, "opset_range"}."""
    text = resources.files("caeav").joinpath("assets/reference/tensorrt-onnx-ops.json").read_text()
    return json.loads(text)


class _Graph:
    """Constant values and element types of a model's tensors (after ONNX type inference)."""

    def __init__(self, model):
        import onnx
        from onnx import numpy_helper

        try:
            inferred = onnx.shape_inference.infer_shapes(model)
        except Exception:  # an unparseable graph still gets its node checks
            inferred = model
        g = inferred.graph
        self.types = {}
        self.ranks = {}
        for v in list(g.input) + list(g.output) + list(g.value_info):
            self.types[v.name] = v.type.tensor_type.elem_type
            if v.type.tensor_type.HasField("shape"):
                self.ranks[v.name] = len(v.type.tensor_type.shape.dim)
        self.initializers = {}
        for init in g.initializer:
            self.types[init.name] = init.data_type
            self.initializers[init.name] = init
        for node in g.node:
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
                for attr in node.attribute:
                    if attr.name == "value":
                        self.initializers[node.output[0]] = attr.t
                        self.types[node.output[0]] = attr.t.data_type
        self._np = numpy_helper
        self.used = {name for node in g.node for name in node.input} | {o.name for o in g.output}

    def constant(self, name: str):
        init = self.initializers.get(name)
        if init is None:
            return None
        if any(e.key == "location" for e in init.external_data):
            return "external"
        return self._np.to_array(init)

    def type_name(self, name: str) -> Optional[str]:
        code = self.types.get(name)
        return _TYPE_NAMES.get(code, f"type{code}") if code else None


def _attr(node, name: str, default=None):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _check_type(node, entry: dict, g: _Graph) -> Optional[str]:
    types = {t.replace("INF64", "INT64") for t in entry.get("types", [])}
    if not types:
        return None
    if node.op_type in _TYPE_FROM_OUTPUT:
        name = node.output[0]
    else:
        idx = _DATA_INPUT.get(node.op_type, 0)
        name = node.input[idx] if len(node.input) > idx else ""
    dtype = g.type_name(name) if name else None
    if dtype is None or dtype in types or (dtype == "INT64" and "INT32" in types):
        return None
    return f"data type {dtype} is not supported (TensorRT takes {', '.join(sorted(types))})"


def _restrictions(node, g: _Graph) -> list[str]:
    op, out = node.op_type, []
    if op == "TopK":
        if int(_attr(node, "sorted", 1)) != 1:
            out.append("`sorted` must be 1")
        k = g.constant(node.input[1]) if len(node.input) > 1 else None
        if k is None:
            out.append("K must be a constant (initializer)")
        elif not isinstance(k, str) and int(k.reshape(-1)[0]) >= TOPK_MAX:
            out.append(f"K = {int(k.reshape(-1)[0])} must be < {TOPK_MAX}")
    elif op in _CONSTANT_ARGS or op.startswith("Reduce"):
        idx, what = _CONSTANT_ARGS.get(op, (1, "axes"))
        if len(node.input) > idx and node.input[idx] and g.constant(node.input[idx]) is None:
            out.append(f"`{what}` must be an initializer")
    elif op == "ScatterND" and _attr(node, "reduction", b"none") not in (b"none", "none"):
        out.append("`reduction` is not supported")
    elif op == "LayerNormalization" and any(o and o in g.used for o in node.output[1:]):
        out.append("only the first output (Y) is supported")
    elif op == "Resize":
        mode = _attr(node, "mode", b"nearest")
        coord = _attr(node, "coordinate_transformation_mode", b"half_pixel")
        mode, coord = (x.decode() if isinstance(x, bytes) else x for x in (mode, coord))
        if mode not in _RESIZE_MODES:
            out.append(f"mode {mode!r} is not supported (only {', '.join(_RESIZE_MODES)})")
        if coord not in _RESIZE_COORDS:
            out.append(f"coordinate_transformation_mode {coord!r} is not supported")
        if int(_attr(node, "antialias", 0)):
            out.append("antialiasing is not supported")
    elif op == "Dropout" and len(node.input) > 2 and node.input[2]:
        value = g.constant(node.input[2])
        if value is None or (not isinstance(value, str) and bool(value.reshape(-1)[0])):
            out.append("`training_mode` must be an initializer equal to False")
    elif op == "MaxPool" and len(node.output) > 1 and node.output[1] in g.used:
        out.append("the `Indices` output is not supported")
    elif op in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2 and node.input[2]:
        zp = g.constant(node.input[2])
        if zp is None or (not isinstance(zp, str) and zp.any()):
            out.append("the zero point must be a constant 0")
    elif op == "GridSample" and g.ranks.get(node.input[0], 4) != 4:
        out.append("input must be 4-D")
    if op in ("MaxPool", "AveragePool", "LpPool"):
        dil = _attr(node, "dilations", None)
        if dil and any(int(d) != 1 for d in dil):
            out.append("`dilations` must be all ones")
    return out


def check_model(model, label: str = "graph") -> list[Problem]:
    """Problems TensorRT's ONNX parser would have with `model` (an `onnx.ModelProto`)."""
    matrix = operator_matrix()
    ops = matrix["operators"]
    lo, hi = matrix["opset_range"]
    problems = []
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or not lo <= opset <= hi:
        problems.append(Problem(label, "opset", f"opset {opset} is outside TensorRT's range {lo}-{hi}"))
    g = _Graph(model)
    for i, node in enumerate(model.graph.node):
        name = node.name or f"{node.op_type}_{i}"
        if node.domain not in ("", "ai.onnx"):
            problems.append(Problem(name, node.op_type, f"custom domain {node.domain!r} needs a TensorRT plugin"))
            continue
        entry = ops.get(node.op_type)
        if entry is None:
            problems.append(Problem(name, node.op_type, "not in TensorRT's ONNX operator matrix"))
            continue
        if not entry.get("supported", False):
            problems.append(Problem(name, node.op_type, "not supported by TensorRT's ONNX parser"))
            continue
        reason = _check_type(node, entry, g)
        if reason:
            problems.append(Problem(name, node.op_type, reason))
        problems.extend(Problem(name, node.op_type, r) for r in _restrictions(node, g))
    return problems


def check_graph(path) -> list[Problem]:
    """`check_model` on the ONNX file `path` (external weights are not loaded)."""
    import onnx

    return check_model(onnx.load(str(path), load_external_data=False), Path(path).name)


def preflight(paths: Iterable, max_listed: int = 12) -> dict[str, int]:
    """Check every graph in `paths`; `ExportError` listing the offending nodes (by graph), else {file: nodes}."""
    import onnx

    failures, counts = [], {}
    for path in paths:
        model = onnx.load(str(path), load_external_data=False)
        counts[Path(path).name] = len(model.graph.node)
        failures.extend(f"{Path(path).name}: {p}" for p in check_model(model, Path(path).name))
    if failures:
        more = f" (+{len(failures) - max_listed} more)" if len(failures) > max_listed else ""
        raise ExportError("TensorRT pre-flight failed: " + "; ".join(failures[:max_listed]) + more)
    return counts


def preflight_bundle_graphs(bundle, files: Iterable[str]) -> dict[str, int]:
    return preflight([Path(bundle) / f for f in files])
