"""AVMoE adapters (architecture.md §3): init invariants, router, load balancing, variants, parameter counts, export."""

import dataclasses
import math

import pytest
import torch

from caeav.config import AVMoEConfig, ConfigError, load_config
from caeav.model.avmoe import MoEAdapter, convert_official_state_dict, load_balancing_loss
from caeav.model.experts import UA_ATTENTION, paramfree_self_attention

# small adapter: self 12 tokens × 16 ch, other 20 tokens × 8 ch (token mixing first); SWAPPED maps the other way
# (channel map first, the cheaper order when C_s < C_o)
SMALL = dict(dim_self=16, tokens_self=12, dim_other=8, tokens_other=20)
SWAPPED = dict(dim_self=8, tokens_self=20, dim_other=16, tokens_other=12)


def small_cfg(**changes) -> AVMoEConfig:
    base = dict(num_cma=1, num_ua=1, reduction=4, groups=2, num_latent_tokens=4, use_bn=True)
    return dataclasses.replace(AVMoEConfig(), **{**base, **changes})


def inputs(bt=6, seed=0, dims=SMALL):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(bt, dims["tokens_self"], dims["dim_self"], generator=g)
    return x, torch.randn(bt, dims["tokens_other"], dims["dim_other"], generator=g)


def randomize_(module: torch.nn.Module, seed=1):
    """Non-zero gates and non-trivial BN statistics, so every path of the forward shows in the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.split(".")[-1].startswith("gate"):
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
        for name, b in module.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g) * 0.1)
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)
    return module


@pytest.mark.parametrize("attention", UA_ATTENTION)
@pytest.mark.parametrize("train", [True, False])
def test_gated_output_is_exactly_zero_at_init(attention, train):
    torch.manual_seed(0)
    m = MoEAdapter(**SMALL, cfg=small_cfg(ua_attention=attention, num_ua=2), gated=True).train(train)
    out, probs = m(*inputs())
    assert out.shape == (6, 12, 16) and probs.shape == (6, 3)
    assert torch.equal(out, torch.zeros_like(out))


def test_ungated_output_is_not_zero():
    torch.manual_seed(0)
    m = MoEAdapter(**SMALL, cfg=small_cfg(), gated=False).eval()
    out, _ = m(*inputs())
    assert out.abs().mean() > 1e-3


@pytest.mark.parametrize("num_cma,num_ua", [(1, 1), (1, 2), (2, 2), (0, 1), (1, 0)])
def test_router_gives_one_distribution_per_frame(num_cma, num_ua):
    m = MoEAdapter(**SMALL, cfg=small_cfg(num_cma=num_cma, num_ua=num_ua), gated=True).eval()
    _, probs = m(*inputs(bt=5))
    assert probs.shape == (5, num_cma + num_ua)
    assert (probs > 0).all()
    torch.testing.assert_close(probs.sum(-1), torch.ones(5))


def test_output_is_the_probability_weighted_sum_of_the_experts():
    m = randomize_(MoEAdapter(**SMALL, cfg=small_cfg(num_ua=2), gated=True)).eval()
    x, y = inputs()
    out, probs = m(x, y)
    other = m.align(y)
    experts = [*m.cma, *m.ua]
    expected = sum(probs[:, e, None, None] * experts[e](x, other) for e in range(3))
    torch.testing.assert_close(out, expected)


def test_load_balancing_loss_values():
    uniform = torch.tensor([[0.9, 0.1], [0.1, 0.9]])  # mean = (0.5, 0.5)
    assert load_balancing_loss(uniform).item() == pytest.approx(0.0, abs=1e-7)
    assert load_balancing_loss(torch.full((7, 4), 0.25)).item() == pytest.approx(0.0, abs=1e-7)
    skewed = torch.tensor([[0.9, 0.1], [0.5, 0.5]])  # mean = (0.7, 0.3)
    # E·KL = (ln 0.5 − ln 0.7) + (ln 0.5 − ln 0.3) = ln(0.25 / 0.21)
    expected = math.log(0.25 / 0.21)
    assert expected == pytest.approx(0.1743534, abs=1e-7)
    assert load_balancing_loss(skewed).item() == pytest.approx(expected, rel=1e-6)
    assert load_balancing_loss(skewed) > 0


@pytest.mark.parametrize("experts", [2, 4])
def test_load_balancing_gradient_is_the_authors(experts):
    """The authors' per-call term on [BT, 1, E] probabilities (AVVP-NET:223-227, AVS-NET:316-320) has the gradient of
    ours and differs from it by E·log E; with their task weights (AVVP 1, AVS-MS3 0.01) so do the weighted sums."""
    import torch.nn.functional as F

    logits = torch.randn(3, 6, experts, generator=torch.Generator().manual_seed(experts), requires_grad=True)

    def authors(p):  # gating_probs [BT, 1, E]
        mean = p.unsqueeze(1).mean(dim=0)
        return F.kl_div(mean.log(), torch.full_like(mean, 1.0 / mean.size(0)), reduction="batchmean")

    for weight in (1.0, 0.01):
        grads = []
        for fn in (load_balancing_loss, authors):
            total = weight * sum(fn(torch.softmax(logits[i], -1)) for i in range(3))
            grads.append(torch.autograd.grad(total, logits)[0])
            if fn is authors:
                theirs = total.item()
            else:
                ours = total.item()
        torch.testing.assert_close(grads[0], grads[1])
        assert theirs - ours == pytest.approx(weight * 3 * experts * math.log(experts), rel=1e-5)


def test_task_load_balancing_weights_are_the_authors():
    from caeav.config import load_config

    assert load_config("paper", "avvp").task.avmoe.lb_weight == 1.0  # use_load_balacing_loss=1, summed, weight 1
    assert load_config("paper", "avs_ms3").task.avmoe.lb_weight == 0.01  # load_balancing_loss_weight=0.01
    assert load_config("paper", "avs_s4").task.avmoe.lb_weight == 0.0


def test_router_noise_only_in_train_mode():
    x, y = inputs()
    m = MoEAdapter(**SMALL, cfg=small_cfg(router_noise_std=0.5, use_bn=False), gated=True)
    with torch.no_grad():
        clean = torch.softmax(m.router(torch.cat([x.mean(1), m.align(y).mean(1)], -1)), -1)
        m.train()
        first, second = m(x, y)[1], m(x, y)[1]
        assert not torch.allclose(first, second)
        assert not torch.allclose(first, clean)
        m.eval()
        torch.testing.assert_close(m(x, y)[1], clean)
        torch.testing.assert_close(m(x, y)[1], m(x, y)[1], rtol=0, atol=0)
    quiet = MoEAdapter(**SMALL, cfg=small_cfg(router_noise_std=0.0), gated=True).train()
    with torch.no_grad():
        torch.testing.assert_close(quiet(x, y)[1], quiet(x, y)[1], rtol=0, atol=0)


@pytest.mark.parametrize("attention", UA_ATTENTION)
@pytest.mark.parametrize("use_bn", [True, False])
def test_every_ua_variant_trains(attention, use_bn):
    torch.manual_seed(0)
    m = randomize_(MoEAdapter(**SMALL, cfg=small_cfg(ua_attention=attention, use_bn=use_bn), gated=True)).train()
    x, y = inputs()
    x.requires_grad_(True)
    out, probs = m(x, y)
    (out.square().mean() + load_balancing_loss(probs)).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    silent = [n for n, p in m.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not silent


def test_gated_init_still_gets_gradients_on_its_gates():
    m = MoEAdapter(**SMALL, cfg=small_cfg(), gated=True).train()
    out, _ = m(*inputs())
    (out * torch.randn_like(out)).sum().backward()
    assert m.cma[0].gate.grad.abs() > 0 and m.ua[0].gate.grad.abs() > 0


def test_paramfree_attention_normalises_rows_but_sums_columns():
    x = torch.randn(2, 5, 3)
    weights = torch.softmax(torch.einsum("bic,bjc->bij", x, x), dim=-1)  # rows (over j) sum to 1
    expected = torch.einsum("bij,bic->bjc", weights, x)  # x_res_j = Σ_i A_ij x_i
    torch.testing.assert_close(paramfree_self_attention(x), expected)


def test_mhsa_attends_within_each_frame():
    m = MoEAdapter(**SMALL, cfg=small_cfg(ua_attention="mhsa"), gated=False).eval()
    x, y = inputs(bt=4)
    other = m.align(y)
    full = m.ua[0](x, other)
    torch.testing.assert_close(m.ua[0](x[:1], other[:1]), full[:1])


def test_mhsa_batch_axis_is_the_authors_sequence_first_call():
    """`ua_mhsa_axis=batch`: exactly the authors' `nn.MultiheadAttention` (sequence-first) applied to [BT, L, C]."""
    torch.manual_seed(0)
    m = MoEAdapter(**SMALL, cfg=small_cfg(ua_attention="mhsa", ua_mhsa_axis="batch"), gated=False).eval()
    expert = m.ua[0]
    authors = torch.nn.MultiheadAttention(SMALL["dim_self"], 4, dropout=0.2)  # batch_first=False, as their code
    authors.load_state_dict(expert.mhsa.state_dict())  # same keys: checkpoints are interchangeable
    authors.eval()
    x, y = inputs(bt=6)
    with torch.no_grad():
        reference = expert.bottleneck(authors(x, x, x)[0])  # their call: x [BT, L, C] read as [seq, batch, C]
        got = expert(x, m.align(y))
    assert torch.equal(got, reference)
    with torch.no_grad():  # across the batch: one frame's output depends on the other frames
        assert not torch.allclose(expert(x[:1]), got[:1], atol=1e-4)
        default = MoEAdapter(**SMALL, cfg=small_cfg(ua_attention="mhsa"), gated=False).eval().ua[0]
        default.load_state_dict(expert.state_dict())
        assert not torch.allclose(default(x), got, atol=1e-4)  # the default attends over tokens: another result


def test_mhsa_axis_is_recorded_in_the_config():
    cfg = load_config("tiny", "avs_s4", ["task.avmoe.ua_mhsa_axis=batch"])
    assert cfg.to_dict()["task"]["avmoe"]["ua_mhsa_axis"] == "batch"  # -> checkpoint config.json and manifest
    assert type(cfg).from_dict(cfg.to_dict()).task.avmoe.ua_mhsa_axis == "batch"
    assert load_config("paper", "avs_s4").task.avmoe.ua_mhsa_axis == "tokens"  # caeav's axis stays the default
    old = load_config("tiny", "avs_s4").to_dict()
    del old["task"]["avmoe"]["ua_mhsa_axis"]  # a config written before the flag existed
    assert type(cfg).from_dict(old).task.avmoe.ua_mhsa_axis == "tokens"


@pytest.mark.parametrize("task", ["avs_s4", "avs_ms3"])
def test_avs_latent_tokens_are_the_authors_87(task):
    """The authors' AVS MoEAdapter calls never pass num_tokens, so their adapters keep the class default of 87."""
    assert load_config("paper", task).task.avmoe.num_latent_tokens == 87
    assert load_config("base", task).task.avmoe.num_latent_tokens == 87


def test_alignment_orders_agree():
    """The cheaper product order (channel map first) equals the code's order (token mixing first)."""
    assert not MoEAdapter(**SMALL, cfg=small_cfg(), gated=False).channel_first
    assert MoEAdapter(**SWAPPED, cfg=small_cfg(), gated=False).channel_first
    for dims in [SMALL, SWAPPED]:
        m = MoEAdapter(**dims, cfg=small_cfg(), gated=False).double()
        torch.nn.init.normal_(m.token_mix.bias)
        y = torch.randn(3, dims["tokens_other"], dims["dim_other"], dtype=torch.float64)
        mixed = torch.nn.functional.conv2d(y.unsqueeze(-1), m.token_mix.weight, m.token_mix.bias).squeeze(-1)
        reference = m.channel_map(mixed)
        for order in (True, False):
            m.channel_first = order
            torch.testing.assert_close(m.align(y), reference)


def test_config_errors_are_clear():
    with pytest.raises(ConfigError, match="groups"):
        MoEAdapter(**SMALL, cfg=small_cfg(groups=3), gated=True)
    with pytest.raises(ConfigError, match="ua_attention"):
        MoEAdapter(**SMALL, cfg=small_cfg(ua_attention="bogus"), gated=True)
    with pytest.raises(ConfigError, match="ua_mhsa_axis"):
        MoEAdapter(**SMALL, cfg=small_cfg(ua_attention="mhsa", ua_mhsa_axis="frames"), gated=True)
    with pytest.raises(ConfigError, match="expert"):
        MoEAdapter(**SMALL, cfg=small_cfg(num_cma=0, num_ua=0), gated=True)


# AVE, Swin-V2-L + HTS-AT (architecture.md §10): (C_s, L_s, C_o, L_o) → parameters
AVE_MODULES = {
    "stage0_audio": ((96, 4096, 192, 2304), 9_495_285),
    "stage0_visual": ((192, 2304, 96, 4096), 9_529_349),
    "stage2_audio": ((384, 256, 768, 144), 488_997),
    "stage2_visual": ((768, 144, 384, 256), 715_253),
}


def test_paper_ave_parameter_counts():
    cfg = load_config("paper", "ave").task.avmoe
    counts = {}
    with torch.device("meta"):
        for name, (dims, expected) in AVE_MODULES.items():
            m = MoEAdapter(*dims, cfg=cfg, gated=True)  # AVE: audio_gate = True, visual always gated
            counts[name] = sum(p.numel() for p in m.parameters())
            assert counts[name] == expected, name
    # 2 stage-0 and 6 stage-2 positions, each with p1 and p2, each with an audio and a visual MoE
    total = 2 * 2 * (counts["stage0_audio"] + counts["stage0_visual"]) + 6 * 2 * (
        counts["stage2_audio"] + counts["stage2_visual"]
    )
    assert total == 90_549_536


def test_official_keys_load_strictly():
    cfg = small_cfg(num_ua=2, ua_attention="paramfree")
    ours = MoEAdapter(**SMALL, cfg=cfg, gated=True).state_dict()
    tail = {"latent": "my_tokens", "down": "down_sampler", "up": "up_sampler", "bn_down": "bn1", "bn_up": "bn2",
            "ln_pre": "ln_before", "gate_self": "gate_av"}
    head = {"token_mix": "conv_adapter", "channel_map": "fc", "cma": "multimodal_experts", "ua": "singlemodal_experts"}
    official = {}
    for key, value in ours.items():
        parts = key.split(".")
        parts[0] = head.get(parts[0], parts[0])
        if len(parts) > 2:
            parts[2] = tail.get(parts[2], parts[2])
        official[".".join(parts)] = value
    assert "singlemodal_experts.1.gate_av" in official and "conv_adapter.weight" in official
    converted = convert_official_state_dict(official)
    assert set(converted) == set(ours)
    MoEAdapter(**SMALL, cfg=cfg, gated=True).load_state_dict(converted, strict=True)


@pytest.mark.filterwarnings("ignore:# The axis name")  # x and y share the batch Dim, which is the point
@pytest.mark.parametrize(
    "attention,dims",
    [*((a, SMALL) for a in UA_ATTENTION), ("none", SWAPPED), ("mhsa-batch", SMALL)],
    ids=[*UA_ATTENTION, "none-channel_first", "mhsa-batch"],
)
def test_onnx_export_runs_in_onnxruntime_at_two_batch_sizes(attention, dims, tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from caeav.export.preflight import check_model

    torch.manual_seed(0)
    attention, _, axis = attention.partition("-")
    cfg = small_cfg(ua_attention=attention, num_ua=2, ua_mhsa_axis=axis or "tokens")
    m = randomize_(MoEAdapter(**dims, cfg=cfg, gated=True)).eval()
    batch = torch.export.Dim("batch", min=1, max=1024)
    path = tmp_path / "avmoe.onnx"
    program = torch.onnx.export(
        m, inputs(bt=4, dims=dims), dynamo=True, opset_version=18,
        input_names=["x", "y"], output_names=["out", "probs"],
        dynamic_shapes={"x": {0: batch}, "y": {0: batch}}, external_data=False,
    )
    program.save(str(path))
    graph = onnx.load(str(path))
    assert {op.domain: op.version for op in graph.opset_import}.get("", None) == 18
    assert not {n.op_type for n in graph.graph.node} & {"If", "Loop", "Attention", "NonZero"}
    assert check_model(graph) == []  # the TensorRT pre-flight of `caeav export`
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for bt in (2, 7):
        x, y = inputs(bt=bt, seed=bt, dims=dims)
        with torch.no_grad():
            out, probs = m(x, y)
        got_out, got_probs = session.run(["out", "probs"], {"x": x.numpy(), "y": y.numpy()})
        assert got_out.shape == x.shape
        torch.testing.assert_close(torch.from_numpy(got_out), out, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(torch.from_numpy(got_probs), probs, rtol=1e-4, atol=1e-6)
