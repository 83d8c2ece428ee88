"""Atomic bundle writing, the CLI's argument checks and the checkpoint round trip used by `caeav export`."""

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

import caeav.export.bundle as bundle_mod
import caeav.files
import caeav.export.onnx_export as onnx_export
from caeav.cli.main import main
from caeav.config import load_config
from caeav.errors import BundleError, ExportError
from caeav.export.manifest import verify_bundle
from caeav.export.source import checkpoint_source, embed_checkpoint, random_model, random_source, rebuild, text_tower


@pytest.fixture(scope="module")
def tiny():
    cfg = load_config("tiny", "ave")
    return random_model(cfg), text_tower(cfg, load_weights=False), cfg


def _fake_export(spec, path, segments, opset=18):
    """A stand-in for the slow torch export: an Identity graph per input/output pair."""
    nodes = [helper.make_node("Identity", [spec.input_names[0]], [o]) for o in spec.output_names]
    ins = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in spec.input_names]
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in spec.output_names]
    model = helper.make_model(helper.make_graph(nodes, spec.name, ins, outs),
                              opset_imports=[helper.make_opsetid("", opset)])
    onnx.save(model, path)
    return path


def test_interrupted_export_leaves_no_bundle(tiny, tmp_path, monkeypatch):
    model, tower, cfg = tiny
    out = tmp_path / "bundle"
    monkeypatch.setattr(onnx_export, "export_graph", _fake_export)
    written = []
    real_write = bundle_mod.write_json_atomic

    def write(path, data):
        written.append(path.name)
        if path.name == "manifest.json":
            raise KeyboardInterrupt  # killed just before the manifest
        real_write(path, data)

    monkeypatch.setattr(bundle_mod, "write_json_atomic", write)
    with pytest.raises(KeyboardInterrupt):
        bundle_mod.export_bundle(model, tower, out, source=random_source(cfg, 0))
    assert written[-1] == "manifest.json"  # the manifest is the last file of a bundle
    assert not out.exists() and list(tmp_path.iterdir()) == []  # nothing left that looks like a bundle

    # a process killed at that point (no clean-up) leaves only a temp dir without a manifest
    monkeypatch.setattr(caeav.files.shutil, "rmtree", lambda *a, **k: None)
    with pytest.raises(KeyboardInterrupt):
        bundle_mod.export_bundle(model, tower, out, source=random_source(cfg, 0))
    (left,) = list(tmp_path.iterdir())
    assert left.name.startswith("bundle.tmp-") and not (left / "manifest.json").exists()
    with pytest.raises(BundleError):
        verify_bundle(left)


def test_export_replaces_previous_bundle_atomically(tiny, tmp_path, monkeypatch):
    model, tower, cfg = tiny
    out = tmp_path / "bundle"
    monkeypatch.setattr(onnx_export, "export_graph", _fake_export)
    bundle_mod.export_bundle(model, tower, out, source=random_source(cfg, 0))
    first = verify_bundle(out)
    bundle_mod.export_bundle(model, tower, out, source=random_source(cfg, 0), batch=(1, 4, 16))
    assert verify_bundle(out)["batch"]["max"] == 16 and first["batch"]["max"] == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]
    (tmp_path / "notabundle").mkdir()
    (tmp_path / "notabundle" / "x.txt").write_text("keep me")
    with pytest.raises(ExportError, match="not a caeav bundle"):
        bundle_mod.export_bundle(model, tower, tmp_path / "notabundle", source=random_source(cfg, 0))


@pytest.mark.parametrize("argv", [
    ["export", "--out", "x"],  # neither --checkpoint nor --random-weights
    ["export", "--config", "tiny", "--random-weights", "--batch", "4:2:1", "--out", "x"],
    ["export", "--config", "tiny", "--random-weights", "--precision", "fp8", "--out", "x"],
    ["export", "--config", "tiny", "--random-weights", "--engine", "tvm", "--out", "x"],
    ["parity", "does-not-exist"],
])
def test_cli_rejects_bad_arguments(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert "caeav: error:" in capsys.readouterr().err


def test_checkpoint_round_trip(tiny, tmp_path):
    """What `caeav export --checkpoint` and `caeav parity` rebuild is the saved model."""
    from caeav.model.checkpoint import save_checkpoint

    model, _, cfg = tiny
    save_checkpoint(model, cfg, tmp_path / "ckpt")
    source = checkpoint_source(tmp_path / "ckpt")
    assert source["kind"] == "checkpoint" and len(source["sha256"]) == 64
    assert source["path"] == "checkpoint"  # relative to the bundle: never a path of the export machine
    embed_checkpoint(tmp_path / "ckpt", tmp_path / "bundle")
    again, cfg2 = rebuild(source, bundle=tmp_path / "bundle")
    assert cfg2.to_dict() == cfg.to_dict()
    frames = torch.randn(2, cfg.task.segments, 3, 64, 64)
    wave = torch.randn(2, cfg.task.segments, 32000) * 0.1
    caps = torch.randn(2, 77, cfg.caption.text_dim)
    with torch.no_grad():
        a, b = model(frames, wave, caps, caps), again(frames, wave, caps, caps)
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
