"""`caeav parity` on AVS and AVQA bundles: mask pixel agreement and answer agreement next to max |Δ|, FP16 included,
judged like AVE/AVVP (`caeav.export.parity`). The tiny random-weight bundles are exported once per session (module
scope; nothing else exports them with FP16) and checked with the CLI."""

import numpy as np
import pytest

from caeav.cli.main import main
from caeav.export.parity import _failures, prediction_agreement, task_predictions

T = 5  # AVS segments


# ---------------------------------------------------------------- the agreement rules (no bundle needed)

def test_mask_pixel_agreement_counts_thresholded_pixels():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((2 * T, 1, 8, 8)).astype(np.float32)
    test = ref + np.float32(1e-3)  # moves no pixel whose |logit| is above 1e-3
    small = np.abs(ref) < 1e-3
    flip = np.zeros_like(ref, dtype=bool)
    flip.flat[[3, 70, 500]] = True  # three pixels change sign
    test[flip] = -ref[flip] - np.sign(ref[flip])
    got = prediction_agreement("avs_s4", task_predictions("avs_s4", {"masks": ref}, T),
                               task_predictions("avs_s4", {"masks": test}, T))
    changed = 3 + int((small & ~flip & (ref <= 0) & (test > 0)).sum())
    assert got["agreement_of"] == "mask pixels" and got["compared"] == ref.size == 640
    assert got["agreeing"] == 640 - changed and got["agreement"] == pytest.approx((640 - changed) / 640)
    assert not got["identical"]


def test_answer_agreement_is_identical_argmax_answers():
    ref = np.array([[0.1, 2.0, 0.3], [1.0, 0.0, 0.5], [0.0, 0.0, 3.0]], np.float32)
    test = ref.copy()
    test[1, 2] = 1.5  # question 1 now answers 2
    test[2] += 0.4  # question 2: same answer, other logits
    got = prediction_agreement("avqa", task_predictions("avqa", {"answer": ref}, T),
                               task_predictions("avqa", {"answer": test}, T))
    assert got == {"agreement_of": "answers", "agreeing": 2, "compared": 3, "agreement": pytest.approx(2 / 3),
                   "identical": False}


def _record(agreement_of: str, agreement: float, max_abs: float = 1e-6) -> dict:
    e2e = {"agreement_of": agreement_of, "agreement": agreement, "identical": agreement == 1.0,
           "max_abs_checked": max_abs, "outputs": {}}
    return {"end_to_end": e2e, "graphs": {"encoder": {"v": {"cosine": 1.0}, "a": {"cosine": 1.0}}}}


@pytest.mark.parametrize("kind", ["mask pixels", "answers"])
def test_pass_fail_is_judged_like_ave_and_avvp(kind):
    from caeav.export.bundle import TOLERANCES

    assert _failures("fp32", _record(kind, 1.0), TOLERANCES["fp32"]) == []
    fp32 = _failures("fp32", _record(kind, 0.999), TOLERANCES["fp32"])  # fp32: every prediction identical
    assert fp32 == [f"{kind} differ (agreement 0.9990)"]
    assert _failures("fp16", _record(kind, 0.995), TOLERANCES["fp16"]) == []  # fp16: agreement >= 0.99
    fp16 = _failures("fp16", _record(kind, 0.98), TOLERANCES["fp16"])
    assert fp16 == [f"agreement of {kind} 0.9800 < 0.99"]


# ---------------------------------------------------------------- tiny AVS and AVQA bundles, FP32 + FP16

BATCH = "1:2:3"
CLIPS = 1 + 2 + 3  # parity runs batches 1, 2 and 3


@pytest.fixture(scope="module")
def bundle_parity(tmp_path_factory):
    """task -> (manifest, `caeav parity` stdout) of a tiny random-weight bundle with FP16 graphs."""
    from caeav.export.manifest import verify_bundle

    root = tmp_path_factory.mktemp("task_bundles")
    made = {}

    def get(task, capsys):
        if task not in made:
            out = root / task
            assert main(["export", "--config", "tiny", "--random-weights", "--task", task, "--precision", "fp16",
                         "--batch", BATCH, "--out", str(out)]) == 0
            capsys.readouterr()
            code = main(["parity", str(out)])
            made[task] = (code, verify_bundle(out), capsys.readouterr().out)
        return made[task]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("task,kind", [("avs_s4", "mask pixels"), ("avqa", "answers")])
def test_parity_reports_task_agreement_for_fp32_and_fp16(bundle_parity, capsys, task, kind):
    code, manifest, out = bundle_parity(task, capsys)
    assert code == 0, out
    parity = manifest["parity"]
    assert parity["passed"] and manifest["precisions"] == ["fp32", "fp16"]
    mask = manifest["config"]["task"]["head"].get("mask_size") or manifest["image_size"]
    compared = CLIPS * T * mask * mask if task == "avs_s4" else CLIPS
    for precision in ("fp32", "fp16"):
        record = parity["precisions"][precision]
        e2e = record["end_to_end"]
        assert record["passed"], record["failures"]
        assert e2e["agreement_of"] == kind and e2e["compared"] == compared
        assert e2e["agreement"] >= 0.99 and e2e["agreeing"] >= 0.99 * compared
        assert max(o["max_abs"] for o in e2e["outputs"].values()) > 0  # a real comparison, not a copy
        line = next(li for li in out.splitlines() if li.strip().startswith(f"{precision}:"))
        assert "max |Δ|" in line and f"agreement of {kind}" in line and f"of {compared:,} in all" in line
    assert parity["precisions"]["fp32"]["end_to_end"]["identical"]
    print(task, {p: (max(o["max_abs"] for o in r["end_to_end"]["outputs"].values()), r["end_to_end"]["agreement"])
                 for p, r in parity["precisions"].items()})


@pytest.mark.slow
def test_avs_bundle_records_the_expert_attention_axis(bundle_parity, capsys):
    _, manifest, _ = bundle_parity("avs_s4", capsys)
    avmoe = manifest["config"]["task"]["avmoe"]
    assert avmoe["ua_attention"] == "mhsa" and avmoe["ua_mhsa_axis"] == "tokens"
