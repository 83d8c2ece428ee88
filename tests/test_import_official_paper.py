"""Issue 19 at the authors' size (slow): a paper-size checkpoint in the authors' format imports, exports and passes
`caeav parity`. The authors' models are fixed-size, so this is the only size where their file format is the real one.

The source file is the authors' AVE AVMoE model (the smallest of their models: 362.7 M parameters) with random weights,
written in their layout by `caeav export-official` from a random caeav model (the key/shape mapping itself is checked
against the authors' state-dict maps in test_import_official.py); about 10 minutes and 8 GB on a 2-core CPU."""

from __future__ import annotations

import json
import time

import pytest
import torch

from caeav.cli.main import main
from caeav.config import load_config
from caeav.model.cae_av import build_model
from caeav.model.checkpoint import save_checkpoint


@pytest.mark.slow
def test_paper_avmoe_import_export_parity(tmp_path, capsys):
    start = time.time()
    torch.manual_seed(0)
    cfg = load_config("paper", "ave", ["variant=avmoe"])
    model = build_model(cfg, load_weights=False)
    ckpt = save_checkpoint(model, cfg, tmp_path / "random")
    del model
    src = tmp_path / "authors-ave-avmoe.pt"
    assert main(["export-official", str(ckpt), "--out", str(src)]) == 0
    imported = tmp_path / "imported"
    assert main(["import", str(src), "--task", "ave", "--variant", "avmoe", "--out", str(imported)]) == 0
    bundle = tmp_path / "bundle"
    assert main(["export", "--checkpoint", str(imported), "--out", str(bundle), "--batch", "1:1:2"]) == 0
    assert main(["parity", str(bundle)]) == 0
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["parity"]["passed"] and manifest["config"]["variant"] == "avmoe"
    with capsys.disabled():
        print(f"\npaper AVMoE import -> export -> parity: {time.time() - start:.0f} s")
