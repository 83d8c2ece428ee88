"""CASE (P Eq. 17-21): token selection, per-clip captions (D8), gradients, parameter counts, ONNX export."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from caeav.config import CASEConfig
from caeav.model.case import CASE, GumbelTopK

B, T, LV, LA, LC, CV, CA = 2, 3, 9, 12, 5, 32, 16
CFG = CASEConfig(proj_dim=8, heads=4)


def _case(seed=0):
    """Small CASE with its LayerNorm affine parameters randomised: at init every LN output has ‖x_i‖² = C, so the
    saliencies tie and the top-K choice would hang on rounding noise."""
    torch.manual_seed(seed)
    case = CASE(CV, CA, LV, LA, CFG)
    for m in case.modules():
        if isinstance(m, nn.LayerNorm):
            nn.init.normal_(m.weight, 1.0, 0.5)
            nn.init.normal_(m.bias, 0.0, 0.1)
    return case


def _inputs(b=B, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b * T, LV, CV, generator=g), torch.randn(b * T, LA, CA, generator=g),
            torch.randn(b, LC, CV, generator=g), torch.randn(b, LC, CA, generator=g))


def _authors_forward(case, v, a, v_cap, a_cap):
    """The authors' CASE.forward (AVE-NET:723-781) with captions repeated to BT first, on our submodules."""
    v_cap, a_cap = v_cap.repeat_interleave(T, 0), a_cap.repeat_interleave(T, 0)
    v0, a0 = v, a
    v, v_cap = case.sa_v(v, v), case.sa_vcap(v_cap, v_cap)
    a, a_cap = case.sa_a(a, a), case.sa_acap(a_cap, a_cap)
    v, a = case.ca_v_qcap(v, v_cap), case.ca_a_qcap(a, a_cap)
    v, a = case.ca_vqa(v, case.linear_v_from_a(a)), case.ca_aqv(a, case.linear_a_from_v(v))
    v, a = case.tmp_v(case.ffn_v(v), T), case.tmp_a(case.ffn_a(a), T)
    v_cap, a_cap = case.ffn_vcap(v_cap), case.ffn_acap(a_cap)
    w_v = torch.sigmoid((F.normalize(v.mean(1), dim=-1) * F.normalize(v_cap.mean(1), dim=-1)).sum(-1, keepdim=True))
    w_a = torch.sigmoid((F.normalize(a.mean(1), dim=-1) * F.normalize(a_cap.mean(1), dim=-1)).sum(-1, keepdim=True))
    mask_v, _ = case.topk(v, case.k_v)
    mask_a, _ = case.topk(a, case.k_a)
    v = case.norm_v(v0 + (w_v[..., None] * v * mask_v + (1 - w_v[..., None]) * v))
    a = case.norm_a(a0 + (w_a[..., None] * a * mask_a + (1 - w_a[..., None]) * a))
    return v, a, case.proj_vcap(v_cap.mean(1)), case.proj_acap(a_cap.mean(1))


def test_per_clip_captions_equal_repeating_first_in_eval():
    case = _case().eval()
    v, a, vc, ac = _inputs()
    with torch.no_grad():
        v_case, a_case, aux = case(v, a, vc, ac, T)
        ref_v, ref_a, ref_pvc, ref_pac = _authors_forward(case, v, a, vc, ac)
    torch.testing.assert_close(v_case, ref_v, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a_case, ref_a, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(aux["Pvcap"], ref_pvc, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(aux["Pacap"], ref_pac, rtol=1e-5, atol=1e-5)
    assert aux["prob_v"] is None and aux["prob_a"] is None
    assert aux["Pv"].shape == aux["Pvcap"].shape == (B * T, 8)


def test_eval_keeps_exactly_k_tokens_per_frame():
    case = _case().eval()
    with torch.no_grad():
        _, _, aux = case(*_inputs(), T)
    for mask, k, L in ((aux["mask_v"], case.k_v, LV), (aux["mask_a"], case.k_a, LA)):
        assert k == max(1, int(0.3 * L))
        assert mask.shape == (B * T, L, 1)
        assert ((mask > 0).sum(dim=1) == k).all()
        torch.testing.assert_close(mask[mask > 0], torch.full(((mask > 0).sum(),), 1.0 / k))


def test_gumbel_topk_selects_the_most_salient_tokens():
    sel = GumbelTopK().eval()
    x = torch.zeros(2, 6, 3)
    x[0, [1, 4], 0] = torch.tensor([3.0, 2.0])
    x[1, [0, 5], 2] = torch.tensor([-5.0, 1.0])
    mask, prob = sel(x, 2)
    assert prob is None
    assert mask[0, :, 0].nonzero().flatten().tolist() == [1, 4]
    assert mask[1, :, 0].nonzero().flatten().tolist() == [0, 5]
    sel.train()
    torch.manual_seed(0)
    mask, prob = sel(torch.randn(4, 10, 3), 3)
    torch.testing.assert_close(mask.sum(dim=1), torch.ones(4, 1))
    torch.testing.assert_close(prob.sum(dim=-1), torch.ones(4))
    assert ((mask > 0).sum(dim=1) >= 3).all()


def test_backward_in_train_mode_reaches_every_parameter():
    from caeav.config import LossConfig
    from caeav.model.losses import total_loss

    case = _case().train()
    v, a, vc, ac = _inputs()
    v_case, a_case, aux = case(v, a, vc, ac, T)
    assert aux["prob_v"].shape == (B * T, LV) and aux["prob_a"].shape == (B * T, LA)
    task = v_case.pow(2).mean() + a_case.pow(2).mean()
    total, _ = total_loss(task, aux, LossConfig(), epoch=20, segments=T)
    total.backward()
    missing = [n for n, p in case.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


def test_paper_case_parameter_count_on_meta():
    with torch.device("meta"):
        case = CASE(1536, 768, 36, 64, CASEConfig())
    count = lambda *mods: sum(p.numel() for m in mods for p in m.parameters())  # noqa: E731
    assert count(case) == 78_559_234
    assert (case.k_v, case.k_a) == (10, 19)
    assert count(case.sa_v, case.sa_vcap, case.ca_v_qcap, case.ca_vqa) == 37_785_600
    assert count(case.sa_a, case.sa_acap, case.ca_a_qcap, case.ca_aqv) == 9_455_616
    assert count(case.ffn_v, case.ffn_a, case.ffn_vcap, case.ffn_acap) == 23_616_000
    assert count(case.linear_v_from_a, case.linear_a_from_v) == 2_361_600
    assert count(case.proj_v, case.proj_a, case.proj_vcap, case.proj_acap) == 2_370_560
    assert count(case.tmp_v, case.tmp_a) == 2_965_248


class _Exported(nn.Module):
    """CASE with clip-major inputs so that one dynamic axis (clips) covers all four inputs."""

    def __init__(self, case):
        super().__init__()
        self.case = case

    def forward(self, v, a, v_cap, a_cap):  # v [B,T,Lv,Cv], a [B,T,La,Ca], captions [B,Lc,C]
        v_case, a_case, _ = self.case(v.flatten(0, 1), a.flatten(0, 1), v_cap, a_cap, T)
        return v_case.unflatten(0, (-1, T)), a_case.unflatten(0, (-1, T))


@pytest.mark.filterwarnings("ignore:# The axis name")
def test_case_exports_to_onnx_opset18_with_dynamic_batch(tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model = _Exported(_case()).eval()
    batch = torch.export.Dim("batch", min=1, max=64)
    args = tuple(t.unflatten(0, (-1, T)) if i < 2 else t for i, t in enumerate(_inputs(b=2)))
    path = tmp_path / "case.onnx"
    torch.onnx.export(model, args, str(path), dynamo=True, opset_version=18, external_data=False,
                      input_names=["v", "a", "v_cap", "a_cap"], output_names=["v_case", "a_case"],
                      dynamic_shapes=tuple({0: batch} for _ in args))
    graph = onnx.load(str(path))
    assert {o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")} == {18}
    ops = {n.op_type for n in graph.graph.node}
    assert "TopK" in ops and not ops & {"Attention", "NonZero", "If", "Loop"}
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for b in (2, 3):
        v, a, vc, ac = _inputs(b=b, seed=10 + b)
        feeds = {"v": v.unflatten(0, (-1, T)), "a": a.unflatten(0, (-1, T)), "v_cap": vc, "a_cap": ac}
        with torch.no_grad():
            expected = model(*feeds.values())
        got = session.run(None, {k: t.numpy() for k, t in feeds.items()})
        for e, g in zip(expected, got):
            assert g.shape == tuple(e.shape)
            torch.testing.assert_close(torch.from_numpy(g), e, rtol=1e-4, atol=1e-4)
