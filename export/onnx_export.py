"""One `GraphSpec` -> one checked ONNX file (decisions D10, export-notes §1):

* `torch.onnx.export(..., dynamo=True)` at opset 18 (18-20 allowed; never >= 23), named inputs and outputs,
  `dynamic_shapes` for the batch axis only (image size and T stay static), exported from batch >= 2 examples;
* constant folding + dead-node removal + initializer lifting/deduplication (every size: `caeav.export.dedup`) + CSE
  with onnx_ir / onnxscript passes.
  We run these passes ourselves instead of the exporter's `optimize=True`: its pattern rewriter spends ~95 % of the
  export time on the CAE-AV graphs (minutes on 2 cores) and changes nothing TensorRT needs;
* symbolic dims renamed to the bundle contract's names (`batch`, `batch_t` = B·T, `n`);
* the opset checked, `onnx.checker.check_model(full_check=True)` (strict full shape inference) on the saved file;
* weights above `EXTERNAL_DATA_BYTES` go to `<file>.data` beside the graph (parse it by path: TensorRT's
  `parse_from_file`, onnxruntime's `InferenceSession(path)`).
"""

from __future__ import annotations

import inspect
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from caeav.errors import ExportError

OPSET = 18
OPSET_RANGE = (18, 20)
EXTERNAL_DATA_BYTES = 256 << 20  # graphs with more weight bytes than this keep them in <file>.data
MAX_DYNAMIC = 4096  # upper bound of the exported symbolic batch (the TensorRT profile is set separately)


def _dynamic_shapes(spec, segments: int):
    batch = torch.export.Dim("batch", min=1, max=MAX_DYNAMIC)
    n = torch.export.Dim("n", min=1, max=MAX_DYNAMIC)
    kinds = {"batch": batch, "batch_t": segments * batch, "n": n}
    shapes = tuple({0: kinds[spec.dynamic[name]]} if name in spec.dynamic else None for name in spec.input_names)
    params = list(inspect.signature(spec.module.forward).parameters.values())
    fixed = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if any(p.kind == p.VAR_POSITIONAL for p in params) and len(shapes) > len(fixed):  # forward(v, a, ..., *extra): torch.export sees one tuple
        return shapes[:len(fixed)] + (shapes[len(fixed):],)
    return shapes


def _fold(model) -> None:
    """Constant folding and clean-up passes on an onnx_ir model, in place."""
    from onnx_ir.passes import common
    from onnxscript.optimizer import _constant_folding

    from caeav.export.dedup import dedupe_initializers
    from caeav.export.gelu_order import reorder_gelu

    passes = [
        _constant_folding.FoldConstantsPass(shape_inference=False, input_size_limit=1 << 24,
                                            output_size_limit=1 << 24),
        common.RemoveUnusedNodesPass(),
        common.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0),
        reorder_gelu,  # the operand order onnxruntime fuses into one Gelu kernel (`caeav.export.gelu_order`)
        dedupe_initializers,  # every size (`caeav.export.dedup`: onnx_ir's pass skips the weights)
        common.CommonSubexpressionEliminationPass(),
        common.RemoveUnusedNodesPass(),
    ]
    for p in passes:
        p(model)


def _remove_unused(model) -> None:
    from onnx_ir.passes import common

    common.RemoveUnusedNodesPass()(model)


def _drop_zero_conv_biases(model) -> None:
    """Remove Conv bias inputs that are constant zeros. torch's exporter gives a bias-free 3-D convolution (AVVP's
    R(2+1)D-18 stream) a zero bias built as Expand(0, [C_out, 2]), which folds to a [C_out, 2] initializer that
    onnxruntime rejects ("bias must be a 1D tensor"); a zero bias is the same as none."""
    for node in model.graph:
        if node.op_type != "Conv" or len(node.inputs) < 3 or node.inputs[2] is None:
            continue
        const = node.inputs[2].const_value
        if const is not None and not np.any(const.numpy()):
            node.resize_inputs(2)


def _rename_dims(model, segments: int) -> None:
    """`10*batch` (the exporter's derived dim) -> `batch_t` on every value of the graph."""
    import onnx_ir as ir

    names = {f"{segments}*batch": "batch_t", f"batch*{segments}": "batch_t"}
    values = list(model.graph.inputs) + list(model.graph.outputs)
    for node in model.graph:
        values.extend(v for v in node.outputs if v is not None)
    for value in values:
        shape = value.shape
        if shape is None:
            continue
        dims = [names.get(str(d.value), d.value) if isinstance(d, ir.SymbolicDim) else d for d in shape]
        if any(isinstance(d, str) and d == "batch_t" for d in dims):
            value.shape = ir.Shape(dims)


def _weight_bytes(model) -> int:
    return sum(int(v.const_value.nbytes) for v in model.graph.initializers.values() if v.const_value is not None)


def export_graph(spec, path, segments: int, opset: int = OPSET) -> Path:
    """Export `spec` (a `caeav.export.graphs.GraphSpec`) to `path` and check it; returns the path."""
    import onnx
    import onnx_ir as ir

    if not OPSET_RANGE[0] <= opset <= OPSET_RANGE[1]:
        raise ExportError(f"opset {opset} is outside {OPSET_RANGE[0]}-{OPSET_RANGE[1]} (>= 23 emits Attention ops "
                          "TensorRT 10.3 cannot parse)")
    path = Path(path)
    args = tuple(torch.from_numpy(spec.example[name]) for name in spec.input_names)
    spec.module.eval()
    with warnings.catch_warnings(), _quiet():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            spec.module, args, dynamo=True, optimize=False, opset_version=opset, verbose=False,
            input_names=list(spec.input_names), output_names=list(spec.output_names),
            dynamic_shapes=_dynamic_shapes(spec, segments), external_data=False)
    model = program.model
    _fold(model)
    _drop_zero_conv_biases(model)
    _remove_unused(model)
    _rename_dims(model, segments)
    got = model.opset_imports.get("", None)
    if got != opset:
        raise ExportError(f"{spec.name}: exported at opset {got}, asked for {opset}")
    if _weight_bytes(model) > EXTERNAL_DATA_BYTES:
        ir.save(model, path, external_data=path.name + ".data")
    else:
        ir.save(model, path)
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as err:  # onnx raises ValidationError / InferenceError
        raise ExportError(f"{spec.name}: the exported graph fails onnx.checker: {str(err).splitlines()[0]}") from err
    return path


class _quiet:
    """Silence the exporter's progress lines ('[torch.onnx] Obtain model graph ...')."""

    def __enter__(self):
        self._devnull = open(os.devnull, "w")
        import contextlib

        self._redirect = contextlib.redirect_stdout(self._devnull)
        self._redirect.__enter__()
        self._level = logging.getLogger("torch.onnx").level
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        return self

    def __exit__(self, *exc):
        logging.getLogger("torch.onnx").setLevel(self._level)
        self._redirect.__exit__(*exc)
        self._devnull.close()
        return False
