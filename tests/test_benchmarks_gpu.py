"""benchmarks/gpu.py (issue 17's GPU run) in its `--dry-run`: the same code path on the CPU with `tiny`, so the
script a device machine runs is known to work before any device time is spent."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from caeav.runtime.bundle import DEFAULT_BUNDLE

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu.py"


@pytest.fixture(scope="module")
def gpu():
    spec = importlib.util.spec_from_file_location("caeav_bench_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # a minute on 2 cores (four torch modes incl. torch.compile); the GPU run itself is the real check
def test_dry_run_writes_the_report(gpu, tmp_path, capsys):
    out = tmp_path / "report.json"
    assert gpu.main(["--dry-run", "--out", str(out), "--bundle", str(DEFAULT_BUNDLE)]) == 0
    report = json.loads(out.read_text())
    assert report["dry_run"] and report["config"] == "tiny" and report["machine"]["device"] == "cpu"
    flops = report["flops_per_clip"]
    assert flops > 0
    rows = report["torch"]
    assert [(r["mode"], r["batch"]) for r in rows] == [(m, b) for m in gpu.MODES for b in (1,)]
    for r in rows:
        assert r["status"] == "ok", r
        # clips/s is rounded to 2 decimals in the report: compare with the unrounded ms per clip
        assert r["tflop_s"] == pytest.approx(flops / (r["ms_per_clip"] / 1e3) / 1e12, rel=0.01, abs=1e-6)
        assert r["ms_per_clip"] == pytest.approx(r["latency_ms"] / r["batch"], rel=1e-3)
    ort = report["onnxruntime"]
    assert ort["status"] == "ok" and "CPUExecutionProvider" in ort["providers"] and ort["latency_ms"] > 0
    trt = report["tensorrt"]
    assert isinstance(trt["nvinfer_libraries"], list) and "tensorrt" in trt and trt["engines"].startswith("skipped")
    assert "report:" in capsys.readouterr().out


def test_peak_table_and_bad_input(gpu, tmp_path, capsys):
    assert gpu.bf16_peak("NVIDIA H100 80GB HBM3") == 989.4 and gpu.bf16_peak("NVIDIA H100 PCIe") == 756.5
    assert gpu.bf16_peak("NVIDIA H200") == 989.4 and gpu.bf16_peak("Some GPU") is None
    assert gpu.main(["--dry-run", "--task", "nope", "--out", str(tmp_path / "r.json")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and not (tmp_path / "r.json").exists()
