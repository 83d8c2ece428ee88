"""`caeav.export.gelu_order`: the exporter's GELU, reordered so that onnxruntime fuses it into one kernel, with
the same outputs (bit-identical before onnxruntime fuses it); a graph that only looks similar is left alone."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from caeav.export.gelu_order import reorder_gelu


def _exported_gelu(half: float = 0.5) -> onnx.ModelProto:
    """x · (0.5 · (1 + erf(x/√2))) in the operand order torch's exporter writes, after a bias Add."""
    consts = [numpy_helper.from_array(np.array(v, np.float32), n) for n, v in
              (("s2", np.sqrt(2.0)), ("one", 1.0), ("half", half))]
    consts.append(numpy_helper.from_array(np.linspace(-1, 1, 16).astype(np.float32), "b"))
    nodes = [helper.make_node("Add", ["h", "b"], ["x"]), helper.make_node("Div", ["x", "s2"], ["d"]),
             helper.make_node("Erf", ["d"], ["e"]), helper.make_node("Add", ["e", "one"], ["a"]),
             helper.make_node("Mul", ["half", "a"], ["m"]), helper.make_node("Mul", ["x", "m"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("h", TensorProto.FLOAT, ["n", 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 16])], consts)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _run(model: onnx.ModelProto, tmp_path, h, optimise: bool = True):
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    if not optimise:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    out = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"]).run(None, {"h": h})
    return out[0], Counter(n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node)


def test_reordered_gelu_fuses_and_is_bit_identical(tmp_path):
    h = np.random.default_rng(0).standard_normal((64, 16)).astype(np.float32) * 3
    before, ops_before = _run(_exported_gelu(), tmp_path, h)
    assert ops_before["Erf"] == 1  # the exporter's order: onnxruntime leaves five element-wise kernels
    model = ir.from_proto(_exported_gelu())
    assert reorder_gelu(model) == 1
    after, ops_after = _run(ir.to_proto(model), tmp_path, h)
    assert ops_after["Erf"] == 0 and ops_after["Gelu"] + ops_after["BiasGelu"] == 1, ops_after
    np.testing.assert_allclose(after, before, rtol=1e-6, atol=1e-6)  # the fused kernel: float rounding apart
    # the reordered graph itself computes the same bits (×0.5 is exact); only the fused kernel rounds differently
    unfused, _ = _run(ir.to_proto(model), tmp_path, h, optimise=False)
    reference, _ = _run(_exported_gelu(), tmp_path, h, optimise=False)
    np.testing.assert_array_equal(unfused, reference)


def test_a_different_constant_is_not_a_gelu():
    model = ir.from_proto(_exported_gelu(half=0.4))
    assert reorder_gelu(model) == 0
