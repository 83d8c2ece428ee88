"""AVVP (MGN) and AVS (TPAVI decoder) heads: shapes, gradients, losses, prediction rules, exact rewrites, ONNX."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from caeav.config import ConfigError, load_config
from caeav.model.heads.avs import AVSHead, avs_loss
from caeav.model.heads.avs_blocks import TPAVI, FeatureFusionBlock, bicubic_matrix, resize_bicubic
from caeav.model.heads.avvp import AVVPHead
from caeav.model.heads.grouping import AssignAttention
from caeav.model.heads.postprocess_avs import avs_predict
from caeav.model.heads.postprocess_avvp import avvp_predict, avvp_predict_outputs

T_AVVP, T_AVS = 10, 5


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


def avs_setup(task="avs_s4"):
    full = load_config("tiny", task)
    e, g0 = full.visual.embed_dim, full.visual.img_size // full.visual.patch_size
    dims, grids = [e * 2**s for s in range(4)], [g0 >> s for s in range(4)]
    return AVSHead(dims, full.audio.embed_dim * 8, full.task), dims, grids, full.audio.embed_dim * 8, full.task


def avs_inputs(b, dims, grids, dim_a, seed=0):
    g = torch.Generator().manual_seed(seed)
    stages = [torch.randn(b * T_AVS, n * n, c, generator=g) for n, c in zip(grids, dims)]
    return stages, torch.randn(b, T_AVS, dim_a, generator=g)


def random_masks(b, size, frames, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(b, frames, size, size, generator=g) > 0.6).float()


# ------------------------------------------------------------------------------------------------------------- AVVP


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
    head, dim_v, dim_a, _ = avvp_setup()
    head.eval()
    f_a, f_v = avvp_inputs(2, dim_v, dim_a)
    both = head(f_a, f_v)
    one = head(f_a[1:], f_v[1:])
    for k in ("global_prob", "a_frame_prob", "v_frame_prob"):
        torch.testing.assert_close(both[k][1:], one[k], atol=1e-6, rtol=1e-5)


def test_avvp_is_deterministic_in_eval_and_stochastic_only_in_training():
    head, dim_v, dim_a, _ = avvp_setup()
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
    head, dim_v, dim_a, _ = avvp_setup()
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
    head, dim_v, dim_a, _ = avvp_setup()
    inputs = avvp_inputs(2, dim_v, dim_a)
    batch = {"labels": torch.tensor([[1.0, 0.0, 1.0] + [0.0] * 22, [0.0, 1.0, 0.0] + [0.0] * 22])}
    opt = torch.optim.Adam(head.parameters(), lr=3e-3)
    history = []
    for _ in range(15):
        opt.zero_grad()
        loss = head.loss(head(*inputs), batch)["loss"]
        loss.backward()
        opt.step()
        history.append(loss.item())
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
    soft = AssignAttention(8, hard=False, gumbel=False).assignment(raw)
    torch.testing.assert_close(soft, 1 + torch.softmax(torch.softmax(raw, dim=-2), dim=-1))
    hard = AssignAttention(8, hard=True, gumbel=True).eval()
    one_hot = hard.assignment(raw)
    assert torch.equal(one_hot, F.one_hot(raw.argmax(dim=-2), 4).transpose(-1, -2).float())
    assert torch.equal(hard.assignment(raw), one_hot)  # deterministic in eval
    hard.train()
    draws = torch.stack([hard.assignment(raw) for _ in range(20)])
    assert ((draws == 0) | (draws == 1)).all() and (draws.sum(dim=-2) == 1).all()
    assert not all(torch.equal(d, one_hot) for d in draws)  # Gumbel noise moves some assignments


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

    head, dim_v, dim_a, _ = avvp_setup()
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

    head, dim_v, dim_a, _ = avvp_setup()
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


# -------------------------------------------------------------------------------------------------------------- AVS


@pytest.mark.parametrize("b", [1, 2])
def test_avs_shapes_for_any_batch(b):
    head, dims, grids, dim_a, cfg = avs_setup()
    out = head(*avs_inputs(b, dims, grids, dim_a))
    m, d = cfg.input_size, cfg.head["dim"]
    assert tuple(out["masks"].shape) == (b * T_AVS, 1, m, m)
    for s in range(4):
        assert tuple(out[f"v_map_{s}"].shape) == (b * T_AVS, d, m // (4 << s), m // (4 << s))
        assert tuple(out[f"a_fea_{s}"].shape) == (b, T_AVS, d)
    assert tuple(head.predict(out)["masks"].shape) == (b, T_AVS, m, m)


def test_avs_mask_size_is_configurable():
    full = load_config("tiny", "avs_s4", ["task.head.mask_size=96"])
    e, g0 = full.visual.embed_dim, full.visual.img_size // full.visual.patch_size
    dims, grids = [e * 2**s for s in range(4)], [g0 >> s for s in range(4)]
    head = AVSHead(dims, full.audio.embed_dim * 8, full.task)
    assert tuple(head(*avs_inputs(1, dims, grids, full.audio.embed_dim * 8))["masks"].shape[-2:]) == (96, 96)
    with pytest.raises(ConfigError, match="divisible"):
        AVSHead(dims, 8, load_config("tiny", "avs_s4", ["task.head.mask_size=100"]).task)


@pytest.mark.parametrize("task", ["avs_s4", "avs_ms3"])
def test_avs_forward_backward_batch2_and_loss_terms(task):
    head, dims, grids, dim_a, cfg = avs_setup(task)
    head.train()
    stages, audio = avs_inputs(2, dims, grids, dim_a)
    stages = [s.requires_grad_() for s in stages]
    frames = 1 if task == "avs_s4" else T_AVS
    losses = head.loss(head(stages, audio), {"masks": random_masks(2, cfg.input_size, frames)})
    assert set(losses) == {"loss", "bce", "masked_av"}
    assert (losses["masked_av"] > 0) == (task == "avs_ms3")
    losses["loss"].backward()
    assert all(s.grad is not None and torch.isfinite(s.grad).all() for s in stages)
    missing = [n for n, p in head.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


def test_avs_losses_follow_avsbench():
    head, dims, grids, dim_a, cfg = avs_setup("avs_ms3")
    head.eval()
    out = head(*avs_inputs(2, dims, grids, dim_a))
    gt = random_masks(2, cfg.input_size, T_AVS)
    logits = out["masks"]
    got = head.loss(out, {"masks": gt})
    torch.testing.assert_close(got["bce"], F.binary_cross_entropy(torch.sigmoid(logits), gt.reshape(logits.shape)))
    kl = 0.0
    for s in range(4):
        v_map, a = out[f"v_map_{s}"], out[f"a_fea_{s}"].reshape(-1, cfg.head["dim"])
        weight = torch.sigmoid(torch.nn.AdaptiveAvgPool2d(v_map.shape[-2:])(logits))
        q = torch.softmax((v_map * weight).mean(-1).mean(-1), dim=-1)
        p = torch.softmax(a, dim=-1)
        kl = kl + (p * (p.log() - q.log())).sum()
    torch.testing.assert_close(got["masked_av"], kl / 4, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(got["loss"], got["bce"] + 0.5 * got["masked_av"])
    first = avs_loss(out, gt[:, :1], T_AVS, "first")  # S4: frame 0 of every clip only
    torch.testing.assert_close(first["bce"], F.binary_cross_entropy(torch.sigmoid(logits[::T_AVS]), gt[:, :1]))
    assert float(first["masked_av"]) == 0.0


@pytest.mark.parametrize("task", ["avs_s4", "avs_ms3"])
def test_avs_loss_decreases_on_a_fixed_batch(task):
    torch.manual_seed(0)
    head, dims, grids, dim_a, cfg = avs_setup(task)
    inputs = avs_inputs(1, dims, grids, dim_a)
    m = cfg.input_size
    square = torch.zeros(1, T_AVS, m, m)
    square[..., m // 4 : m // 2, m // 3 : 3 * m // 4] = 1.0  # a learnable (not random) target
    batch = {"masks": square}
    opt = torch.optim.Adam(head.parameters(), lr=3e-3)
    history = []
    for _ in range(12):
        opt.zero_grad()
        loss = head.loss(head(*inputs), batch)["loss"]
        loss.backward()
        opt.step()
        history.append(loss.item())
    assert all(np.isfinite(history)) and history[-1] < 0.6 * history[0]


def test_avs_predict_torch_equals_numpy_and_logit_zero_is_background():
    logits = torch.tensor([0.0, 1e-9, -1e-9, 3.0, -3.0] * 2).reshape(10, 1, 1, 1).expand(10, 1, 2, 2).contiguous()
    head, *_ = avs_setup()
    torch_masks = head.predict({"masks": logits})["masks"].numpy()
    np_masks = avs_predict(logits.numpy(), T_AVS)
    np.testing.assert_array_equal(torch_masks, np_masks)
    assert np_masks.dtype == np.uint8 and np_masks.shape == (2, T_AVS, 2, 2)
    np.testing.assert_array_equal(np_masks[0, :, 0, 0], [0, 1, 0, 1, 0])
    rand = torch.randn(10, 1, 16, 16)
    np.testing.assert_array_equal(head.predict({"masks": rand})["masks"].numpy(), avs_predict(rand.numpy(), T_AVS))


@pytest.mark.parametrize("n_in,n_out", [(48, 56), (24, 28), (12, 14), (6, 7), (1, 2), (8, 16), (7, 5)])
def test_bicubic_matrix_reproduces_torch_bicubic(n_in, n_out):
    x = torch.randn(3, 4, n_in, n_in)
    ref = F.interpolate(x, size=(n_out, n_out), mode="bicubic", align_corners=False)
    torch.testing.assert_close(resize_bicubic(x, n_out), ref, atol=1e-5, rtol=1e-5)  # ATen sums in float32
    np.testing.assert_allclose(bicubic_matrix(n_in, n_out).sum(axis=1), 1.0, atol=1e-6)


def tpavi_reference(module, x, audio, t):
    """AVSBench's TPAVIModule.forward (dot mode, audio input), written literally with the full affinity matrix."""
    bt, c, h, w = x.shape
    x5 = x.reshape(-1, t, c, h, w).permute(0, 2, 1, 3, 4)
    b = x5.shape[0]
    a = module.align_channel(audio.reshape(b, t, -1))
    a5 = a.permute(0, 2, 1)[..., None, None].repeat(1, 1, 1, h, w)
    g_x = module.g(x5).view(b, module.inter, -1).permute(0, 2, 1)
    theta = module.theta(x5).view(b, module.inter, -1).permute(0, 2, 1)
    phi = module.phi(a5).view(b, module.inter, -1)
    f = torch.matmul(theta, phi)
    y = torch.matmul(f / f.size(-1), g_x).permute(0, 2, 1).contiguous().view(b, module.inter, t, h, w)
    z = module.W_z(y) + x5
    z = module.norm_layer(z.permute(0, 2, 3, 4, 1)).permute(0, 4, 1, 2, 3)
    return z.permute(0, 2, 1, 3, 4).reshape(bt, c, h, w), a


@pytest.mark.parametrize("train", [False, True])
def test_factorised_tpavi_equals_the_full_affinity_version(train):
    torch.manual_seed(0)
    module = TPAVI(16, 6, T_AVS)
    bn = module.W_z[1]
    bn.weight.data.normal_(), bn.bias.data.normal_(), bn.running_mean.normal_(), bn.running_var.uniform_(0.5, 2.0)
    module.train(train)
    x, audio = torch.randn(2 * T_AVS, 16, 4, 3), torch.randn(2 * T_AVS, 6)
    reference = copy.deepcopy(module)
    z, a = module(x, audio)
    z_ref, a_ref = tpavi_reference(reference, x, audio, T_AVS)
    torch.testing.assert_close(z, z_ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(a, a_ref)
    if train:
        torch.testing.assert_close(bn.running_mean, reference.W_z[1].running_mean)


def test_fusion_block_matches_avsbench_in_place_relu():
    torch.manual_seed(0)
    block = FeatureFusionBlock(8)
    x, skip = torch.randn(2, 8, 3, 3), torch.randn(2, 8, 3, 3)

    def rcu(unit, t):  # AVSBench's ResidualConvUnit with nn.ReLU(inplace=True)
        relu = torch.nn.ReLU(inplace=True)
        out = relu(t)
        out = unit.conv2(relu(unit.conv1(out)))
        return out + t

    with torch.no_grad():
        out = x.clone()
        out += rcu(block.resConfUnit1, skip.clone())
        ref = F.interpolate(rcu(block.resConfUnit2, out), scale_factor=2, mode="bilinear", align_corners=True)
        torch.testing.assert_close(block(x, skip), ref)


@pytest.mark.slow
def test_avs_head_exports_to_onnx_opset18_with_dynamic_batch(tmp_path):
    ort = _onnx_modules()
    import onnx

    head, dims, grids, dim_a, _ = avs_setup("avs_ms3")
    for m in head.modules():  # non-trivial BatchNorm so W_z matters
        if isinstance(m, torch.nn.BatchNorm3d):
            m.weight.data.normal_(), m.bias.data.normal_(), m.running_var.uniform_(0.5, 2.0)
    head.eval()

    class Graph(torch.nn.Module):
        def __init__(self, h):
            super().__init__()
            self.h = h

        def forward(self, s0, s1, s2, s3, audio):
            return self.h([s0, s1, s2, s3], audio)["masks"]

    names = ["stage0", "stage1", "stage2", "stage3", "audio"]
    batch = torch.export.Dim("batch", min=1, max=64)
    stages, audio = avs_inputs(2, dims, grids, dim_a)
    path = tmp_path / "avs.onnx"
    torch.onnx.export(Graph(head), (*stages, audio), str(path), dynamo=True, opset_version=18, input_names=names,
                      output_names=["masks"], dynamic_shapes=tuple([{0: T_AVS * batch}] * 4 + [{0: batch}]),
                      external_data=False)
    graph = onnx.load(str(path))
    ops = {n.op_type for n in graph.graph.node}
    assert "Attention" not in ops and all(  # TensorRT's Resize supports nearest/linear only: no cubic Resize
        a.s != b"cubic" for n in graph.graph.node if n.op_type == "Resize" for a in n.attribute if a.name == "mode")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for b in (1, 2):
        stages, audio = avs_inputs(b, dims, grids, dim_a, seed=b)
        with torch.no_grad():
            ref = Graph(head)(*stages, audio).numpy()
        (got,) = session.run(None, {n: v.numpy() for n, v in zip(names, (*stages, audio))})
        np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-4)
        clear = np.abs(ref) > 1e-4  # the rule agrees wherever the logit is not within rounding of 0
        np.testing.assert_array_equal(avs_predict(got, T_AVS)[clear.reshape(-1, T_AVS, *ref.shape[-2:])],
                                      avs_predict(ref, T_AVS)[clear.reshape(-1, T_AVS, *ref.shape[-2:])])
