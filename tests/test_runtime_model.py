"""caeav.runtime on the real `tiny` model (random weights): torch-free end to end, parity with PyTorch, `caeav bench`.

The bundle comes from `caeav export` when the exporter is installed, else from tests/runtime_bundles.py's own
torch.onnx.export of the three graphs; a checkpoint of the same weights feeds the PyTorch side. Exporting takes the
better part of a minute on 2 cores, so one bundle serves the whole module.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from caeav.runtime.bundle import DEFAULT_BUNDLE, DEFAULT_SAMPLE
from caeav.cli.main import main
from caeav.media.write import write_video
from runtime_bundles import model_bundle

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-ave")
    bundle, ckpt = model_bundle(root, "ave")
    t = np.arange(12 * 16000) / 16000
    tone = (0.4 * np.sin(2 * np.pi * 660 * t) * (t > 4)).astype(np.float32)[None]
    frames = []
    for i in range(12 * 4):
        img = np.full((64, 64, 3), 30, np.uint8)
        img[16:48, (i * 3) % 40:(i * 3) % 40 + 24] = (200, 80, 40)
        frames.append(img)
    clip = root / "clip.mp4"
    write_video(clip, frames[:40], fps=4, audio=tone[:, : 10 * 16000], sample_rate=16000)
    long_clip = root / "long.mp4"
    write_video(long_clip, frames, fps=4, audio=tone, sample_rate=16000)
    return {"bundle": bundle, "ckpt": ckpt, "clip": clip, "long": long_clip, "root": root}


def _run_torch_free(code: str) -> subprocess.CompletedProcess:
    prog = textwrap.dedent(code) + "\nassert 'torch' not in sys.modules, 'torch was imported'\n"
    return subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, cwd=REPO, timeout=300)


def test_end_to_end_without_torch(tiny, tmp_path):
    out, png = tmp_path / "r.json", tmp_path / "r.png"
    proc = _run_torch_free(f"""
        import sys
        from caeav.cli.main import main
        code = main(["infer", {str(tiny['clip'])!r}, {str(tiny['long'])!r}, "--bundle", {str(tiny['bundle'])!r},
                     "--engine", "ort", "--json", {str(out)!r}, "--plot", {str(png)!r}])
        assert code == 0, code
        import caeav.runtime.bench, caeav.runtime.session_trt, caeav.runtime.plot  # the rest of the package too
    """)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert [v["seconds"] for v in doc["videos"]] == [10, 12] and doc["engine"]["name"] == "ort"
    assert len(doc["videos"][1]["windows"]) == 2 and png.stat().st_size > 0
    assert "clip.mp4" in proc.stdout  # the table


def test_bundled_default_or_a_clear_error(tmp_path):
    out = tmp_path / "d.json"
    proc = _run_torch_free(f"""
        import sys
        from caeav.cli.main import main
        sys.exit(main(["infer", "--json", {str(out)!r}, "-q"]))
    """)
    if (DEFAULT_BUNDLE / "manifest.json").is_file() and DEFAULT_SAMPLE.is_file():
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert json.loads(out.read_text())["videos"][0]["seconds"] >= 1
    else:
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
        assert "no bundled default model" in proc.stderr or "no bundled sample clip" in proc.stderr


def test_matches_pytorch_predictions(tiny, tmp_path, capsys):
    import torch

    from caeav.media import decode_clip, sampling_for_task
    from caeav.model.heads.postprocess import ave_predict
    from caeav.runtime import Bundle
    from caeav.runtime.session_torch import reference_model

    out = tmp_path / "r.json"
    assert main(["infer", str(tiny["clip"]), "--bundle", str(tiny["bundle"]), "--engine", "ort", "--json", str(out),
                 "-q"]) == 0
    video = json.loads(out.read_text())["videos"][0]

    bundle = Bundle.load(tiny["bundle"])
    model, cfg = reference_model(bundle, tiny["ckpt"])
    media = decode_clip(tiny["clip"], segments=cfg.task.segments, size=cfg.task.input_size,
                        sampling=sampling_for_task("ave"), strict=True)
    empty = torch.from_numpy(bundle.empty_caption())[None]
    with torch.no_grad():
        ref = model(torch.from_numpy(media.frames)[None], torch.from_numpy(media.audio)[None], empty, empty)
    ref = {k: v.numpy() for k, v in ref.items()}
    assert [s["index"] for s in video["per_second"]] == ave_predict(ref)[0].tolist()
    event_prob = 1 / (1 + np.exp(-ref["is_event"][0].astype(np.float64)))
    np.testing.assert_allclose([s["event_prob"] for s in video["per_second"]], event_prob, atol=2e-4)

    # the same through `--engine torch` (the PyTorch model behind the runtime's graph interface; weights found
    # through the manifest's `source`)
    assert main(["infer", str(tiny["clip"]), "--bundle", str(tiny["bundle"]), "--engine", "torch", "--json",
                 str(out), "-q"]) == 0
    via_torch = json.loads(out.read_text())["videos"][0]
    assert [s["index"] for s in via_torch["per_second"]] == [s["index"] for s in video["per_second"]]


def test_torch_engine_without_weights_is_one_line(tiny, tmp_path, capsys):
    import shutil

    bundle = Path(shutil.copytree(tiny["bundle"], tmp_path / "b"))
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest.pop("source", None)
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    code = main(["infer", str(tiny["clip"]), "--bundle", str(bundle), "--engine", "torch", "-q"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--checkpoint" in err, err


def test_bench_table(tiny, tmp_path, capsys):
    from caeav.runtime.bench import run_bench

    result = run_bench(tiny["bundle"], engines=["torch", "ort"], batches=[1, 2], precisions=["fp32", "int8"],
                       repeats=2, warmup=1, clip=tiny["clip"], checkpoint=tiny["ckpt"])
    rows = {(r.engine, r.precision, r.batch): r for r in result.rows}
    assert set(rows) == {("torch", "fp32", 1), ("torch", "fp32", 2), ("ort", "fp32", 1), ("ort", "fp32", 2),
                         ("ort", "int8", 1), ("ort", "int8", 2)}
    for key in [("torch", "fp32", 1), ("ort", "fp32", 1), ("ort", "fp32", 2)]:
        r = rows[key]
        assert r.status == "ok" and r.p50_ms > 0 and r.p95_ms >= r.p50_ms and r.clips_per_s > 0
        assert r.speedup is not None and r.peak_mem_mb and r.peak_mem_mb > 0
        assert r.max_abs_diff < 1e-3 and r.label_agreement == 1.0
    assert rows[("ort", "int8", 1)].status.startswith("skipped") or rows[("ort", "int8", 1)].p50_ms > 0
    assert result.preprocess_ms["decode_ms"] > 0

    out = tmp_path / "b.json"
    assert main(["bench", str(tiny["bundle"]), "--engines", "ort", "--repeats", "1", "--warmup", "0", "--clip",
                 str(tiny["clip"]), "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "speed-up" in table and "preprocessing" in table and "ort" in table
    rows = json.loads(out.read_text())["rows"]
    assert [(r["engine"], r["status"]) for r in rows] == [("torch", "ok"), ("ort", "ok")]  # the reference always runs
    assert rows[1]["speedup"] > 0 and rows[1]["label_agreement"] == 1.0


def test_bench_script_is_the_cli(tmp_path):
    proc = subprocess.run([sys.executable, "benchmarks/bench.py", "--help"], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert proc.returncode == 0 and "--precisions" in proc.stdout


def test_tensorrt_engines(tiny, tmp_path, capsys):
    """Builds engines for the tiny bundle and checks them against onnxruntime (needs TensorRT and a GPU)."""
    pytest.importorskip("tensorrt", reason="TensorRT is not installed here: the engine runner needs it (and a GPU)")
    import shutil

    from caeav.export.trt_build import build_engines
    from caeav.export.trt_runtime_check import gpu_compute_capability

    try:
        gpu_compute_capability()
    except Exception as exc:
        pytest.skip(f"no CUDA GPU for TensorRT: {exc}")
    bundle = Path(shutil.copytree(tiny["bundle"], tmp_path / "b"))
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["engines"] = build_engines(bundle, manifest, "fp32", (1, 2, 4))
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    out_trt, out_ort = tmp_path / "trt.json", tmp_path / "ort.json"
    assert main(["infer", str(tiny["clip"]), "--bundle", str(bundle), "--engine", "trt", "--json", str(out_trt),
                 "-q"]) == 0
    assert main(["infer", str(tiny["clip"]), "--bundle", str(bundle), "--engine", "ort", "--json", str(out_ort),
                 "-q"]) == 0
    trt, ort = (json.loads(p.read_text())["videos"][0]["per_second"] for p in (out_trt, out_ort))
    assert [s["index"] for s in trt] == [s["index"] for s in ort]
