"""The whole CAE-AV (encoder + caption projector + CASE + head) on `tiny`: forward + backward for every task."""

import pytest
import torch

from caeav.config import load_config
from caeav.model.cae_av import build_model

B = 2


def _inputs(cfg, generator):
    T, S, D = cfg.task.segments, cfg.task.input_size, cfg.caption.text_dim
    inputs = {
        "frames": torch.randn(B, T, 3, S, S, generator=generator),
        "wave": 0.1 * torch.randn(B, T, 32000, generator=generator),
        "vis_caption": torch.randn(B, 77, D, generator=generator),
        "aud_caption": torch.randn(B, 77, D, generator=generator),
    }
    if cfg.task.name == "avvp":  # the tiny R(2+1)D stream computes `st` from its clips
        st = cfg.st
        inputs["st_clips"] = torch.randn(B, T, 3, st.frames, st.size, st.size, generator=generator)
    if cfg.task.name == "avqa":
        inputs["question"] = torch.randint(1, 93, (B, 14), generator=generator)
        inputs["neg_frames"] = torch.randn(B, T, 3, S, S, generator=generator)
    return inputs


def _batch(cfg, generator):
    T, S = cfg.task.segments, cfg.task.input_size
    return {
        "ave": {"labels": torch.randint(0, 29, (B, T), generator=generator)},
        "avvp": {"labels": (torch.rand(B, 25, generator=generator) > 0.8).float()},
        "avqa": {"answer": torch.randint(0, 42, (B,), generator=generator)},
        "avs_s4": {"masks": (torch.rand(B, 1, S, S, generator=generator) > 0.5).float()},
        "avs_ms3": {"masks": (torch.rand(B, T, S, S, generator=generator) > 0.5).float()},
    }[cfg.task.name]


@pytest.mark.parametrize("task", ["ave", "avvp", "avqa", "avs_s4", "avs_ms3"])
def test_tiny_forward_backward_batch_2(task):
    cfg = load_config("tiny", task)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    model = build_model(cfg).train()
    out = model(**_inputs(cfg, g))
    assert {"aux", "router_probs"} <= set(out)
    loss, parts = model.loss(out, _batch(cfg, g), epoch=100)
    assert torch.isfinite(loss) and loss.ndim == 0
    assert parts["cap_v"] > 0 and parts["gamma"] > 0  # B = 2 videos: InfoNCE has negatives; γ ramped in
    loss.backward()
    frozen = set(model.frozen_parameter_names())
    params = dict(model.named_parameters())
    assert frozen and all(params[n].grad is None for n in frozen), "a frozen backbone received a gradient"
    trained = [n for n, p in params.items() if n not in frozen and p.grad is not None and p.grad.abs().sum() > 0]
    for part in ("encoder.visual_moe_p1", "encoder.visual_caste", "caption_projector", "case.", "head."):
        assert any(n.startswith(part) for n in trained), f"no gradient reached {part}"
    assert not any(p.requires_grad for n, p in params.items() if n in frozen)


def test_eval_forward_returns_head_outputs_only_and_checkpoint_excludes_backbones():
    cfg = load_config("tiny", "ave")
    model = build_model(cfg).eval()
    with torch.no_grad():
        out = model(**_inputs(cfg, torch.Generator().manual_seed(0)))
    assert set(out) == {"is_event", "event", "av_score"}
    assert out["is_event"].shape == (B, 10) and out["event"].shape == (B, 28)
    state = model.trainable_state_dict()
    assert state and not any(k.startswith(("encoder.visual.", "encoder.audio.", "encoder.frontend.")) for k in state)
    assert any(k.startswith("encoder.visual_caste.") for k in state)
