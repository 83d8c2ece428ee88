"""The `paper` AVE model exports to ONNX on CPU with random weights and passes the TensorRT pre-flight (slow)."""

import resource
import time

import pytest

from caeav.config import load_config
from caeav.export.bundle import export_bundle
from caeav.export.manifest import verify_bundle
from caeav.export.preflight import check_graph
from caeav.export.source import random_model, random_source, text_tower


@pytest.mark.slow
def test_paper_ave_exports(tmp_path, capsys):
    start = time.time()
    cfg = load_config("paper", "ave")
    model = random_model(cfg)  # load_weights=False: random backbones, nothing downloaded
    tower = text_tower(cfg, load_weights=False)
    out = export_bundle(model, tower, tmp_path / "paper-ave", source=random_source(cfg, 0), batch=(1, 2, 2))
    manifest = verify_bundle(out)
    sizes = {}
    for name, entry in manifest["graphs"].items():
        assert check_graph(out / entry["file"]) == []
        sizes[name] = entry["bytes"] + sum(e["bytes"] for e in entry.get("external_data", []))
    assert manifest["graphs"]["encoder"].get("external_data")  # > 256 MiB of weights live beside the graph
    assert sizes["encoder"] > 1e9 and sizes["text_encoder"] > 4e8
    with capsys.disabled():
        print(f"\npaper AVE export: {time.time() - start:.0f} s, peak RSS "
              f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.1f} GB; graph sizes (MB): "
              + ", ".join(f"{k} {v / 1e6:.0f} ({manifest['graphs'][k]['nodes']} nodes)" for k, v in sizes.items()))
