"""GFLOP/s in `caeav bench` (issue 17): `caeav export` records the FLOPs per clip of each graph in the manifest,
`caeav bench` prints achieved GFLOP/s per engine and `--json` reports it; a bundle exported before that still benches
and says the figure is unknown. One shared tiny AVE bundle (tests/tiny_exports.py)."""

from __future__ import annotations

import json
import shutil

import pytest

from caeav.cli.main import main
from caeav.export.manifest import update_manifest, verify_bundle
from caeav.runtime.bundle import Bundle
from tiny_exports import tiny_ave_bundle

BENCH = ["--engines", "ort", "--batch", "1,2", "--repeats", "2", "--warmup", "1", "--threads", "1"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return tiny_ave_bundle(tmp_path_factory)


def test_export_records_flops_per_graph(bundle):
    from caeav.config import ModelConfig
    from caeav.model.flops import flops_report

    manifest = verify_bundle(bundle)
    flops = manifest["flops"]
    assert set(flops["graphs"]) == {"caption_projector", "encoder", "head"}  # the graphs one clip runs
    assert all(isinstance(v, int) and v > 0 for v in flops["graphs"].values())
    assert flops["total"] == sum(flops["graphs"].values()) == Bundle.load(bundle).flops_per_clip
    assert "T = 10" in flops["per"] and "multiply-add = 2 FLOPs" in flops["convention"]
    # the graph wrappers count the same work as `caeav model summary --flops` on the whole model
    assert flops["total"] == flops_report(ModelConfig.from_dict(manifest["config"]))["total"]


def test_bench_json_reports_gflop_s(bundle, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", str(bundle), *BENCH, "--json", str(out)]) == 0
    assert "GFLOP/s" in capsys.readouterr().out
    result = json.loads(out.read_text())
    flops = result["flops_per_clip"]
    assert flops == Bundle.load(bundle).flops_per_clip and result["flops_note"] == ""
    rows = [r for r in result["rows"] if r["status"] == "ok"]
    assert {r["engine"] for r in rows} == {"torch", "ort"} and len(rows) == 4
    for r in rows:
        assert r["gflop_s"] > 0
        assert r["gflop_s"] == pytest.approx(flops * r["clips_per_s"] / 1e9, rel=1e-3, abs=0.01)
        assert r["gflop_s"] == pytest.approx(flops / (r["p50_ms"] / 1000) / 1e9, rel=0.02)  # flops / latency


def test_bench_of_a_bundle_without_flops_says_unknown(bundle, tmp_path, capsys):
    old = tmp_path / "old"
    shutil.copytree(bundle, old, ignore=shutil.ignore_patterns("*.fp16.onnx*", "*.int8.onnx*", "*.int8cpu.onnx*"))
    update_manifest(old, lambda m: (m.pop("flops"), [m["graphs"].pop(k) for k in list(m["graphs"]) if "." in k]))
    out = tmp_path / "bench.json"
    assert main(["bench", str(old), "--engines", "ort", "--batch", "1", "--repeats", "1", "--warmup", "0",
                 "--threads", "1", "--json", str(out)]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert "GFLOP/s unknown" in printed and "re-export" in printed
    result = json.loads(out.read_text())
    assert result["flops_per_clip"] is None and "re-export" in result["flops_note"]
    assert [r["gflop_s"] for r in result["rows"]] == [None, None]
    assert all(r["status"] == "ok" and r["p50_ms"] > 0 for r in result["rows"])
