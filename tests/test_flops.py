"""`caeav model summary --flops`: FLOPs per clip per component (caeav.model.flops), checked against hand counts."""

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from caeav.cli.main import main
from caeav.config import load_config
from caeav.model import flops


class ConvLinear(nn.Module):
    """Conv2d(3→8, 3×3, pad 1) on 6×6, then Linear(288→10): hand count below."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 6 * 6, 10)

    def forward(self, x):
        return self.fc(self.conv(x).flatten(1))


class Attention(nn.Module):
    def forward(self, q):
        return F.scaled_dot_product_attention(q, q, q)


def hand_count_conv_linear(batch: int) -> dict:
    """2 FLOPs per multiply-add: conv 8 outputs × 6·6 positions × 3·3·3 taps; linear 288 × 10."""
    return {"conv": 2 * batch * 8 * 36 * 27, "fc": 2 * batch * 288 * 10}


def test_small_module_equals_the_hand_count():
    with torch.device("meta"):
        module = ConvLinear()
        x = torch.empty(2, 3, 6, 6)
    count = flops.count_module_flops(module, {"x": x})
    hand = hand_count_conv_linear(2)
    assert count.by_module == {"conv": {"aten.convolution": hand["conv"]}, "fc": {"aten.addmm": hand["fc"]}}
    assert count.total == sum(hand.values()) and count.uncounted == {}


def test_sdpa_is_counted_on_meta_and_the_fused_cpu_kernel_too():
    """Meta: SDPA decomposes into two bmm. Fake CPU tensors: the fused kernel, which FlopCounterMode alone counts 0."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    b, h, L, d = 2, 4, 16, 8
    expected = 2 * (2 * b * h * L * L * d)  # QKᵀ and AV
    meta = flops.count_module_flops(Attention(), {"q": torch.empty(b, h, L, d, device="meta")})
    assert meta.total == expected
    with FakeTensorMode():
        fake = flops.count_module_flops(Attention(), {"q": torch.empty(b, h, L, d)})
    assert fake.by_module == {"": {"aten._scaled_dot_product_flash_attention_for_cpu": expected}}


def test_a_heavy_op_without_formula_is_reported():
    """On fake CPU tensors an eval nn.MultiheadAttention runs one fused op that no formula counts: it is listed."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        mha = nn.MultiheadAttention(8, 2, batch_first=True).eval()
        x = torch.empty(1, 4, 8)
        count = flops.count_module_flops(mha, {"query": x, "key": x, "value": x, "need_weights": False})
    assert count.uncounted == {"aten._native_multi_head_attention": 1} and count.total == 0


@pytest.fixture(scope="module")
def tiny_ave():
    return flops.flops_report(load_config("tiny", "ave"))


def test_components_sum_to_the_total(tiny_ave):
    assert sum(tiny_ave["components"].values()) == tiny_ave["total"] > 0
    assert tiny_ave["uncounted_heavy_ops"] == {}
    assert sum(tiny_ave["ops"].values()) == tiny_ave["total"]
    for detail, value in tiny_ave["of_which"].items():
        assert 0 < value <= tiny_ave["components"][detail.rsplit(": ", 1)[0]]


def test_tiny_rows_match_formulas(tiny_ave):
    """Token mixing and the front end's DFT convolution, from the formulas, for tiny's shapes (T = 10 frames)."""
    from caeav.model.cae_av import build_model

    cfg = load_config("tiny", "ave")
    model = build_model(cfg, device="meta")
    mixing = 0
    for m in model.encoder.modules():
        if isinstance(m, flops.MoEAdapter):
            l_s, l_o = m.token_mix.out_channels, m.token_mix.in_channels
            channels = m.channel_map.out_features if m.channel_first else m.channel_map.in_features
            mixing += flops.token_mixing_macs(l_s, l_o, channels)
    assert tiny_ave["of_which"]["AVMoE adapters: token-mixing convolutions"] == 2 * 10 * mixing
    fe = model.encoder.frontend
    dft = fe.cfg.n_fft * fe.cfg.n_fft * fe.n_slots  # n_fft kernels × n_fft taps × conv positions
    assert tiny_ave["components"]["audio front end"] >= 2 * 10 * dft


def test_alignment_formula_picks_what_the_adapter_runs():
    """AVE paper stage 0, audio adapter (self audio 4096×96, other visual 2304×192): channels first is cheaper."""
    tokens_first = flops.alignment_macs(4096, 2304, 96, 192, channel_first=False)
    channels_first = flops.alignment_macs(4096, 2304, 96, 192, channel_first=True)
    assert tokens_first == 4096 * 2304 * 192 + 4096 * 192 * 96
    assert channels_first == 2304 * 192 * 96 + 4096 * 2304 * 96 < tokens_first


def test_reconciliation_lines_add_up(tiny_ave):
    lines = tiny_ave["authors_flops_reconciliation"]
    parts = [v for k, v in lines.items() if k[:2] in ("+ ", "- ")]
    assert lines["caeav FLOPs per clip"] + sum(parts) == lines["= the authors' model, as counted"]
    assert "issue 17: the authors' paper AVE model" not in lines  # the issue's figure is paper AVE's


def test_cli_json_on_tiny(capsys):
    assert main(["model", "summary", "--config", "tiny", "--task", "avvp", "--flops", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    section = report["flops"]
    assert sum(section["components"].values()) == section["total"]
    assert section["components"]["spatio-temporal stream (R(2+1)D-18)"] > 0
    assert report["totals"]["total"] > 0  # the parameter summary is still there


def test_cli_table_on_tiny(capsys):
    assert main(["model", "summary", "--config", "tiny", "--flops"]) == 0
    out = capsys.readouterr().out
    assert "reconciliation with the authors' FLOPs" in out and "token-mixing convolutions" in out


@pytest.mark.slow
def test_paper_ave_reconciles_with_issue_17():
    """The paper AVE count (930.75 G) + the reconciliation = the authors' 1,077.7 G (issue 17), within 0.1 %."""
    report = flops.flops_report(load_config("paper", "ave"))
    assert report["total"] == 930_754_424_832 and report["uncounted_heavy_ops"] == {}
    lines = report["authors_flops_reconciliation"]
    assert abs(lines["difference from issue 17"]) < 1e-3
    for name, row in report["authors_components"].items():  # every part the issue names, to its rounding
        assert abs(row["authors"] / 1e9 - row["issue 17 (G)"]) <= 0.55, name
