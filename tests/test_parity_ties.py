"""CASE top-K near-ties in fp32 parity (caeav.export.parity_ties): a clip is exempt from max abs only when flipping a
near-tied choice in PyTorch reproduces the graphs' output; errors without that proof still fail."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from caeav.cli.main import main
from caeav.export.manifest import read_manifest
from caeav.export.parity_ties import TIE_GAP, flip_hook, tie_exemptions, topk_gaps
from caeav.model.case import GumbelTopK
from caeav.runtime.bundle import DEFAULT_BUNDLE


def test_topk_gaps_and_flip_hook_swap_only_the_named_rows():
    x = torch.zeros(3, 4, 1)
    x[:, :, 0] = torch.tensor([[4.0, 3.0, 2.0, 1.0], [1.0, 2.0, 2.0001, 0.5], [2.0, 1.0, 3.0, 0.0]])
    k = 2
    np.testing.assert_allclose(topk_gaps(x, k), [(9 - 4) / 9, (4 - 1) / 4, (4 - 1) / 4], rtol=1e-6)
    assert np.isinf(topk_gaps(x, 4)).all()
    topk = GumbelTopK().eval()
    plain, _ = topk(x, k)
    handle = topk.register_forward_hook(flip_hook(0, np.array([1])))
    flipped, _ = topk(x, k)
    handle.remove()
    assert torch.equal(flipped[[0, 2]], plain[[0, 2]])  # other rows untouched
    kept = lambda m: set(torch.nonzero(m[1, :, 0]).flatten().tolist())  # noqa: E731
    assert kept(plain) == {1, 2} and kept(flipped) == {2, 0}  # the 2nd-best (index 1) swapped for the 3rd (index 0)


def _case(err_clip1: float, flipped_matches: bool, gap: float):
    """Two clips × 2 frames, one head output; clip 1 of the graphs' output is off by err_clip1."""
    ref = {"out": np.zeros((2, 2, 3), np.float32)}
    got = {"out": ref["out"].copy()}
    got["out"][1] += err_clip1
    gaps = [np.array([1.0, 1.0, 1.0, gap]), np.full(4, np.inf)]  # frame 1 of clip 1 near-tied in the visual top-K
    calls = []

    def head_flipped(call, rows):
        calls.append((call, rows.tolist()))
        out = {"out": ref["out"].copy()}
        if flipped_matches and call == 0 and rows.tolist() == [3]:
            out["out"][1] += err_clip1
        return out

    return got, ref, gaps, head_flipped, calls


def test_a_proven_flip_is_exempt():
    got, ref, gaps, head, calls = _case(0.01, True, 1e-7)
    result = tie_exemptions(got, ref, gaps, 2, 1e-4, head)
    assert result == {"clips": 2, "tie_exempt_clips": 1, "max_abs_checked": 0.0}
    assert calls == [(0, [3])]


@pytest.mark.parametrize("matches, gap", [(False, 1e-7), (True, 10 * TIE_GAP)])
def test_errors_without_a_proven_flip_still_count(matches, gap):
    got, ref, gaps, head, calls = _case(0.01, matches, gap)
    result = tie_exemptions(got, ref, gaps, 2, 1e-4, head)
    assert result["tie_exempt_clips"] == 0 and result["max_abs_checked"] == pytest.approx(0.01)
    assert bool(calls) == (gap < TIE_GAP)  # no near-tie: nothing to try


def test_bundled_default_passes_parity_with_its_one_flipped_clip(tmp_path):
    """The trained default bundle on random inputs: one clip's audio top-K near-tie flips in onnxruntime (0.009 off);
    flipping it in PyTorch reproduces the graphs' output, every other clip stays within 1e-4."""
    bundle = tmp_path / "default"
    shutil.copytree(DEFAULT_BUNDLE, bundle)
    assert main(["parity", str(bundle)]) == 0
    fp32 = read_manifest(bundle)["parity"]["precisions"]["fp32"]
    e2e = fp32["end_to_end"]
    assert max(o["max_abs"] for o in e2e["outputs"].values()) > 1e-3  # the flip is real...
    assert e2e["tie_exempt_clips"] == 1 and e2e["max_abs_checked"] <= 1e-4  # ...and the only exception
    assert e2e["identical"] and all(g["polygraphy_pass"] for g in fp32["graphs"].values())
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["tolerances"]["fp32"]["max_abs"] = 1e-7  # nothing proves a 1e-6 rounding error is a flip
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    assert main(["parity", str(bundle)]) != 0
    failures = read_manifest(bundle)["parity"]["precisions"]["fp32"]["failures"]
    assert any("head outputs max abs error" in f for f in failures), failures
