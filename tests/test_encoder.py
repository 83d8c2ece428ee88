"""The CAE-AV encoder (architecture.md §2.4-2.6, §10, §11.9): lock-step walk, freezing, init identity, sizes."""

from __future__ import annotations

import pytest
import torch

from caeav.config import TASKS, ConfigError, load_config
from caeav.model.encoder import CAEAVEncoder, plan_walk

B = 2


def _inputs(cfg, seed: int = 0, size: int | None = None):
    g = torch.Generator().manual_seed(seed)
    T, S = cfg.task.segments, size or cfg.task.input_size
    frames = torch.randn(B, T, 3, S, S, generator=g)
    wave = 0.1 * torch.randn(B, T, cfg.frontend.sample_rate, generator=g)
    return frames, wave


def _encoder(task: str, seed: int = 0) -> CAEAVEncoder:
    torch.manual_seed(seed)
    return CAEAVEncoder(load_config("tiny", task))


@pytest.mark.parametrize("task", TASKS)
def test_forward_backward_shapes_and_gradients(task):
    enc = _encoder(task).train()
    cfg = enc.cfg
    out = enc(*_inputs(cfg))
    BT = B * cfg.task.segments
    vs, aus = enc.visual_shapes, enc.audio_shapes
    assert out.v.shape == (BT, vs[-1].tokens, vs[-1].dim)
    assert out.a.shape == (BT, aus[-1].tokens, aus[-1].dim)
    assert [tuple(x.shape) for x in out.visual_stages] == [(BT, s.tokens, s.dim) for s in vs]
    assert len(out.router_probs) == 4 * enc.num_positions
    assert all(p.shape == (BT, cfg.task.avmoe.num_cma + cfg.task.avmoe.num_ua) for p in out.router_probs)

    loss = out.v.sum() + out.a.sum() + sum(x.sum() for x in out.visual_stages)
    loss.backward()
    params = dict(enc.named_parameters())
    frozen = enc.frozen_parameter_names()
    assert frozen and all(not params[n].requires_grad and params[n].grad is None for n in frozen)
    trainable = enc.trainable_parameter_names()
    assert sorted(frozen + trainable) == sorted(params)
    assert all(n.startswith(("visual_caste", "audio_caste", "visual_moe", "audio_moe")) for n in trainable)
    no_grad = [n for n in trainable if params[n].grad is None]
    assert not no_grad, no_grad[:5]
    # the gated adapters' gates move at step 0 (their output is exactly 0, their gradient is not)
    gates = [p.grad for n, p in enc.visual_moe_p2.named_parameters() if n.endswith("gate")]
    assert gates and any(g.abs().sum() > 0 for g in gates)


def test_frozen_parts_stay_in_eval_mode():
    enc = _encoder("ave").train()
    assert enc.visual_caste.training and enc.audio_moe_p1.training
    for name, module in enc.frozen_modules().items():
        assert not any(m.training for m in module.modules()), name
    enc.eval().train()
    assert not enc.frontend.bn0.training and not enc.visual.training and not enc.audio.training


def _plain_backbones(enc: CAEAVEncoder, frames, wave):
    """Swin-V2 and HTS-AT run by their libraries' own stage forwards (no walk, no adapters)."""
    x = frames.flatten(0, 1)
    v = enc.visual.patch_embed(x)
    stages = []
    for stage in enc.visual.layers:
        v = stage(v)
        stages.append(v.flatten(1, 2))
    stages[-1] = enc.visual.norm(stages[-1])
    a = enc.audio(enc.frontend(wave))
    return v.flatten(1, 2), a, stages


@pytest.mark.parametrize("task", ["ave", "avvp"])
def test_walk_equals_plain_backbones_at_init(task):
    """Gated tasks: every CASTE residual and every MoE output is exactly 0 at init, so the walk must reproduce the
    plain backbones — in train mode too (frozen parts: no DropPath, no bn0 statistics)."""
    enc = _encoder(task).train()
    frames, wave = _inputs(enc.cfg)
    with torch.no_grad():
        out = enc(frames, wave)
        enc.eval()
        v, a, stages = _plain_backbones(enc, frames, wave)
    torch.testing.assert_close(out.v, v, rtol=0, atol=1e-6)
    torch.testing.assert_close(out.a, a, rtol=0, atol=1e-6)
    for got, want in zip(out.visual_stages, stages):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def test_adapters_change_the_walk_once_opened():
    enc = _encoder("ave").eval()
    frames, wave = _inputs(enc.cfg)
    with torch.no_grad():
        v, a, _ = _plain_backbones(enc, frames, wave)
        for m in enc.modules():
            for name in ("gamma", "gate"):
                if isinstance(getattr(m, name, None), torch.nn.Parameter):
                    getattr(m, name).fill_(0.5)
        out = enc(frames, wave)
    assert (out.v - v).abs().max() > 1e-3 and (out.a - a).abs().max() > 1e-3


def test_frames_of_another_size_are_resized_inside():
    enc = _encoder("avs_s4").eval()
    frames, wave = _inputs(enc.cfg, size=80)
    resized = torch.nn.functional.interpolate(frames.flatten(0, 1), size=(64, 64), mode="bicubic", align_corners=False)
    with torch.no_grad():
        got = enc(frames, wave).v
        want = enc(resized.view(B, -1, 3, 64, 64), wave).v
    torch.testing.assert_close(got, want)


# ---- block pairing ---------------------------------------------------------------------------------------------------


def _paired(plan, stage):
    return [(st.swin_block, st.htsat_block, st.position) for st in plan[stage] if st.htsat_block is not None]


def test_pairing_paper_ave_has_8_positions_and_stage2_pairs_blocks_2_5_to_17():
    plan = plan_walk((2, 2, 18, 2), (2, 2, 6, 2), skip_num=2)
    assert _paired(plan, 2) == [(3 * j + 2, j, 2 + j) for j in range(6)]
    assert _paired(plan, 0) == [(0, 0, 0), (1, 1, 1)]
    assert _paired(plan, 1) == [(0, 0, None), (1, 1, None)] and _paired(plan, 3) == [(0, 0, None), (1, 1, None)]
    assert [st.swin_block for st in plan[2] if st.htsat_block is None] == [b for b in range(18) if b % 3 != 2]
    assert [st.swin_block for s in plan for st in s if st.first] == [0, 0, 2, 0]
    assert sum(st.position is not None for s in plan for st in s) == 8


@pytest.mark.parametrize("skip_num", [0, 1])
def test_pairing_without_skips_has_12_positions(skip_num):
    plan = plan_walk((2, 2, 18, 2), (2, 2, 6, 2), skip_num=skip_num)
    positions = [st.position for s in plan for st in s if st.position is not None]
    assert positions == list(range(12))


def test_pairing_tiny_stage2_has_ratio_3_and_bad_depths_raise():
    plan = plan_walk((2, 2, 6, 2), (2, 2, 2, 2), skip_num=2)
    assert _paired(plan, 2) == [(2, 0, 2), (5, 1, 3)]
    with pytest.raises(ConfigError):
        plan_walk((2, 2, 7, 2), (2, 2, 2, 2), skip_num=2)


# ---- paper sizes on the meta device (architecture.md §10) ------------------------------------------------------------


def _meta(task: str) -> CAEAVEncoder:
    with torch.device("meta"):
        return CAEAVEncoder(load_config("paper", task))


def test_paper_ave_parameter_counts_on_meta():
    enc = _meta("ave")
    counts = enc.parameter_counts()
    assert counts["visual_backbone"] == 228_772_549
    assert sum(p.numel() for p in enc.visual.head.parameters()) == 33_569_617
    assert sum(p.numel() for p in enc.visual_norm.parameters()) == 3_072
    assert counts["audio_backbone_core"] == 27_532_824
    assert counts["audio_backbone_rest"] == 2_708_735  # final LN + tscam conv + head (unused)
    assert counts["frontend"] == 128  # bn0
    assert counts["avmoe"] == 90_549_536
    assert counts["caste"] == 17_095_056
    assert enc.num_positions == 8
    assert [(s.tokens, s.dim) for s in enc.visual_shapes] == [(2304, 192), (576, 384), (144, 768), (36, 1536)]
    assert [(s.tokens, s.dim) for s in enc.audio_shapes] == [(4096, 96), (1024, 192), (256, 384), (64, 768)]
    assert [c.k for c in enc.visual_caste] == [691, 172, 43, 10] and [c.k for c in enc.audio_caste] == [1228, 307, 76, 19]


def test_paper_avvp_has_12_positions_on_meta():
    enc = _meta("avvp")
    assert enc.num_positions == 12 and len(enc.audio_moe_p2) == 12
    assert [st.position for st in enc.plan[3] if st.htsat_block is not None] == [10, 11]
