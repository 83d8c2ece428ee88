"""Checkpoints that name backbone weight files (decisions D9): the files' sha256 is recorded, the frozen weights are
not stored, loading re-reads the files and refuses a different or missing file with one line."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from caeav.config import load_config
from caeav.errors import WeightsError
from caeav.files import sha256_file
from caeav.model.cae_av import build_model
from caeav.model.checkpoint import load_checkpoint, save_checkpoint
from caeav.model.weights import htsat_caeav_to_official


def _write_backbones(model, folder, seed: int):
    """The tiny model's backbones, randomised, as a timm-layout Swin safetensors and an official HTS-AT checkpoint."""
    g = torch.Generator().manual_seed(seed)
    enc = model.encoder
    with torch.no_grad():
        for module in (enc.visual, enc.audio, enc.frontend.bn0):
            for t in module.state_dict().values():
                if t.is_floating_point():
                    t.copy_(torch.randn(t.shape, generator=g))
    vis = {k: v.contiguous() for k, v in enc.visual.state_dict().items() if "relative_" not in k and "attn_mask" not in k}
    folder.mkdir(parents=True, exist_ok=True)
    save_file(vis, str(folder / "swin.safetensors"))
    torch.save({"state_dict": htsat_caeav_to_official(enc.audio.state_dict(), enc.frontend.bn0.state_dict())},
               folder / "htsat.ckpt")
    return folder / "swin.safetensors", folder / "htsat.ckpt"


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = build_model(load_config("tiny", "ave")).eval()
    swin, htsat = _write_backbones(model, tmp_path / "weights", seed=7)
    cfg = load_config("tiny", "ave", [f"visual.weights={swin}", f"audio.weights={htsat}"])
    save_checkpoint(model, cfg, tmp_path / "ck", {"epoch": 1})
    return model, tmp_path / "ck", swin, htsat


def test_checkpoint_records_backbone_hashes_and_stores_no_frozen_weights(saved):
    model, ck, swin, htsat = saved
    meta = json.loads((ck / "config.json").read_text())["backbone_weights"]
    assert meta["visual"] == {"file": str(swin), "name": "swin.safetensors", "sha256": sha256_file(swin)}
    assert meta["audio"]["sha256"] == sha256_file(htsat)
    stored = load_file(str(ck / "model.safetensors"))
    assert not any(k.startswith(("encoder.visual.", "encoder.audio.")) for k in stored)
    again, _ = load_checkpoint(ck)
    ref, got = model.state_dict(), again.state_dict()
    assert all(torch.equal(ref[k], got[k]) for k in ref), "frozen weights come back from the named files"


def test_a_different_backbone_file_is_refused(saved):
    _, ck, swin, _ = saved
    data = bytearray(swin.read_bytes())
    data[-1] ^= 0xFF  # one flipped bit in the last weight
    swin.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="not the visual backbone this checkpoint was trained with"):
        load_checkpoint(ck)


def test_a_missing_backbone_file_names_it_and_an_override_points_elsewhere(saved, tmp_path):
    _, ck, swin, _ = saved
    moved = tmp_path / "elsewhere.safetensors"
    swin.rename(moved)
    with pytest.raises(WeightsError, match="needs the visual backbone weights swin.safetensors"):
        load_checkpoint(ck)
    model, cfg = load_checkpoint(ck, overrides=[f"visual.weights={moved}"])
    assert cfg.visual.weights == str(moved)
