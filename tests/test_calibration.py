"""INT8 calibration: calibration-input building and caching, Q/DQ PTQ with Model Optimizer, onnxruntime checks."""

from __future__ import annotations

import os
import sys
import time

import numpy as np
import pytest

from caeav.calibration import (
    agreement,
    build_calib_inputs,
    compare_graphs,
    cosine,
    count_qdq,
    excluded_nodes_quantized,
    load_calib_npz,
    nodes_in_scopes,
    quantize_int8,
    run_graph,
)
from caeav.errors import ExportError

SEGMENTS, SIZE = 2, 32


# ------------------------------------------------------------------------------------------------ calibration inputs

def _write_clip(path, seed: int) -> None:
    from caeav.media.write import write_video

    rng = np.random.default_rng(seed)
    frames = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(16)]
    t = np.arange(2 * 32000) / 32000.0
    audio = (0.3 * np.sin(2 * np.pi * (220 + 40 * seed) * t)).astype(np.float32)[None]
    write_video(path, frames, fps=8.0, audio=audio)


@pytest.fixture(scope="module")
def video_dir(tmp_path_factory):
    pytest.importorskip("av", reason="PyAV decodes the calibration clips")
    folder = tmp_path_factory.mktemp("calib-videos")
    for i in range(3):
        _write_clip(folder / f"clip{i}.mp4", i)
    return folder


def test_calib_inputs_from_videos_are_cached(video_dir, tmp_path, monkeypatch):
    import caeav.media

    cache = tmp_path / "cache"
    feeds = build_calib_inputs(video_dir, "ave", segments=SEGMENTS, size=SIZE, cache_dir=cache)
    assert feeds["frames"].shape == (3, SEGMENTS, 3, SIZE, SIZE) and feeds["frames"].dtype == np.float32
    assert feeds["wave"].shape == (3, SEGMENTS, 32000) and feeds["wave"].dtype == np.float32
    assert np.abs(feeds["wave"]).max() > 0.1          # the sine made it through
    files = list(cache.glob("calib-*.npz"))
    assert len(files) == 1 and not list(cache.glob("*.tmp-*"))
    # a rebuild with the same clips and settings reads the npz: decoding would fail here
    monkeypatch.setattr(caeav.media, "decode_clip", lambda *a, **k: pytest.fail("decoded again"))
    again = build_calib_inputs(video_dir, "ave", segments=SEGMENTS, size=SIZE, cache_dir=cache)
    assert all(np.array_equal(feeds[k], again[k]) for k in feeds)
    np.testing.assert_array_equal(load_calib_npz(files[0])["wave"], feeds["wave"])


def test_calib_cache_key_follows_clips_and_settings(video_dir, tmp_path):
    cache = tmp_path / "cache"
    build_calib_inputs(video_dir, "ave", segments=SEGMENTS, size=SIZE, cache_dir=cache)
    build_calib_inputs(video_dir, "ave", segments=SEGMENTS, size=SIZE + 16, cache_dir=cache)   # other size
    build_calib_inputs(video_dir, "avvp", segments=SEGMENTS, size=SIZE, cache_dir=cache)      # other sampling
    two = build_calib_inputs(video_dir, "ave", segments=SEGMENTS, size=SIZE, max_clips=2, cache_dir=cache)
    assert two["frames"].shape[0] == 2
    assert len(list(cache.glob("calib-*.npz"))) == 4
    clip = video_dir / "clip0.mp4"
    st = clip.stat()
    os.utime(clip, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))                        # a clip was touched
    build_calib_inputs(video_dir, "ave", segments=SEGMENTS, size=SIZE, cache_dir=cache)
    assert len(list(cache.glob("calib-*.npz"))) == 5


def test_calib_inputs_from_dataset_root(tmp_path):
    pytest.importorskip("av", reason="PyAV decodes the calibration clips")
    from caeav.data.synth import synth_dataset

    root = tmp_path / "ave"
    synth_dataset("ave", root, seed=2, clips=3, media="video")
    feeds = build_calib_inputs(root, "ave", size=SIZE, max_clips=2, cache_dir=tmp_path / "c")
    assert feeds["frames"].shape[0] == 2 and feeds["frames"].shape[2:] == (3, SIZE, SIZE)
    assert feeds["wave"].shape[0] == 2 and feeds["wave"].shape[-1] == 32000


def test_calib_source_errors(tmp_path):
    with pytest.raises(ExportError, match="not a directory"):
        build_calib_inputs(tmp_path / "missing", "ave")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ExportError):
        build_calib_inputs(tmp_path / "empty", "ave")


# ------------------------------------------------------------------------------------------------ metrics

def test_cosine_and_agreement():
    a = np.array([[1.0, 0.0], [0.0, 2.0]])
    assert cosine(a, a) == pytest.approx(1.0)
    assert cosine(a, -a) == pytest.approx(-1.0)
    assert cosine(np.zeros(3), np.zeros(3)) == 1.0 and cosine(np.zeros(3), np.ones(3)) == 0.0
    assert agreement(a, a) == 1.0
    assert agreement(a, a[:, ::-1]) == 0.0


# ------------------------------------------------------------------------------------------------ PTQ

class _Net:
    """A small audio-visual-ish graph: a `frontend` (power -> mel-like MatMul -> log, spanning decades like the
    log-mel) feeding conv/linear/LayerNorm layers; outputs features and class scores."""

    @staticmethod
    def build():
        import torch
        from torch import nn

        class FrontEnd(nn.Module):
            def __init__(self):
                super().__init__()
                self.register_buffer("mel", torch.rand(64, 16))

            def forward(self, wave):                       # [B, 16, 64] -> [B, 16]
                return torch.log10(torch.clamp((wave * wave) @ self.mel, min=1e-10)).mean(dim=1)

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.frontend = FrontEnd()
                self.conv = nn.Conv2d(3, 16, 3, padding=1)
                self.proj = nn.Linear(16, 64)
                self.norm = nn.LayerNorm(64)
                self.mlp = nn.Sequential(nn.Linear(64, 128), nn.GELU(), nn.Linear(128, 64))
                self.cls = nn.Linear(64, 10)

            def forward(self, frames, wave):                 # tokens [B, 64, C] like the encoder's [BT, L, C]
                x = torch.relu(self.conv(frames)).flatten(2).transpose(1, 2)
                x = self.proj(x + self.frontend(wave).unsqueeze(1))
                feats = self.norm(x + self.mlp(x))
                return feats, self.cls(feats.mean(dim=1))

        torch.manual_seed(0)
        return Net().eval()


def _inputs(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {"frames": rng.standard_normal((n, 3, 8, 8)).astype(np.float32),
            "wave": (10.0 ** rng.uniform(-3, 0, (n, 1, 1)) * rng.standard_normal((n, 16, 64))).astype(np.float32)}


@pytest.fixture(scope="module")
def fp32_graph(tmp_path_factory):
    torch = pytest.importorskip("torch", reason="the test graph is exported from PyTorch")
    pytest.importorskip("onnxscript", reason="torch.onnx's dynamo exporter needs onnxscript")
    path = tmp_path_factory.mktemp("ptq") / "net.onnx"
    feeds = _inputs(2, 0)
    torch.onnx.export(_Net.build(), (torch.from_numpy(feeds["frames"]), torch.from_numpy(feeds["wave"])), str(path),
                      input_names=["frames", "wave"], output_names=["features", "logits"],
                      dynamic_shapes=({0: "batch"}, {0: "batch"}), opset_version=20, dynamo=True,
                      external_data=False, verbose=False)
    return path


@pytest.fixture(scope="module")
def int8_graph(fp32_graph):
    pytest.importorskip("modelopt.onnx.quantization", reason="Model Optimizer is in the export extra")
    out = fp32_graph.with_name("net.int8.onnx")
    before = fp32_graph.read_bytes()
    t0 = time.perf_counter()
    path = quantize_int8(fp32_graph, _inputs(16, 1), out)
    print(f"quantize_int8: {time.perf_counter() - t0:.1f} s")
    assert fp32_graph.read_bytes() == before  # the FP32 graph (and its manifest sha256) is left as it was
    return path


def test_int8_graph_is_qdq_and_keeps_the_front_end_float(fp32_graph, int8_graph):
    import onnx

    assert int8_graph.is_file() and not list(int8_graph.parent.glob("*.tmp-*"))
    counts = count_qdq(int8_graph)
    assert counts["QuantizeLinear"] > 0 and counts["DequantizeLinear"] >= counts["QuantizeLinear"]
    quantised = {n.op_type for n in onnx.load(str(int8_graph)).graph.node
                 if any(i.endswith("DequantizeLinear_Output") for i in n.input)}
    assert {"Conv", "MatMul"} <= quantised or {"Conv", "Gemm"} <= quantised, quantised
    front = nodes_in_scopes(onnx.load(str(fp32_graph)), ["frontend"])
    assert front, "the exporter's scope metadata names the front-end nodes"
    assert excluded_nodes_quantized(int8_graph, fp32_graph) == []
    # without the exclusion the front end's MatMul is quantised: the check above can fail
    plain = quantize_int8(fp32_graph, _inputs(4, 1), int8_graph.with_name("net.all.int8.onnx"), exclude_scopes=())
    assert excluded_nodes_quantized(plain, fp32_graph) != []
    ref, q = onnx.load(str(fp32_graph)), onnx.load(str(int8_graph))
    io = lambda m: [(v.name, v.type.tensor_type.elem_type) for v in list(m.graph.input) + list(m.graph.output)]
    assert io(ref) == io(q)                                   # same names, float32 at the boundary


def test_int8_matches_fp32_in_onnxruntime(fp32_graph, int8_graph):
    feeds = _inputs(64, 2)
    report = compare_graphs(fp32_graph, int8_graph, feeds, batch=8)
    feats, logits = report["outputs"]["features"], report["outputs"]["logits"]
    agree = agreement(run_graph(fp32_graph, feeds)["logits"], run_graph(int8_graph, feeds)["logits"])
    print(f"int8 vs fp32: features cosine {feats['cosine']:.5f}, logits cosine {logits['cosine']:.5f}, "
          f"prediction agreement {agree:.3f}")
    assert feats["cosine"] >= 0.99 and logits["cosine"] >= 0.99
    assert agree >= 0.9
    assert 0 < feats["max_abs"]                                # it really is quantised, not a copy
    for b in (1, 3):                                           # dynamic batch survives quantisation
        assert run_graph(int8_graph, _inputs(b, 3))["logits"].shape == (b, 10)


def test_quantize_rejects_bad_inputs(fp32_graph, tmp_path):
    with pytest.raises(ExportError, match="missing"):
        quantize_int8(fp32_graph, {"frames": np.zeros((2, 3, 8, 8), np.float32)}, tmp_path / "x.onnx")
    bad = _inputs(2, 0)
    bad["wave"] = bad["wave"][:1]
    with pytest.raises(ExportError, match="same non-zero number"):
        quantize_int8(fp32_graph, bad, tmp_path / "x.onnx")
    with pytest.raises(ExportError, match="method"):
        quantize_int8(fp32_graph, _inputs(2, 0), tmp_path / "x.onnx", method="percentile-ish")
    with pytest.raises(ExportError, match="not found"):
        quantize_int8(tmp_path / "none.onnx", _inputs(2, 0), tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_missing_model_optimizer_is_one_clear_error(fp32_graph, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "modelopt.onnx.quantization", None)   # import -> ImportError
    with pytest.raises(ExportError, match="Model Optimizer"):
        quantize_int8(fp32_graph, _inputs(2, 0), tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()
