"""INT8 for onnxruntime's CPU provider (issue 17, `caeav export --precision int8cpu`, caeav.calibration.ort_int8), on
the shared tiny AVE bundle (tests/tiny_exports.py): the encoder's weight MatMuls run as integer kernels after
onnxruntime's own graph optimisation, the weights are stored as int8, the features stay within the bundle's parity
bound of the FP32 graph, and `caeav infer` / `caeav bench` run the variant."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import onnx
import pytest

from caeav.calibration.validate import compare_graphs
from caeav.cli.main import main
from caeav.runtime.bundle import Bundle
from tiny_exports import tiny_ave_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return Bundle.load(tiny_ave_bundle(tmp_path_factory))


def _ops(path) -> Counter:
    return Counter(n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node)


def test_weight_matmuls_are_integer_after_onnxruntime_fusion(bundle, tmp_path):
    import onnxruntime as ort

    fp32 = bundle.path / bundle.graph("encoder", "fp32").file
    q = bundle.path / bundle.graph("encoder", "int8cpu").file
    assert q.name == "encoder.int8cpu.onnx"
    ops = _ops(q)
    assert ops["MatMulInteger"] > 0 and ops["DynamicQuantizeLinear"] > 0, ops
    # every MatMul left in FP32 multiplies two activations (attention) or belongs to the log-mel front end
    model = onnx.load(str(q), load_external_data=False)
    weights = {i.name for i in model.graph.initializer}
    from caeav.calibration.ptq import nodes_in_scopes

    front = set(nodes_in_scopes(onnx.load(str(fp32), load_external_data=False), ["frontend"]))
    float_weight_matmuls = [n.name for n in model.graph.node if n.op_type in ("MatMul", "Gemm")
                            and n.input[1] in weights and n.name not in front]
    assert not float_weight_matmuls, float_weight_matmuls[:5]
    # what the CPU provider runs: its optimiser fuses the pattern into integer kernels
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(q), sess_options=opts, providers=["CPUExecutionProvider"])
    fused = _ops(tmp_path / "optimized.onnx")
    assert fused["DynamicQuantizeMatMul"] + fused["MatMulIntegerToFloat"] >= ops["MatMulInteger"] // 2, fused
    # stored as int8: the graph is far smaller than the FP32 one
    assert q.stat().st_size < 0.6 * sum((bundle.path / f).stat().st_size
                                        for f in [bundle.graph("encoder").file,
                                                  *[d for d, _ in bundle.graph("encoder").data_files]])


def test_features_within_parity_bound(bundle):
    from caeav.config import ModelConfig
    from caeav.export.inputs import sample_inputs

    cfg = ModelConfig.from_dict(bundle.manifest["config"])
    feeds = sample_inputs(cfg, 2, seed=5)
    report = compare_graphs(bundle.path / "encoder.onnx", bundle.path / "encoder.int8cpu.onnx",
                            {k: feeds[k] for k in ("frames", "wave")})
    assert report["min_cosine"] >= bundle.manifest["tolerances"]["int8cpu"]["cosine"], report


def test_infer_and_bench_run_int8cpu(bundle, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", str(bundle.path), "--engines", "ort", "--precisions", "fp32,int8cpu", "--repeats", "1",
                 "--warmup", "0", "--threads", "1", "--json", str(out)]) == 0
    rows = {r["precision"]: r for r in json.loads(out.read_text())["rows"] if r["engine"] == "ort"}
    assert rows["int8cpu"]["status"] == "ok" and "encoder.int8cpu.onnx" in rows["int8cpu"]["detail"]
    assert rows["int8cpu"]["label_agreement"] is not None
    res = tmp_path / "res.json"
    assert main(["infer", "--bundle", str(bundle.path), "--precision", "int8cpu", "--engine", "ort",
                 "--json", str(res)]) == 0
    got = json.loads(res.read_text())
    assert got["engine"]["precision"] == "int8cpu"


def test_trt_engines_refuse_int8cpu(tmp_path, capsys):
    assert main(["export", "--config", "tiny", "--random-weights", "--engine", "trt", "--precision", "int8cpu",
                 "--out", str(tmp_path / "b")]) != 0
    assert "int8cpu is for onnxruntime's CPU provider" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()

