"""The TensorRT pre-flight catches what TensorRT's ONNX parser would reject (small hand-built graphs, no torch)."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from caeav.errors import ExportError
from caeav.export.preflight import check_model, preflight


def _model(nodes, inputs, outputs, inits=(), opset=18):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _vi(name, dtype=TensorProto.FLOAT, shape=(2, 8)):
    return helper.make_tensor_value_info(name, dtype, list(shape))


def test_supported_graph_passes(tmp_path):
    k = numpy_helper.from_array(np.array([3], np.int64), "k")
    axes = numpy_helper.from_array(np.array([1], np.int64), "axes")
    nodes = [helper.make_node("TopK", ["x", "k"], ["vals", "idx"], name="topk_ok", axis=-1),
             helper.make_node("ReduceSum", ["vals", "axes"], ["y"], name="sum_ok", keepdims=1),
             helper.make_node("LayerNormalization", ["x", "scale"], ["z"], name="ln_ok", axis=-1)]
    scale = numpy_helper.from_array(np.ones(8, np.float32), "scale")
    model = _model(nodes, [_vi("x")], [_vi("y", shape=(2, 1)), _vi("z"), _vi("idx", TensorProto.INT64, (2, 3))],
                   [k, axes, scale])
    assert check_model(model) == []
    onnx.save(model, tmp_path / "ok.onnx")
    assert preflight([tmp_path / "ok.onnx"]) == {"ok.onnx": 3}


def test_unsupported_op_is_named(tmp_path):
    """An STFT (TensorRT has none) fails the pre-flight, and the error names the node."""
    frame = numpy_helper.from_array(np.array(64, np.int64), "frame_step")
    node = helper.make_node("STFT", ["signal", "frame_step", "", "frame_len"], ["spec"], name="my_stft")
    frame_len = numpy_helper.from_array(np.array(128, np.int64), "frame_len")
    model = _model([node], [_vi("signal", shape=(1, 1024, 1))], [_vi("spec", shape=(1, 15, 65, 2))],
                   [frame, frame_len])
    problems = check_model(model)
    assert [(p.node, p.op) for p in problems] == [("my_stft", "STFT")]
    onnx.save(model, tmp_path / "bad.onnx")
    with pytest.raises(ExportError, match="my_stft"):
        preflight([tmp_path / "bad.onnx"])


@pytest.mark.parametrize("case", ["topk_large", "topk_unsorted", "dynamic_axes", "custom_domain", "bad_type",
                                  "cubic_resize", "ln_extra_output", "opset"])
def test_restrictions(case):
    x = _vi("x")
    inits, opset = [], 18
    if case in ("topk_large", "topk_unsorted"):
        inits = [numpy_helper.from_array(np.array([4000 if case == "topk_large" else 2], np.int64), "k")]
        kw = {"sorted": 0} if case == "topk_unsorted" else {}
        nodes = [helper.make_node("TopK", ["x", "k"], ["y", "i"], name="n", **kw)]
    elif case == "dynamic_axes":  # ReduceSum's axes computed at run time (not an initializer)
        nodes = [helper.make_node("Shape", ["x"], ["s"], name="shape"),
                 helper.make_node("ReduceSum", ["x", "s"], ["y"], name="n")]
    elif case == "custom_domain":
        nodes = [helper.make_node("FusedGelu", ["x"], ["y"], name="n", domain="com.microsoft")]
    elif case == "bad_type":  # MatMul on int32 (TensorRT: floating point only)
        x = _vi("x", TensorProto.INT32)
        nodes = [helper.make_node("MatMul", ["x", "x"], ["y"], name="n")]
    elif case == "cubic_resize":
        inits = [numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")]
        x = _vi("x", shape=(1, 1, 4, 4))
        nodes = [helper.make_node("Resize", ["x", "", "scales"], ["y"], name="n", mode="cubic")]
    elif case == "ln_extra_output":
        inits = [numpy_helper.from_array(np.ones(8, np.float32), "scale")]
        nodes = [helper.make_node("LayerNormalization", ["x", "scale"], ["z", "mean"], name="n"),
                 helper.make_node("Add", ["z", "mean"], ["y"], name="add")]
    else:
        opset = 23
        nodes = [helper.make_node("Relu", ["x"], ["y"], name="n")]
    model = _model(nodes, [x], [_vi("y", TensorProto.UNDEFINED, ())], inits, opset=opset)
    problems = check_model(model)
    assert problems, case
    assert any(p.node in ("n", "graph") for p in problems), problems
