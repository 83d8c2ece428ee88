"""`caeav bench --roofline` and the PyTorch BF16 autocast row (issue 17): the machine's GEMM rates measured in the
same run, each row's share of the rate of the arithmetic it runs, and `--precisions bf16` as a torch-only reference
row. One shared tiny AVE bundle (tests/tiny_exports.py)."""

from __future__ import annotations

import json

import pytest

from caeav.cli.main import main
from caeav.runtime.roofline import RATE_OF, GemmRates, gemm_rates
from tiny_exports import tiny_ave_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return tiny_ave_bundle(tmp_path_factory)


def test_gemm_rates_measure_every_kind():
    rates = gemm_rates(threads=1, size=256, repeats=2, torch_too=True)
    assert set(rates.measured) == {"ort fp32", "ort int8", "torch fp32", "torch bf16"}
    assert all(v > 0 for v in rates.measured.values()), rates.measured
    assert rates.rates["fp32"] == max(rates.measured["ort fp32"], rates.measured["torch fp32"])
    assert rates.rates["int8"] == rates.measured["ort int8"] and rates.rates["bf16"] == rates.measured["torch bf16"]


def test_share_uses_the_rate_of_the_rows_arithmetic():
    rates = GemmRates(4096, 2, {"ort fp32": 100.0, "torch fp32": 80.0, "torch bf16": 200.0, "ort int8": 400.0})
    assert rates.share("fp32", 50.0) == 0.5 and rates.share("fp16", 50.0) == 0.5  # x86 ORT runs FP16 graphs in FP32
    assert rates.share("bf16", 50.0) == 0.25
    assert rates.share("int8", 100.0) == rates.share("int8cpu", 100.0) == 0.25
    assert rates.share("fp32", None) is None and set(RATE_OF.values()) <= {"fp32", "bf16", "int8"}
    assert GemmRates(4096, 2, {}).share("fp32", 10.0) is None  # nothing measured: no share, not a crash


def test_bench_roofline_and_bf16_row(bundle, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", str(bundle), "--engines", "torch,ort", "--precisions", "fp32,bf16", "--batch", "1",
                 "--repeats", "1", "--warmup", "0", "--threads", "1", "--roofline", "--roofline-size", "512", "--json", str(out)]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert "of GEMM" in printed and "torch bf16" in printed
    result = json.loads(out.read_text())
    rows = {(r["engine"], r["precision"]): r for r in result["rows"]}
    assert set(rows) == {("torch", "fp32"), ("torch", "bf16"), ("ort", "fp32")}  # ORT has no BF16 graphs
    bf16 = rows[("torch", "bf16")]
    assert bf16["status"] == "ok" and "BF16 autocast" in bf16["detail"] and bf16["label_agreement"] is not None
    assert bf16["max_abs_diff"] > 0  # it really ran in BF16: not bit-identical with the FP32 reference
    roof = result["roofline"]
    assert roof["rates"]["fp32"] > 0 and roof["rates"]["bf16"] > 0 and roof["rates"]["int8"] > 0
    for (engine, precision), r in rows.items():
        rate = roof["rates"][RATE_OF[precision]]
        assert r["roofline_share"] == pytest.approx(r["gflop_s"] / rate, abs=1e-3)
