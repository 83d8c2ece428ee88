"""Lean bundles (issue 17): each weight once per precision, and bundle bytes within 1.1 × the parameter bytes.

Rules, on the shared tiny AVE bundle (FP32 + FP16 + INT8 + INT8-CPU, tests/tiny_exports.py):

* no duplicated initializer within a graph or across the graphs the runtime loads at one precision (`Bundle.graph`:
  a graph's variant, else its FP32 file), compared by a SHA-256 of dtype, shape and bytes. Exempt: tensors under
  `SMALL` bytes (scalars, shape vectors, axes: every ONNX file is self-contained, so each needs its own, and they
  cost bytes, not megabytes) and tensors whose elements are all equal (random weights give every LayerNorm γ = 1,
  β = 0 and zero biases, equal by construction across graphs, not a weight stored twice; a trained model has none);
* bytes of the graph files (and external-data sidecars) the runtime loads at FP32 ≤ 1.1 × the parameter bytes, where
  the parameter bytes = every parameter and buffer of the model and the caption text tower, 4 bytes per element,
  each counted once (built on the meta device from the manifest's config); at FP16 ≤ 1.1 × 0.6 × the parameter
  bytes (half-width weights, plus the few tensors AutoCast keeps FP32: the front end's DFT kernel and mel tables);
  at INT8 (Q/DQ encoder whose weights stay FP32, FP32 elsewhere) ≤ the FP32 bound; at INT8-CPU (int8 weights in
  the encoder) below the FP32 bytes. `checkpoint/` is not counted: it
  is the optional PyTorch copy of the weights (`--no-checkpoint`).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from caeav.runtime.bundle import Bundle
from tiny_exports import tiny_ave_bundle

SMALL = 1024  # bytes


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return Bundle.load(tiny_ave_bundle(tmp_path_factory))


def _files(bundle: Bundle, precision: str) -> list:
    """The GraphSpecs the runtime loads at `precision` (text_encoder included)."""
    names = dict.fromkeys(k.split(".")[0] for k in bundle.manifest["graphs"])
    return [bundle.graph(n, precision) for n in names]


def _digests(path) -> list:
    """(sha256, bytes, name) of every initializer of an ONNX file that the rules do not exempt."""
    out = []
    for init in onnx.load(str(path)).graph.initializer:
        a = numpy_helper.to_array(init)
        if a.nbytes < SMALL or (a.size and np.all(a == a.flat[0])):
            continue
        key = hashlib.sha256(f"{a.dtype}{a.shape}".encode() + np.ascontiguousarray(a).tobytes()).hexdigest()
        out.append((key, a.nbytes, init.name))
    return out


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8", "int8cpu"])
def test_no_duplicated_initializer(bundle, precision):
    assert precision in bundle.precisions
    where = defaultdict(list)
    for spec in _files(bundle, precision):
        for key, nbytes, name in _digests(bundle.path / spec.file):
            where[key].append((spec.file, name, nbytes))
    dups = {k: v for k, v in where.items() if len(v) > 1}
    assert not dups, f"{len(dups)} initializers stored more than once, e.g. {sorted(dups.values())[:3]}"


def _parameter_bytes(bundle: Bundle) -> int:
    import torch

    from caeav.config import ModelConfig
    from caeav.model.cae_av import build_model
    from caeav.model.text_tower import build_text_tower

    cfg = ModelConfig.from_dict(bundle.manifest["config"])
    modules = [build_model(cfg, device="meta")]
    if "text_encoder" in bundle.manifest["graphs"]:
        with torch.device("meta"):
            modules.append(build_text_tower(cfg.caption, load_weights=False))
    tensors = {id(t): t for m in modules for t in [*m.parameters(), *m.buffers()]}
    return 4 * sum(t.numel() for t in tensors.values())


def _bytes(bundle: Bundle, precision: str) -> int:
    files = {spec.file for spec in _files(bundle, precision)}
    files |= {f for spec in _files(bundle, precision) for f, _ in spec.data_files}
    return sum((bundle.path / f).stat().st_size for f in files)


def test_bundle_bytes_within_parameter_bytes(bundle):
    params = _parameter_bytes(bundle)
    fp32, fp16, int8, int8cpu = (_bytes(bundle, p) for p in ("fp32", "fp16", "int8", "int8cpu"))
    assert fp32 <= 1.1 * params, (fp32, params)
    assert fp16 <= 0.6 * 1.1 * params, (fp16, params)
    assert int8 <= 1.1 * params, (int8, params)
    assert int8cpu < fp32, (int8cpu, fp32)  # its encoder weights are int8


def test_dedupe_file_merges_copies_and_keeps_external_data(tmp_path):
    """`caeav.export.dedup.dedupe_file` on a graph whose weights live in `<file>.data` (as the paper's do): the two
    equal weights become one, the sidecar is rewritten beside the graph, and the outputs do not change."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from caeav.export.dedup import dedupe_file

    w = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w1"), numpy_helper.from_array(w.copy(), "w2")]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["y1"]), helper.make_node("MatMul", ["y1", "w2"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 64])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    path = tmp_path / "g.onnx"
    onnx.save(model, str(path), save_as_external_data=True, location="g.onnx.data", size_threshold=0)
    x = np.ones((2, 64), np.float32)
    before = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert dedupe_file(path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.onnx", "g.onnx.data"]  # no temporary left
    assert (tmp_path / "g.onnx.data").stat().st_size == w.nbytes  # one copy
    after = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_array_equal(before, after)
    assert dedupe_file(path) == 0  # nothing left to merge: the file is not rewritten
