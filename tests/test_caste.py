"""CASTE (P Eq. 1-9, architecture.md §4): gate, enrichment locality, top-K mask, init invariants, sizes, ONNX export."""

from __future__ import annotations

import json
from importlib import resources

import pytest
import torch

from caeav.config import CASTEConfig
from caeav.model.caste import CASTE, AgreementGate, convert_authors_caste_state_dict, topk_count, topk_token_mask
from caeav.model.enrichment import TemporalEnrichment

CFG = CASTEConfig()


def _small(T: int = 4, L: int = 10, C: int = 16, C_other: int = 8, seed: int = 0) -> CASTE:
    torch.manual_seed(seed)
    return CASTE(C, C_other, L, T, CFG).eval()


def _open_gates(m: CASTE, value: float = 1.0) -> CASTE:
    """Set γ, γ_sp, γ_tm non-zero so every branch is visible in the residual."""
    with torch.no_grad():
        for g in (m.gamma, m.spatial.gamma, m.temporal.gamma):
            g.fill_(value)
    return m


# ---- agreement gate (Eq. 1-4) ----------------------------------------------------------------------------------------


def test_gate_weights_are_softmax_of_lambda_plus_prior():
    torch.manual_seed(0)
    gate = AgreementGate(16, 8, gate_dim=12, gate_hidden=6)
    x, y = torch.randn(20, 10, 16), torch.randn(20, 7, 8)
    w = gate(x, y)
    assert w.shape == (20, 2)
    torch.testing.assert_close(w.sum(-1), torch.ones(20))
    v, a, g = gate.agreement(x, y)
    lam = gate.mlp(torch.cat([v, a, v - a, v * a], dim=-1))
    torch.testing.assert_close(w, torch.softmax(lam + torch.cat([g, -g], -1), -1))


def test_gate_prior_direction_agreement_favours_spatial():
    torch.manual_seed(0)
    gate = AgreementGate(16, 16, gate_dim=12, gate_hidden=6)
    with torch.no_grad():  # λ ≡ 0, and identical projections so y = ±x gives g = ±1
        gate.mlp[2].weight.zero_()
        gate.mlp[2].bias.zero_()
        gate.other_proj.weight.copy_(gate.self_proj.weight)
        gate.self_proj.bias.zero_()
        gate.other_proj.bias.zero_()
    x = torch.randn(8, 10, 16)
    y = torch.cat([x[:4], -x[4:]])
    g = gate.agreement(x, y)[2].squeeze(-1)
    torch.testing.assert_close(g, torch.tensor([1.0] * 4 + [-1.0] * 4))
    w = gate(x, y)
    assert (w[:4, 0] > w[:4, 1]).all() and (w[4:, 0] < w[4:, 1]).all()
    # random frames: w_sp > w_tm exactly where g > 0
    x, y = torch.randn(64, 10, 16), torch.randn(64, 5, 16)
    g = gate.agreement(x, y)[2].squeeze(-1)
    w = gate(x, y)
    assert (g > 0).any() and (g < 0).any()
    assert torch.equal(w[:, 0] > w[:, 1], g > 0)


def test_gate_cosine_in_range():
    torch.manual_seed(0)
    gate = AgreementGate(16, 8, gate_dim=12, gate_hidden=6)
    x, y = 100 * torch.randn(50, 10, 16), 1e-3 * torch.randn(50, 7, 8)
    g = gate.agreement(x, y)[2]
    assert g.shape == (50, 1)
    assert (g.abs() <= 1 + 1e-6).all()


# ---- temporal enrichment (Eq. 7-8): locality within a clip -----------------------------------------------------------


@pytest.mark.parametrize("t", [0, 2, 4])
def test_temporal_mix_touches_only_neighbour_frames_of_same_clip(t):
    torch.manual_seed(0)
    T, L, C = 5, 6, 8
    mod = TemporalEnrichment(C, T)
    x = torch.randn(2 * T, L, C)
    x2 = x.clone()
    x2[t, 3] += 1.0  # clip 0, frame t, token 3
    changed = (mod.temporal_mix(x2) - mod.temporal_mix(x)).abs().amax(-1) > 0  # [BT, L]
    expected = torch.zeros_like(changed)
    expected[max(t - 1, 0) : min(t + 2, T), 3] = True
    assert torch.equal(changed, expected)


@pytest.mark.parametrize("t", [0, 2, 4])
def test_caste_mixes_frames_only_within_a_clip(t):
    T = 5
    m = _open_gates(_small(T=T))
    x, y = torch.randn(2 * T, 10, 16), torch.randn(2 * T, 7, 8)
    x2 = x.clone()
    x2[t] += torch.randn(10, 16)  # perturb all tokens of clip 0, frame t
    with torch.no_grad():
        changed = (m(x2, y) - m(x, y)).flatten(1).abs().amax(-1) > 0  # per frame row
    expected = torch.zeros(2 * T, dtype=torch.bool)
    expected[max(t - 1, 0) : min(t + 2, T)] = True
    assert torch.equal(changed, expected)


# ---- selective injection (Eq. 9) ------------------------------------------------------------------------------------


def test_topk_mask_keeps_exactly_k_largest_norm_tokens():
    torch.manual_seed(0)
    x = torch.randn(6, 20, 8, requires_grad=True)
    k = topk_count(20, 0.3)
    assert k == 6
    mask = topk_token_mask(x, k)
    assert mask.shape == (6, 20, 1) and mask.dtype == x.dtype and not mask.requires_grad
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(mask.sum((1, 2)), torch.full((6,), float(k)))
    norms = x.detach().norm(dim=-1)
    expected = torch.zeros(6, 20)
    expected.scatter_(1, norms.argsort(dim=1, descending=True)[:, :k], 1.0)
    assert torch.equal(mask.squeeze(-1), expected)


def test_topk_mask_exactly_k_on_ties():
    mask = topk_token_mask(torch.ones(3, 20, 8), 6)
    assert torch.equal(mask.sum((1, 2)), torch.full((3,), 6.0))


def test_topk_count_floor_and_min_one():
    assert [topk_count(L, 0.3) for L in (2304, 576, 144, 36)] == [691, 172, 43, 10]
    assert [topk_count(L, 0.3) for L in (4096, 1024, 256, 64)] == [1228, 307, 76, 19]
    assert topk_count(2, 0.3) == 1


def test_residual_is_masked_mix():
    m = _open_gates(_small(), 0.5)
    x, y = torch.randn(8, 10, 16), torch.randn(8, 7, 8)
    with torch.no_grad():
        w = m.gate(x, y)
        mixed = w[:, :1, None] * m.spatial(x) + w[:, 1:, None] * m.temporal(x)
        expected = 0.5 * mixed * topk_token_mask(x, m.k)
        torch.testing.assert_close(m(x, y), expected)
        assert ((m(x, y).abs().amax(-1) > 0).sum(-1) == m.k).all()


# ---- init invariants ------------------------------------------------------------------------------------------------


def test_residual_zero_at_init_and_only_gamma_gets_gradient():
    m = _small().train()
    x, y = torch.randn(8, 10, 16), torch.randn(8, 7, 8)
    out = m(x, y)
    assert torch.equal(out, torch.zeros_like(out))
    out.pow(2).add(out).sum().backward()  # d/dγ = Σ x̂⊙M ≠ 0; everything else is multiplied by γ = 0
    for name, p in m.named_parameters():
        if name == "gamma":
            assert p.grad is not None and p.grad.abs().item() > 0
        else:  # includes γ_sp and γ_tm: their paths also pass through γ = 0
            assert p.grad is None or torch.equal(p.grad, torch.zeros_like(p)), name


def test_spatial_linear_init():
    m = CASTE(64, 32, 10, 4, CASTEConfig(init_std=1e-3))
    for fc in (m.spatial.attn.fc_i, m.spatial.attn.fc_k, m.spatial.attn.fc_v, m.spatial.attn.fc_o):
        assert torch.equal(fc.bias, torch.zeros_like(fc.bias))
        assert fc.weight.std().item() < 3e-3


def test_authors_state_dict_maps():
    m = _small()
    theirs = {k.replace("gate.self_proj.", "gate.v_proj.").replace("gate.other_proj.", "gate.a_proj."): v
              for k, v in m.state_dict().items()}
    assert "gate.v_proj.weight" in theirs
    m.load_state_dict(convert_authors_caste_state_dict(theirs), strict=True)


# ---- sizes for the paper dims (architecture.md §10) -----------------------------------------------------------------

VISUAL = [((192, 96, 2304), 220_038), ((384, 192, 576), 701_766), ((768, 384, 144), 2_549_958),
          ((1536, 768, 36), 9_785_286)]
AUDIO = [((96, 192, 4096), 108_198), ((192, 384, 1024), 256_902), ((384, 768, 256), 775_494),
         ((768, 1536, 64), 2_697_414)]


def test_paper_parameter_counts_on_meta():
    total = 0
    with torch.device("meta"):
        for (c_self, c_other, tokens), expected in VISUAL + AUDIO:
            m = CASTE(c_self, c_other, tokens, 10, CASTEConfig(gate_dim=128, gate_hidden=64))
            n = sum(p.numel() for p in m.parameters())
            assert n == expected, (c_self, c_other)
            total += n
    assert total == 17_095_056


# ---- ONNX export (opset 18, dynamic batch) -------------------------------------------------------------------------


def test_onnx_export_dynamic_batch_matches_torch(tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    T = 3
    m = _open_gates(_small(T=T), 0.7)
    path = tmp_path / "caste.onnx"
    batch = torch.export.Dim("batch", min=1, max=64)
    x, y = torch.randn(2 * T, 10, 16), torch.randn(2 * T, 7, 8)
    torch.onnx.export(m, (x, y), str(path), dynamo=True, opset_version=18, input_names=["x", "y"],
                      output_names=["residual"], dynamic_shapes={"x": {0: T * batch}, "y": {0: T * batch}},
                      verbose=False)

    graph = onnx.load(str(path))
    table = resources.files("caeav").joinpath("assets/reference/tensorrt-onnx-ops.json").read_text()
    ops = json.loads(table)["operators"]
    used = {n.op_type for n in graph.graph.node}
    assert {"TopK", "ScatterElements"} <= used
    assert all(ops.get(op, {}).get("supported") for op in used), used - {k for k, v in ops.items() if v["supported"]}
    consts = {i.name: i for i in graph.graph.initializer}
    consts.update({n.output[0]: n.attribute[0].t for n in graph.graph.node if n.op_type == "Constant"})
    for node in graph.graph.node:
        if node.op_type == "TopK":  # K a build-time constant < 3840, sorted = 1
            assert node.input[1] in consts
            assert int(onnx.numpy_helper.to_array(consts[node.input[1]]).item()) == m.k < 3840
            assert all(a.i == 1 for a in node.attribute if a.name == "sorted")

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for b in (1, 4):
        x, y = torch.randn(b * T, 10, 16), torch.randn(b * T, 7, 8)
        (got,) = sess.run(None, {"x": x.numpy(), "y": y.numpy()})
        with torch.no_grad():
            torch.testing.assert_close(torch.from_numpy(got), m(x, y), rtol=1e-4, atol=1e-5)
    # tied saliencies: still exactly K injected tokens per frame
    (got,) = sess.run(None, {"x": torch.ones(2 * T, 10, 16).numpy(), "y": y[: 2 * T].numpy()})
    assert ((torch.from_numpy(got).abs().amax(-1) > 0).sum(-1) == m.k).all()
