"""AVVP (MGN) head: shapes, gradients, the MGN loss, prediction rule, ONNX export."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from caeav.config import ConfigError, load_config
from caeav.model.heads.avs import AVSHead
from caeav.model.heads.avvp import AVVPHead
from caeav.model.heads.grouping import AssignAttention
from caeav.model.heads.postprocess_avvp import avvp_predict, avvp_predict_outputs
from head_helpers import adam_loss_history

T_AVVP = 10


def avvp_setup(st_dim=None, **head):
    cfg = load_config("tiny", "avvp").task
    if st_dim is not None:
        cfg.head["st_dim"] = st_dim
    cfg.head.update(head)
    full = load_config("tiny", "avvp")
    dim_v, dim_a = full.visual.embed_dim * 8, full.audio.embed_dim * 8  # pooled final-stage widths
    return AVVPHead(dim_v, dim_a, cfg), dim_v, dim_a, cfg


def avvp_inputs(b, dim_v, dim_a, st_dim=0, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = [torch.randn(b, T_AVVP, dim_a, generator=g), torch.randn(b, T_AVVP, dim_v, generator=g)]
    return x + ([torch.randn(b, T_AVVP, st_dim, generator=g)] if st_dim else [])





@pytest.mark.parametrize("st_dim", [0, 24])
@pytest.mark.parametrize("b", [1, 2])
def test_avvp_shapes_for_any_batch_with_and_without_st(b, st_dim):
    head, dim_v, dim_a, cfg = avvp_setup(st_dim)
    out = head(*avvp_inputs(b, dim_v, dim_a, st_dim))
    c = cfg.num_classes
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "global_prob": (b, c), "a_prob": (b, c), "v_prob": (b, c), "a_frame_prob": (b, T_AVVP, c),
        "v_frame_prob": (b, T_AVVP, c), "aud_cls": (c, c), "vis_cls": (c, c)}
    for k in ("global_prob", "a_prob", "v_prob"):
        assert ((out[k] > 0) & (out[k] < 1)).all()
    # soft unimodal assignment lies in (1, 2): frame probabilities are the video ones scaled by it
    ratio = out["a_frame_prob"] / out["a_prob"][:, None, :]
    assert ((ratio > 1) & (ratio < 2)).all()
    assert hasattr(head, "fc_st") == (st_dim > 0)


def test_avvp_batch_rows_are_independent_in_eval():
    head, dim_v, dim_a, _ = avvp_setup(0)
    head.eval()
    f_a, f_v = avvp_inputs(2, dim_v, dim_a)
    both = head(f_a, f_v)
    one = head(f_a[1:], f_v[1:])
    for k in ("global_prob", "a_frame_prob", "v_frame_prob"):
        torch.testing.assert_close(both[k][1:], one[k], atol=1e-6, rtol=1e-5)


def test_avvp_is_deterministic_in_eval_and_stochastic_only_in_training():
    head, dim_v, dim_a, _ = avvp_setup(0)
    inputs = avvp_inputs(2, dim_v, dim_a)
    head.eval()
    first, second = head(*inputs), head(*inputs)
    assert all(torch.equal(first[k], second[k]) for k in first)
    head.train()  # DropPath and the HAN's Gumbel noise
    torch.manual_seed(1)
    third = head(*inputs)
    assert not torch.equal(first["a_frame_prob"], third["a_frame_prob"])


def test_paper_heads_build_on_the_meta_device():
    with torch.device("meta"):
        avvp = AVVPHead(1536, 768, load_config("paper", "avvp").task)
        avs = AVSHead([192, 384, 768, 1536], 768, load_config("paper", "avs_ms3").task)
        stages = [torch.empty(10, g * g, c) for g, c in zip((48, 24, 12, 6), (192, 384, 768, 1536))]
        masks = avs(stages, torch.empty(2, 5, 768))["masks"]
    assert all(p.is_meta for p in avvp.parameters()) and tuple(masks.shape) == (10, 1, 224, 224)


def test_avvp_forward_backward_batch2_reaches_every_parameter():
    head, dim_v, dim_a, _ = avvp_setup(16)
    head.train()
    inputs = avvp_inputs(2, dim_v, dim_a, 16)
    labels = torch.tensor([[1.0] + [0.0] * 24, [0.0, 1.0, 1.0] + [0.0] * 22])
    losses = head.loss(head(*inputs), {"labels": labels})
    assert set(losses) == {"loss", "av", "a", "v", "cls_a", "cls_v"}
    losses["loss"].backward()
    missing = [n for n, p in head.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


def test_avvp_loss_matches_the_mgn_formula():
    head, dim_v, dim_a, _ = avvp_setup(0)
    out = head(*avvp_inputs(2, dim_v, dim_a))
    y = (torch.rand(2, 25, generator=torch.Generator().manual_seed(3)) > 0.7).float()
    got = head.loss(out, {"labels": y})

    def bce(p, t):
        p = p.clamp(1e-7, 1 - 1e-7)
        return -(t * p.log() + (1 - t) * (1 - p).log()).mean()

    expected = (bce(out["global_prob"], y) + bce(out["a_prob"], y) + bce(out["v_prob"], 0.9 * y + 0.05)
                + 2 * torch.log(torch.tensor(25.0)))  # class tokens start at 0: uniform logits
    torch.testing.assert_close(got["loss"], expected, atol=1e-5, rtol=1e-5)


def test_avvp_loss_decreases_on_a_fixed_batch():
    torch.manual_seed(0)
    head, dim_v, dim_a, _ = avvp_setup(0)
    inputs = avvp_inputs(2, dim_v, dim_a)
    batch = {"labels": torch.tensor([[1.0, 0.0, 1.0] + [0.0] * 22, [0.0, 1.0, 0.0] + [0.0] * 22])}
    history = adam_loss_history(head, inputs, batch, steps=15)
    assert all(np.isfinite(history)) and history[-1] < 0.9 * history[0]


def test_avvp_needs_st_when_configured_and_validates_its_options():
    head, dim_v, dim_a, _ = avvp_setup(8)
    with pytest.raises(ValueError, match="st"):
        head(*avvp_inputs(1, dim_v, dim_a))
    with pytest.raises(ConfigError, match="unknown option"):
        avvp_setup(depth=3)
    with pytest.raises(ConfigError, match="soft' or 'hard"):
        avvp_setup(unimodal_assign="gumbel")
    cfg = load_config("tiny", "ave").task
    with pytest.raises(ConfigError, match="kind"):
        AVVPHead(8, 8, cfg)


def test_paper_avvp_head_has_the_official_layout():
    cfg = load_config("paper", "avvp").task
    head = AVVPHead(1536, 768, cfg)
    assert head.fc_st.in_features == 512 and head.fc_fusion.in_features == 256
    assert len(head.audio_cug.blocks) == 3 and len(head.visual_cug.blocks) == 3 and len(head.av_mcg.blocks) == 6
    assert head.audio_cug.han_encoder is not None and head.visual_cug.han_encoder is None
    assert head.audio_cug.han_encoder.assign.hard and not head.audio_cug.grouping.assign.hard  # soft grouping, hard HAN
    assert head.audio_cug.grouping.mlp_inter.fc1.out_features == 64  # token MLP 25 -> 64 -> 25
    assert not head.audio_token.detach().any()


def test_assignment_rules_soft_hard_and_gumbel_only_in_training():
    torch.manual_seed(0)
    raw = torch.randn(2, 4, 6)  # [B, groups, tokens]
    soft_block = AssignAttention(8, hard=False, gumbel=False)
    soft = soft_block.assignment(raw)
    torch.testing.assert_close(soft, torch.softmax(raw, dim=-2))
    torch.testing.assert_close(soft_block.frame_map(raw, soft), 1 + torch.softmax(torch.softmax(raw, dim=-2), dim=-1))
    hard = AssignAttention(8, hard=True, gumbel=True).eval()
    one_hot = hard.assignment(raw)
    assert torch.equal(one_hot, F.one_hot(raw.argmax(dim=-2), 4).transpose(-1, -2).float())
    assert torch.equal(hard.assignment(raw), one_hot)  # deterministic in eval
    hard.train()
    draws = torch.stack([hard.assignment(raw) for _ in range(20)])
    assert ((draws == 0) | (draws == 1)).all() and (draws.sum(dim=-2) == 1).all()
    assert not all(torch.equal(d, one_hot) for d in draws)  # Gumbel noise moves some assignments
    assert torch.equal(hard.frame_map(raw, draws[0]), draws[0])  # hard blocks: the frame map is the assignment


def test_soft_assignment_attends_with_the_group_softmax_not_the_frame_map():
    """Authors' GRP AssignAttention (soft): out = proj((A / (Σ_L A + 1)) v(key)), A = softmax over the groups of
    q kᵀ/√d; the 1 + softmax map is returned for the frame probabilities only."""
    torch.manual_seed(0)
    block = AssignAttention(8, hard=False, gumbel=False).eval()
    query, key = torch.randn(2, 4, 8), torch.randn(2, 6, 8)
    out, frame_map = block(query, key)
    raw = block.q_proj(query) @ block.k_proj(key).transpose(-2, -1) / 8**0.5
    attn = torch.softmax(raw, dim=-2)
    expected = block.proj((attn / (attn.sum(dim=-1, keepdim=True) + 1.0)) @ block.v_proj(key))
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(frame_map, 1 + torch.softmax(attn, dim=-1))


def test_avvp_predict_rule_on_hand_made_probabilities():
    g = torch.tensor([[0.7, 0.5, 0.49]])  # video labels: on, on (>= is inclusive), off
    a = torch.tensor([[[0.6, 0.4, 0.9], [0.5, 0.51, 0.99], [0.2, 0.7, 0.6]]])  # [1, T=3, C=3]
    v = torch.tensor([[[0.1, 0.5, 0.9], [0.9, 0.1, 0.9], [0.8, 0.8, 0.1]]])
    outputs = {"global_prob": g, "a_frame_prob": a, "v_frame_prob": v}
    expected_audio = np.array([[[1, 1, 0], [0, 1, 1], [0, 0, 0]]])  # [1, C, T]
    expected_visual = np.array([[[0, 1, 1], [1, 0, 1], [0, 0, 0]]])
    for pred in (AVVPHead.predict(outputs), avvp_predict_outputs({k: x.numpy() for k, x in outputs.items()})):
        pred = {k: np.asarray(x) for k, x in pred.items()}
        np.testing.assert_array_equal(pred["video"], [[1, 1, 0]])
        np.testing.assert_array_equal(pred["audio"], expected_audio)
        np.testing.assert_array_equal(pred["visual"], expected_visual)
        np.testing.assert_array_equal(pred["av"], expected_audio & expected_visual)
        assert pred["audio"].dtype == np.int64


def test_avvp_torch_predict_equals_numpy_and_the_metric_binarization():
    from caeav.metrics.avvp import binarize

    head, dim_v, dim_a, _ = avvp_setup(0)
    head.eval()
    with torch.no_grad():
        out = head(*avvp_inputs(2, dim_v, dim_a))
    # push probabilities across the threshold so both outcomes occur
    spread = ("global_prob", "a_frame_prob", "v_frame_prob")
    out = {k: (v - 0.5) * 8 + 0.5 if k in spread else v for k, v in out.items()}
    torch_pred = {k: v.numpy() for k, v in AVVPHead.predict(out).items()}
    np_pred = avvp_predict(out["global_prob"].numpy(), out["a_frame_prob"].numpy(), out["v_frame_prob"].numpy())
    for k in np_pred:
        np.testing.assert_array_equal(torch_pred[k], np_pred[k])
    assert 0 < np_pred["audio"].sum() < np_pred["audio"].size
    for b in range(2):
        so_a, so_v = binarize(*(out[k][b].numpy() for k in spread))
        np.testing.assert_array_equal(so_a, np_pred["audio"][b])
        np.testing.assert_array_equal(so_v, np_pred["visual"][b])


def _onnx_modules():
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    return pytest.importorskip("onnxruntime")


def test_avvp_head_exports_to_onnx_opset18_with_dynamic_batch(tmp_path):
    ort = _onnx_modules()
    import onnx

    head, dim_v, dim_a, _ = avvp_setup(0)
    head.eval()

    class Graph(torch.nn.Module):
        def __init__(self, h):
            super().__init__()
            self.h = h

        def forward(self, f_a, f_v):
            out = self.h(f_a, f_v)
            return tuple(out[k] for k in self.h.export_outputs)

    batch = torch.export.Dim("batch", min=1, max=64)
    path = tmp_path / "avvp.onnx"
    torch.onnx.export(Graph(head), tuple(avvp_inputs(2, dim_v, dim_a)), str(path), dynamo=True, opset_version=18,
                      input_names=["f_a", "f_v"], output_names=list(head.export_outputs),
                      dynamic_shapes=({0: batch}, {0: batch}), external_data=False)
    graph = onnx.load(str(path))
    assert {o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")} == {18}
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for b in (1, 2, 3):
        f_a, f_v = avvp_inputs(b, dim_v, dim_a, seed=b)
        with torch.no_grad():
            ref = Graph(head)(f_a, f_v)
        got = session.run(None, {"f_a": f_a.numpy(), "f_v": f_v.numpy()})
        for r, o in zip(ref, got):
            np.testing.assert_allclose(o, r.numpy(), atol=1e-5, rtol=1e-4)
