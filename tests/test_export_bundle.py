"""`caeav export` + `caeav parity` on the tiny preset for every task (CPU onnxruntime), and the bundle's guarantees:
manifest checksums, the TensorRT pre-flight on every graph, atomic writing, parity failing above the tolerances.

Each task is exported once (module-scoped) through the CLI; AVE also gets the FP16 graphs."""

import json
import shutil

import numpy as np
import onnx
import pytest

from caeav.cli.main import main
from caeav.errors import BundleError
from caeav.export.graphs import GRAPH_ORDER
from caeav.export.manifest import read_manifest, verify_bundle
from caeav.export.preflight import check_graph

TASKS = ("ave", "avs_s4")  # every per-commit run
SLOW_TASKS = ("avvp", "avqa", "avs_ms3")  # the same check, `slow` (CI still runs them)
BATCH = "1:2:3"
HEAD_OUTPUTS = {"ave": ["is_event", "event", "av_score"], "avqa": ["answer"], "avs_s4": ["masks"],
                "avs_ms3": ["masks"],
                "avvp": ["global_prob", "a_prob", "v_prob", "a_frame_prob", "v_frame_prob"]}


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundles")
    made = {}

    def get(task):
        if task not in made:
            out = root / task
            precision = "fp16" if task == "ave" else "fp32"
            code = main(["export", "--config", "tiny", "--random-weights", "--task", task, "--precision", precision,
                         "--batch", BATCH, "--out", str(out)])
            assert code == 0
            assert main(["parity", str(out)]) == 0
            made[task] = out
        return made[task]

    return get


@pytest.mark.parametrize("task", TASKS + tuple(pytest.param(t, marks=pytest.mark.slow) for t in SLOW_TASKS))
def test_fp32_export_and_parity(bundles, task):
    bundle = bundles(task)
    manifest = verify_bundle(bundle)  # every listed file present with its sha256
    assert manifest["task"] == task and manifest["opset"] == 18
    assert manifest["batch"] == {"min": 1, "opt": 2, "max": 3}
    assert ("st_stream" in manifest["graphs"]) == (task == "avvp")  # tiny AVVP fuses the R(2+1)D-18 stream
    for name in (g for g in GRAPH_ORDER if g in manifest["graphs"]):
        entry = manifest["graphs"][name]
        assert entry["file"] == f"{name}.onnx" and entry["precision"] == "fp32"
        assert check_graph(bundle / entry["file"]) == []  # TensorRT pre-flight
        assert onnx.load(str(bundle / entry["file"]), load_external_data=False).opset_import[0].version == 18
    enc = manifest["graphs"]["encoder"]
    assert [i["name"] for i in enc["inputs"]] == ["frames", "wave"]
    assert enc["inputs"][0]["shape"][0] == "batch" and enc["outputs"][0]["shape"][0] == "batch_t"
    head = manifest["graphs"]["head"]
    assert [o["name"] for o in head["outputs"]] == HEAD_OUTPUTS[task]
    assert [i["name"] for i in head["inputs"]][:4] == ["v", "a", "v_cap", "a_cap"]
    empty = np.load(bundle / "empty_caption.npy")
    assert empty.shape == (77, manifest["text_dim"]) and empty.dtype == np.float32
    assert json.loads((bundle / "postprocess.json").read_text())["task"] == task

    parity = manifest["parity"]
    assert parity["passed"] and parity["batches"] == [1, 2, 3]
    fp32 = parity["precisions"]["fp32"]
    assert fp32["passed"], fp32["failures"]
    assert max(o["max_abs"] for o in fp32["end_to_end"]["outputs"].values()) <= 1e-4
    assert fp32["end_to_end"]["identical"]
    assert all(g["polygraphy_pass"] for g in fp32["graphs"].values())


def test_fp16_graphs(bundles):
    bundle = bundles("ave")
    manifest = verify_bundle(bundle)  # the FP16 conversion left the FP32 graphs byte-identical to the manifest
    fp16 = manifest["parity"]["precisions"]["fp16"]
    assert fp16["passed"], fp16["failures"]
    enc = fp16["graphs"]["encoder"]
    assert min(enc["v"]["cosine"], enc["a"]["cosine"]) >= 0.999
    assert fp16["end_to_end"]["agreement"] >= 0.99
    for name in (g for g in GRAPH_ORDER if g in manifest["graphs"]):
        entry = manifest["graphs"][f"{name}.fp16"]
        assert [i["dtype"] for i in entry["inputs"]] == [i["dtype"] for i in manifest["graphs"][name]["inputs"]]
        assert all(o["dtype"] == "float32" for o in entry["outputs"])
        assert check_graph(bundle / entry["file"]) == []
    # mixed precision: FP16 weights, LayerNorm / ReduceL2 / Softmax kept in FP32
    model = onnx.shape_inference.infer_shapes(onnx.load(str(bundle / "encoder.fp16.onnx")))
    types = {v.name: v.type.tensor_type.elem_type for v in list(model.graph.value_info) + list(model.graph.input)}
    types.update({i.name: i.data_type for i in model.graph.initializer})
    kept = [n for n in model.graph.node if n.op_type in ("LayerNormalization", "ReduceL2", "Softmax")]
    assert kept and all(types.get(n.input[0]) == onnx.TensorProto.FLOAT for n in kept)
    assert any(t == onnx.TensorProto.FLOAT16 for t in types.values())


def test_parity_fails_above_tolerance(bundles, tmp_path):
    bundle = tmp_path / "strict"
    shutil.copytree(bundles("avqa"), bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["tolerances"]["fp32"]["max_abs"] = 0.0
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    assert main(["parity", str(bundle)]) != 0
    assert read_manifest(bundle)["parity"]["passed"] is False


def test_altered_file_is_detected(bundles, tmp_path):
    bundle = tmp_path / "altered"
    shutil.copytree(bundles("avqa"), bundle)
    with open(bundle / "head.onnx", "r+b") as f:
        f.seek(-8, 2)
        f.write(b"\x00" * 8)
    with pytest.raises(BundleError, match="head.onnx"):
        verify_bundle(bundle)
    assert main(["parity", str(bundle)]) != 0


def test_fp16_reference_run_takes_one_clip():
    """AutoCast's reference run keeps every intermediate tensor, so `convert_fp16` gives it the first clip only:
    per-clip inputs one row, per-frame (B·T) inputs T rows (the head's mixed inputs stay consistent)."""
    from caeav.export.fp16 import one_clip

    feeds = {"v": np.zeros((20, 4)), "v_cap": np.zeros((2, 77, 8)), "question": np.zeros((2, 14), np.int64)}
    got = one_clip(feeds)
    assert {k: v.shape[0] for k, v in got.items()} == {"v": 10, "v_cap": 1, "question": 1}
    assert one_clip({"frames": np.zeros((1, 10, 3))})["frames"].shape == (1, 10, 3) and one_clip({}) == {}


def test_fp16_backend_avoids_a_reference_run_that_does_not_fit(monkeypatch):
    """AutoCast's reference run holds every intermediate tensor: `reference_run_bytes` counts them at the example's
    shapes (symbolic dims from the inputs), and "auto" picks onnxconverter-common, saying why, when they need more
    than half the available memory (the paper AVE encoder: 19.3 GB at one clip, killed on a 24 GB machine)."""
    from onnx import TensorProto, helper

    from caeav.export import fp16

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["h"]), helper.make_node("Relu", ["h"], ["y"])], "g",
                              [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch_t", 64])],
                              value_info=[helper.make_tensor_value_info("h", TensorProto.FLOAT, ["batch_t", 64])])
    model = helper.make_model(graph)  # h has a B·T dim no input carries: T = segments
    feeds = {"x": np.zeros((1, 64), np.float32)}
    assert fp16.reference_run_bytes(model, feeds, segments=10) == 10 * 64 * 4
    said = []
    monkeypatch.setattr(fp16, "available_bytes", lambda: 4 * 10 * 64)  # half of it is less than the run needs
    assert fp16._backend("auto", model, feeds, said.append, segments=10) == "onnxconverter"
    assert "reference run would hold" in said[0]
    monkeypatch.setattr(fp16, "available_bytes", lambda: 1 << 40)
    assert fp16._backend("auto", model, feeds, said.append, segments=10) in ("modelopt", "onnxconverter")
    assert len(said) == 1
    assert fp16._backend("onnxconverter", model, feeds) == "onnxconverter"
