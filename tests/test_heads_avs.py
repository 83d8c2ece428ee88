"""AVS (TPAVI decoder) head: shapes, losses, prediction rule, exact rewrites of AVSBench blocks, ONNX export."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from caeav.config import ConfigError, load_config
from caeav.model.heads.avs import AVSHead, avs_loss
from caeav.model.heads.avs_blocks import TPAVI, FeatureFusionBlock, bicubic_matrix, resize_bicubic
from caeav.model.heads.postprocess_avs import avs_predict
from head_helpers import adam_loss_history

T_AVS = 5


def _onnx_modules():
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    return pytest.importorskip("onnxruntime")


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
    history = adam_loss_history(head, inputs, batch, steps=12)
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
