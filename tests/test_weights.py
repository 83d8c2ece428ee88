"""Backbone weight loading (decisions D4): official HTS-AT layout, timm Swin-V2 layouts, one-line errors."""

from __future__ import annotations

import sys
import types

import pytest
import torch

from caeav.config import load_config
from caeav.errors import WeightsError
from caeav.model.backbones import build_audio_backbone, build_visual_backbone
from caeav.model.weights import (
    htsat_caeav_to_official,
    htsat_official_to_caeav,
    load_htsat_weights,
    load_swinv2_weights,
    read_state_dict,
)

TINY = load_config("tiny", "ave")
PAPER = load_config("paper", "ave")


def _randomise(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in module.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.randn(t.shape, generator=g))
    return module


def _audio(seed: int):
    torch.manual_seed(seed)
    return _randomise(build_audio_backbone(TINY.audio), seed), _randomise(torch.nn.BatchNorm2d(64), seed + 1)


def _official_htsat(htsat, bn0) -> dict:
    """A random HTS-AT checkpoint in the official key layout, with everything the real file also carries."""
    state = htsat_caeav_to_official(htsat.state_dict(), bn0.state_dict())
    state["sed_model.spectrogram_extractor.stft.conv_real.weight"] = torch.randn(513, 1, 1024)
    state["sed_model.logmel_extractor.melW"] = torch.randn(513, 64)
    state["sed_model.layers.0.blocks.0.attn.relative_position_index"] = torch.zeros(16, 16, dtype=torch.long)
    state["sed_model.layers.0.blocks.1.attn_mask"] = torch.zeros(16, 16, 16)
    return state


def test_official_htsat_keys_are_the_published_names():
    htsat, bn0 = _audio(0)
    keys = set(_official_htsat(htsat, bn0))
    for key in ("patch_embed.proj.weight", "patch_embed.norm.bias", "layers.0.blocks.1.norm1.weight",
                "layers.0.blocks.1.attn.qkv.weight", "layers.0.blocks.1.attn.qkv.bias", "layers.2.blocks.0.attn.proj.bias",
                "layers.3.blocks.1.attn.relative_position_bias_table", "layers.1.blocks.0.norm2.bias",
                "layers.1.blocks.0.mlp.fc1.weight", "layers.1.blocks.0.mlp.fc2.bias", "layers.0.downsample.reduction.weight",
                "layers.2.downsample.norm.weight", "norm.weight", "tscam_conv.weight", "head.bias", "bn0.running_var"):
        assert "sed_model." + key in keys, key
    assert not any("attention.self" in k or "layernorm" in k or "intermediate" in k for k in keys)


def test_htsat_checkpoint_lands_where_expected(tmp_path):
    src, src_bn0 = _audio(0)
    official = _official_htsat(src, src_bn0)
    path = tmp_path / "HTSAT_AudioSet_Saved_1.ckpt"
    torch.save({"epoch": 3, "global_step": 10, "state_dict": official}, path)

    dst, dst_bn0 = _audio(1)
    load_htsat_weights(dst, path, bn0=dst_bn0)
    for key, value in src.state_dict().items():
        torch.testing.assert_close(dst.state_dict()[key], value, rtol=0, atol=0, msg=key)
    for key, value in src_bn0.state_dict().items():
        torch.testing.assert_close(dst_bn0.state_dict()[key], value, rtol=0, atol=0, msg=key)
    # spot checks against the official names, independent of the inverse map
    blk, qkv = dst.layers[1].blocks[0], official["sed_model.layers.1.blocks.0.attn.qkv.weight"]
    C = blk.attention.self.query.weight.shape[0]
    torch.testing.assert_close(blk.attention.self.key.weight, qkv[C:2 * C])
    torch.testing.assert_close(blk.attention.self.value.bias, official["sed_model.layers.1.blocks.0.attn.qkv.bias"][2 * C:])
    torch.testing.assert_close(blk.layernorm_before.weight, official["sed_model.layers.1.blocks.0.norm1.weight"])
    torch.testing.assert_close(blk.output.dense.weight, official["sed_model.layers.1.blocks.0.mlp.fc2.weight"])
    torch.testing.assert_close(dst.layers[0].downsample.reduction.weight,
                               official["sed_model.layers.0.downsample.reduction.weight"])
    torch.testing.assert_close(dst_bn0.running_mean, official["sed_model.bn0.running_mean"])


def test_lightning_checkpoint_with_foreign_classes_still_loads(tmp_path):
    """A real `.ckpt` pickles Lightning objects; they must not be needed to read the weights."""
    fake = types.ModuleType("fake_lightning_callbacks")

    class ModelCheckpoint:
        def __init__(self):
            self.best = torch.tensor(0.5)

    ModelCheckpoint.__module__, ModelCheckpoint.__qualname__ = fake.__name__, "ModelCheckpoint"
    fake.ModelCheckpoint = ModelCheckpoint
    sys.modules[fake.__name__] = fake
    src, src_bn0 = _audio(0)
    path = tmp_path / "HTSAT_AudioSet_Saved_6.ckpt"
    try:
        torch.save({"callbacks": {"cb": ModelCheckpoint()}, "state_dict": _official_htsat(src, src_bn0)}, path)
    finally:
        del sys.modules[fake.__name__]
    dst, dst_bn0 = _audio(1)
    with pytest.warns(UserWarning, match="full unpickler"):
        load_htsat_weights(dst, path, bn0=dst_bn0)
    torch.testing.assert_close(dst.norm.weight, src.norm.weight)


def test_htsat_map_reports_foreign_keys():
    _, _, unknown = htsat_official_to_caeav({"sed_model.layers.0.blocks.0.attn.weird": torch.zeros(1),
                                             "sed_model.absolute_pos_embed": torch.zeros(1)})
    assert unknown == ["layers.0.blocks.0.attn.weird", "absolute_pos_embed"]


@pytest.mark.filterwarnings("ignore:.*full unpickler")
@pytest.mark.parametrize("case", ["missing_file", "garbage", "empty", "wrong_shape", "missing_key", "extra_key",
                                  "not_htsat"])
def test_htsat_errors_are_one_line_weights_errors(tmp_path, case):
    src, src_bn0 = _audio(0)
    official = _official_htsat(src, src_bn0)
    path = tmp_path / "HTSAT_AudioSet_Saved_1.ckpt"
    if case == "garbage":
        path.write_bytes(b"\x00not a checkpoint")
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "wrong_shape":
        official["sed_model.layers.0.blocks.0.mlp.fc1.weight"] = torch.zeros(3, 3)
    elif case == "missing_key":
        del official["sed_model.layers.3.blocks.1.norm2.bias"]
    elif case == "extra_key":
        official["sed_model.layers.9.blocks.0.norm1.weight"] = torch.zeros(3)
    elif case == "not_htsat":
        official = {"encoder.weight": torch.zeros(3)}
    if case in ("wrong_shape", "missing_key", "extra_key", "not_htsat"):
        torch.save({"state_dict": official}, path)
    dst, dst_bn0 = _audio(1)
    with pytest.raises(WeightsError) as err:
        load_htsat_weights(dst, path, bn0=dst_bn0)
    text = str(err.value)
    assert "\n" not in text and str(path) in text and "HTSAT_AudioSet_Saved" in text
    if case == "wrong_shape":
        assert "layers.0.blocks.0.intermediate.dense.weight" in text and "(3, 3)" in text
    if case == "missing_key":
        assert "layers.3.blocks.1.layernorm_after.bias" in text


# ---- Swin-V2 ---------------------------------------------------------------------------------------------------------


def _swin(seed: int):
    torch.manual_seed(seed)
    return _randomise(build_visual_backbone(TINY.visual), seed)


def _to_timm06_layout(state: dict) -> dict:
    """timm 0.6 / Microsoft layout: merging at the end of the previous stage, head without `.fc`."""
    out = {}
    for key, value in state.items():
        if ".downsample." in key:
            stage = int(key.split(".")[1])
            key = key.replace(f"layers.{stage}.downsample", f"layers.{stage - 1}.downsample", 1)
        out[key.replace("head.fc.", "head.")] = value
    return out


@pytest.mark.parametrize("layout", ["safetensors", "pth_model_wrapper", "bin_timm06"])
def test_swinv2_checkpoint_loads_in_every_layout(tmp_path, layout):
    src = _swin(0)
    state = {k: v for k, v in src.state_dict().items() if "relative_" not in k and "attn_mask" not in k}
    if layout == "safetensors":
        from safetensors.torch import save_file

        path = tmp_path / "model.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    elif layout == "pth_model_wrapper":
        path = tmp_path / "swin.pth"
        torch.save({"model": state, "epoch": 1}, path)
    else:
        path = tmp_path / "pytorch_model.bin"
        torch.save(_to_timm06_layout(state), path)
    dst = _swin(1)
    load_swinv2_weights(dst, path, TINY.visual)
    for key, value in src.state_dict().items():
        torch.testing.assert_close(dst.state_dict()[key], value, rtol=0, atol=0, msg=key)


def test_swinv2_errors_name_the_expected_weights(tmp_path):
    dst = _swin(1)
    with pytest.raises(WeightsError) as err:
        load_swinv2_weights(dst, tmp_path / "nope.safetensors", PAPER.visual)
    text = str(err.value)
    assert "nope.safetensors" in text and "swinv2_large_window12_192.ms_in22k" in text and "visual.weights=" in text
    assert "ImageNet-22k" in text and "\n" not in text

    state = _swin(0).state_dict()
    state["layers.0.blocks.0.mlp.fc1.weight"] = torch.zeros(2, 2)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(WeightsError, match=r"bad.pth: does not fit .*fc1.weight.*\(2, 2\)"):
        load_swinv2_weights(dst, tmp_path / "bad.pth", TINY.visual)


def test_swinv2_head_mismatch_says_which_setting_to_change(tmp_path):
    state = _swin(0).state_dict()
    state["head.fc.weight"], state["head.fc.bias"] = torch.zeros(1000, 512), torch.zeros(1000)
    torch.save(state, tmp_path / "in1k.pth")
    with pytest.raises(WeightsError, match="set visual.num_classes=1000"):
        load_swinv2_weights(_swin(1), tmp_path / "in1k.pth", TINY.visual)


def test_read_state_dict_unwraps_and_rejects_tensorless_files(tmp_path):
    torch.save({"state_dict": {"a": torch.ones(1)}, "epoch": 2}, tmp_path / "w.pt")
    assert list(read_state_dict(tmp_path / "w.pt", "x")) == ["a"]
    torch.save({"epoch": 2}, tmp_path / "n.pt")
    with pytest.raises(WeightsError, match="no tensors|no state dict"):
        read_state_dict(tmp_path / "n.pt", "x")


def test_encoder_loads_both_backbones_from_files(tmp_path):
    from safetensors.torch import save_file

    from caeav.model.encoder import CAEAVEncoder

    torch.manual_seed(0)
    src = CAEAVEncoder(TINY)
    _randomise(src.visual, 3), _randomise(src.audio, 4), _randomise(src.frontend.bn0, 5)
    vis = {k: v.contiguous() for k, v in src.visual.state_dict().items() if "relative_" not in k and "attn_mask" not in k}
    save_file(vis, str(tmp_path / "swin.safetensors"))
    torch.save({"state_dict": htsat_caeav_to_official(src.audio.state_dict(), src.frontend.bn0.state_dict())},
               tmp_path / "htsat.ckpt")
    dst = CAEAVEncoder(TINY)
    dst.load_backbone_weights(visual=str(tmp_path / "swin.safetensors"), audio=str(tmp_path / "htsat.ckpt"))
    for name in ("visual", "audio", "frontend"):
        for key, value in getattr(src, name).state_dict().items():
            torch.testing.assert_close(getattr(dst, name).state_dict()[key], value, rtol=0, atol=0, msg=key)
    assert not any(p.requires_grad for p in dst.visual.parameters())
