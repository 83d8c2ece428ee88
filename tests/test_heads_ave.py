"""AVE head (architecture.md §7.1): CMBS and MLP options, losses, prediction rule, parameter counts, ONNX."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from caeav.config import ConfigError, load_config
from caeav.model.heads import postprocess
from caeav.model.heads.ave import AVEHead, ave_predict
from caeav.model.heads.temporal_attention import PackedMultiheadAttention
from head_helpers import B, T, ave_labels, check_tensorrt_ops, features, make_ave, make_avqa, sgd_decreases, task_cfg


# ---- AVE: CMBS head (default) --------------------------------------------------------------------------------------


def test_ave_cmbs_output_shapes_and_names():
    head = make_ave().eval()
    out = head(*features())
    assert head.kind == "cmbs" and tuple(out) == head.output_names == ("is_event", "event", "av_score")
    assert out["is_event"].shape == (B, T) and out["event"].shape == (B, 28) and out["av_score"].shape == (B, 28)


def test_ave_cmbs_scores_follow_the_cmbs_formulas():
    head = make_ave().eval()
    f_v, f_a = features()
    with torch.no_grad():
        out = head(f_v, f_a)
        video_q, audio_q = head.temporal_attn(f_v, f_a)
        cmbs = head.CMBS
        top4 = lambda cas: cas.sort(dim=1, descending=True).values[:, :4].mean(dim=1)  # authors' sort-then-slice
        av_score = (top4(cmbs.video_cas(video_q)) + top4(cmbs.audio_cas(audio_q))) / 2
        fused = (video_q + audio_q) / 2
        event = cmbs.localize_module.event_classifier(fused.max(dim=1).values) + 0.3 * av_score
    torch.testing.assert_close(out["av_score"], av_score)
    torch.testing.assert_close(out["event"], event)
    torch.testing.assert_close(out["is_event"], cmbs.localize_module.classifier(fused).squeeze(-1))


def test_packed_attention_equals_torch_multihead_attention():
    torch.manual_seed(0)
    ours, ref = PackedMultiheadAttention(32, 4), torch.nn.MultiheadAttention(32, 4, batch_first=True)
    ref.load_state_dict(ours.state_dict())  # same parameter names and shapes
    ours.eval(), ref.eval()
    q, kv = torch.randn(3, 5, 32), torch.randn(3, 7, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(q, kv, kv), ref(q, kv, kv, need_weights=False)[0], rtol=1e-5, atol=1e-6)


def test_ave_forward_backward_batch2_reaches_every_used_parameter():
    head = make_ave().train()
    f_v, f_a = (x.requires_grad_() for x in features())
    loss = head.loss(head(f_v, f_a), {"labels": ave_labels()})
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert f_v.grad.abs().sum() > 0 and f_a.grad.abs().sum() > 0
    unused = {n for n, p in head.named_parameters() if p.grad is None}
    # exactly the authors' never-called layers: template layers and the decoder self-attentions
    expected = {n for n, _ in head.named_parameters()
                if ".encoder_layer." in n or ".decoder_layer." in n or ("decoder" in n and ".self_attn." in n)}
    assert unused == expected and expected


def test_ave_targets_from_one_hot_and_indices():
    head = make_ave()
    labels = ave_labels()
    target, y_seg, clip = head.targets(labels)
    t2, y2, c2 = head.targets(labels.argmax(dim=-1))
    assert torch.equal(target, t2) and torch.equal(y_seg, y2) and torch.equal(clip, c2)
    assert torch.equal(y_seg, (target != 28).float())
    for i in range(B):  # the clip's single event class
        assert clip[i] == target[i][target[i] != 28][0]


def test_ave_loss_is_bce_plus_two_cross_entropies():
    head = make_ave().eval()
    labels = ave_labels()
    with torch.no_grad():
        out = head(*features())
        target = labels.argmax(-1)
        c = torch.where(target != 28, target, 0).amax(dim=1)
        expected = (F.binary_cross_entropy_with_logits(out["is_event"], (target != 28).float())
                    + F.cross_entropy(out["event"], c) + F.cross_entropy(out["av_score"], c))
        terms = head.loss_terms(out, {"labels": labels})
        torch.testing.assert_close(head.loss(out, {"labels": labels}), expected)
    assert set(terms) == {"is_event", "event", "av_score"}


def test_ave_loss_decreases_with_sgd_on_a_fixed_batch():
    head = make_ave(seed=3)
    f_v, f_a = features()
    before, after = sgd_decreases(head, lambda: head(f_v, f_a), {"labels": ave_labels()})
    assert after < 0.8 * before, (before, after)


# ---- AVE: prediction rule ------------------------------------------------------------------------------------------


def test_ave_predict_rule_on_hand_made_logits():
    is_event = torch.tensor([[-3.0, 0.0, 1e-3, 2.0], [0.5, -1e-3, -0.0, 9.0]])  # σ(0) = 0.5 is not > 0.5
    event = torch.full((2, 28), -1.0)
    event[0, 7] = 4.0
    event[1, 3] = event[1, 20] = 2.0  # a tie goes to the lower index
    expected = torch.tensor([[28, 28, 7, 7], [3, 28, 28, 3]])
    outputs = {"is_event": is_event, "event": event, "av_score": event}
    assert torch.equal(AVEHead.predict(outputs), expected)
    np.testing.assert_array_equal(postprocess.ave_predict({k: v.numpy() for k, v in outputs.items()}),
                                  expected.numpy())
    assert ((torch.sigmoid(is_event) > 0.5) == (AVEHead.predict(outputs) != 28)).all()


def test_ave_predict_torch_equals_numpy_and_the_metric():
    from caeav.metrics.ave import predict_segments

    g = torch.Generator().manual_seed(0)
    is_event = torch.randn(64, T, generator=g) * 3
    is_event[:, 0] = 0.0
    event = torch.randn(64, 28, generator=g)
    outputs = {"is_event": is_event, "event": event}
    got = ave_predict(outputs)
    assert got.dtype == torch.int64 and got.shape == (64, T) and got.min() >= 0 and got.max() <= 28
    np.testing.assert_array_equal(postprocess.ave_predict({k: v.numpy() for k, v in outputs.items()}), got.numpy())
    np.testing.assert_array_equal(predict_segments(is_event.numpy(), event.numpy()), got.numpy())


# ---- AVE: the paper's two-layer MLP option -------------------------------------------------------------------------


@pytest.mark.parametrize("mlp_loss", ["ce", "bce_softmax"])
def test_ave_mlp_option_trains_and_predicts(mlp_loss):
    head = make_ave(kind="mlp", mlp_loss=mlp_loss)
    assert not hasattr(head, "temporal_attn") and head.output_names == ("segment_logits",)
    f_v, f_a = features()
    labels = ave_labels()
    out = head(f_v, f_a)
    assert out["segment_logits"].shape == (B, T, 29)
    loss = head.loss(out, {"labels": labels})
    loss.backward()
    assert torch.isfinite(loss) and head.mlp_class.weight.grad is not None
    before, after = sgd_decreases(head, lambda: head(f_v, f_a), {"labels": labels}, lr=0.5 if mlp_loss == "ce"
                                   else 50.0)
    assert after < before
    pred = AVEHead.predict(out)
    assert torch.equal(pred, out["segment_logits"].argmax(-1))
    np.testing.assert_array_equal(postprocess.ave_predict({"segment_logits": out["segment_logits"].detach().numpy()}),
                                  pred.numpy())


def test_ave_mlp_counts_and_activation_flag():
    cfg = task_cfg("ave", "paper", kind="mlp")
    with torch.device("meta"):
        plain = AVEHead(1536, 768, cfg)
        relu = AVEHead(1536, 768, dataclasses.replace(cfg, head={**cfg.head, "mlp_activation": "relu"}))
    n = sum(p.numel() for p in plain.parameters())
    assert n == (2304 * 512 + 512) + (512 * 29 + 29) == sum(p.numel() for p in relu.parameters())
    assert isinstance(relu.mlp_act, torch.nn.ReLU)


def test_head_config_errors():
    with pytest.raises(ConfigError, match="cmbs or mlp"):
        make_ave(kind="transformer")
    with pytest.raises(ConfigError, match="unknown"):
        make_ave(dimm=3)
    with pytest.raises(ConfigError):
        make_ave(kind="mlp", mlp_loss="hinge")
    with pytest.raises(ConfigError):
        make_avqa(kind="cmbs")
    with pytest.raises(ConfigError, match="match_hidden"):
        make_avqa(match_hidden=[8, 8])


# ---- parameter counts at paper width (architecture.md §10) ---------------------------------------------------------


def test_paper_ave_head_parameter_counts_on_meta():
    count = lambda m: sum(p.numel() for p in m.parameters())
    cfg = load_config("paper", "ave").task
    with torch.device("meta"):
        head = AVEHead(1536, 768, cfg)
        lean = AVEHead(1536, 768, dataclasses.replace(cfg, head={**cfg.head, "keep_unused_layers": False}))
    assert count(head.temporal_attn) == 12_071_554  # incl. the authors' never-called layers
    assert count(head.CMBS) == 21_845
    templates = sum(count(m) for n, m in head.named_modules() if n.endswith(("encoder_layer", "decoder_layer")))
    assert templates == 3_685_376  # §10's "~3.69 M of unused template layers"
    decoder_self_attn = sum(count(m) for n, m in head.named_modules()
                            if "decoder.layers" in n and n.endswith("self_attn"))
    assert decoder_self_attn == 2 * 263_168  # also never called
    assert count(lean.temporal_attn) == 12_071_554 - templates - decoder_self_attn == 7_859_842
    assert count(lean.CMBS) == 21_845


def test_postprocess_imports_no_torch():
    code = "import sys, caeav.model.heads.postprocess; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# ---- ONNX export (opset 18, dynamic batch) ---------------------------------------------------------------------


def test_onnx_export_ave_head_runs_in_onnxruntime_at_batch_1_and_2(tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    head = make_ave().eval()
    path = tmp_path / "ave_head.onnx"
    batch = torch.export.Dim("batch", min=1, max=64)
    torch.onnx.export(head, features(2), str(path), dynamo=True, opset_version=18, input_names=["f_v", "f_a"],
                      output_names=list(head.output_names), dynamic_shapes={"f_v": {0: batch}, "f_a": {0: batch}},
                      verbose=False)
    graph = onnx.load(str(path))
    used = check_tensorrt_ops(graph, onnx)
    assert {"LSTM", "TopK"} <= used and "Attention" not in used
    assert max(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")) == 18

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == list(head.output_names)
    for b in (1, 2, 3):
        f_v, f_a = features(b, seed=10 + b)
        got = dict(zip(head.output_names, sess.run(None, {"f_v": f_v.numpy(), "f_a": f_a.numpy()})))
        with torch.no_grad():
            ref = head(f_v, f_a)
        for name in head.output_names:
            torch.testing.assert_close(torch.from_numpy(got[name]), ref[name], rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(postprocess.ave_predict(got), AVEHead.predict(ref).numpy())
