"""The bundled default of `caeav infer` (caeav/assets/default, made by scripts/make_default_bundle.sh): it ships with
the package, verifies, and its onnxruntime output on the bundled sample equals PyTorch's on the same clip."""

import json

import numpy as np

from caeav.cli.main import main
from caeav.export.manifest import verify_bundle
from caeav.runtime.bundle import DEFAULT_BUNDLE, DEFAULT_SAMPLE


def _infer(engine: str, out) -> dict:
    assert main(["infer", "--engine", engine, "--json", str(out), "-q"]) == 0
    doc = json.loads(out.read_text())
    assert not doc["failures"] and len(doc["videos"]) == 1
    return doc["videos"][0]


def test_default_bundle_ships_and_verifies():
    assert DEFAULT_SAMPLE.is_file(), "the package must ship caeav/assets/default/sample.mp4"
    manifest = verify_bundle(DEFAULT_BUNDLE)  # every listed file's size and sha256
    assert manifest["task"] == "ave"
    assert (DEFAULT_BUNDLE / "checkpoint" / "model.safetensors").is_file()


def test_default_infer_matches_pytorch(tmp_path):
    ort = _infer("ort", tmp_path / "ort.json")
    ref = _infer("torch", tmp_path / "torch.json")
    assert ort["seconds"] == ref["seconds"] == 10
    labels = [s["label"] for s in ort["per_second"]]
    assert labels == [s["label"] for s in ref["per_second"]]
    assert len(set(labels) - {"background"}) >= 1, labels  # the trained model finds the sample's event
    for key in ("confidence", "event_prob"):
        np.testing.assert_allclose([s[key] for s in ort["per_second"]], [s[key] for s in ref["per_second"]],
                                   atol=1e-4)
