"""Issue 19 through the CLI: `caeav import` / `caeav export-official` round trips and bad input.

The authors' models are fixed-size, so the fast round trips use `tiny` models written in the authors' key layout by
`export-official` (same names and transforms; the paper-size mapping itself is checked in test_import_official.py):
the imported checkpoint must load with `load_checkpoint` (the loader of eval/export/infer/parity) and hold the same
tensors. Bad input is one line on stderr, exit status 2, nothing written.
"""

from __future__ import annotations

import pickle

import pytest
import torch

from caeav.cli.main import main
from caeav.config import load_config
from caeav.model.cae_av import build_model
from caeav.model.checkpoint import load_checkpoint, save_checkpoint


@pytest.fixture(scope="module")
def authors_files(tmp_path_factory):
    """{task: (authors'-format file, caeav checkpoint, extra overrides)} for tiny models."""
    root = tmp_path_factory.mktemp("official")
    out = {}
    for task in ("ave", "avvp", "avqa", "avs_s4"):
        torch.manual_seed(0)
        extra = []
        if task == "avvp":  # the R(2+1)D-18 stream comes from its own file (torchvision layout)
            stream = build_model(load_config("tiny", task)).st_stream
            torch.save(stream.state_dict(), root / "st.pth")
            extra = [f"st.weights={root / 'st.pth'}"]
        cfg = load_config("tiny", task, extra)
        model = build_model(cfg)
        ckpt = save_checkpoint(model, cfg, root / f"{task}-ckpt")
        src = root / f"{task}.pt"
        assert main(["export-official", str(ckpt), "--out", str(src)]) == 0
        out[task] = (src, ckpt, extra)
    return out


def run_import(src, task, out, *args):
    return main(["import", str(src), "--task", task, "--out", str(out), "--config", "tiny", *args])


@pytest.mark.parametrize("task", ["ave", "avvp", "avqa", "avs_s4"])
def test_import_round_trip_loads_like_any_checkpoint(authors_files, tmp_path, task, capsys):
    src, ckpt, extra = authors_files[task]
    out = tmp_path / "imported"
    assert run_import(src, task, out, *extra) == 0
    printed = capsys.readouterr().out
    assert "imported" in printed and "recomputed here" in printed
    original, _ = load_checkpoint(ckpt)
    imported, cfg = load_checkpoint(out)
    a, b = original.state_dict(), imported.state_dict()
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    if task == "avvp":
        assert cfg.task.authors_audio_bypass is True
    elif task == "avqa":
        assert cfg.task.head["question_pads"] == "trailing"
    elif task == "avs_s4":
        assert cfg.task.avmoe.ua_mhsa_axis == "batch"
    again = tmp_path / "again.pt"  # and back: the authors' file, bit for bit
    assert main(["export-official", str(out), "--out", str(again)]) == 0
    first, second = torch.load(src, weights_only=True), torch.load(again, weights_only=True)
    assert set(first) == set(second) and all(torch.equal(first[k], second[k]) for k in first)
    if task == "avqa":
        assert all(k.startswith("module.") for k in first)


def _refused(capsys, rc, out):
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("caeav: error:"), err
    assert "Traceback" not in err
    assert not out.exists()
    return err


class NeedsCode:
    """A class a weights_only load must refuse to construct."""

    def __reduce__(self):
        return (print, ("arbitrary code ran",))


def test_bad_inputs_are_one_line_and_write_nothing(authors_files, tmp_path, capsys):
    src, _, _ = authors_files["ave"]
    state = torch.load(src, weights_only=True)
    out = tmp_path / "never"

    assert "AVE model, not avvp" in _refused(capsys, run_import(src, "avvp", out), out)
    assert "--variant cae_av" in _refused(capsys, run_import(src, "ave", out, "--variant", "avmoe"), out)

    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    assert "truncated" in _refused(capsys, run_import(truncated, "ave", out), out)

    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as fh:
        pickle.dump({"state_dict": NeedsCode()}, fh)
    assert "refused" in _refused(capsys, run_import(evil, "ave", out), out)
    evil_torch = tmp_path / "evil_torch.pt"
    torch.save({"model": {"x": torch.zeros(1)}, "hook": NeedsCode()}, evil_torch)
    assert "refused" in _refused(capsys, run_import(evil_torch, "ave", out), out)

    extra = tmp_path / "extra.pt"
    torch.save({**state, "foo.bar": torch.zeros(1)}, extra)
    assert "foo.bar" in _refused(capsys, run_import(extra, "ave", out), out)

    gone = "case.tau"
    missing = tmp_path / "missing.pt"
    torch.save({k: v for k, v in state.items() if k != gone}, missing)
    assert gone in _refused(capsys, run_import(missing, "ave", out), out)

    no_swin = tmp_path / "no_swin.pt"
    torch.save({k: v for k, v in state.items() if not k.startswith("swin.")}, no_swin)
    assert "visual.weights" in _refused(capsys, run_import(no_swin, "ave", out), out)

    key = "vis_moe_adapter_blocks_p1.0.multimodal_experts.0.my_tokens"
    fewer = tmp_path / "fewer_tokens.pt"
    torch.save({**state, key: state[key][:3].clone()}, fewer)
    assert "task.avmoe.num_latent_tokens" in _refused(capsys, run_import(fewer, "ave", out), out)

    wrapped = tmp_path / "wrapped.pt"  # wrappers and DataParallel prefixes are fine
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}}, wrapped)
    assert run_import(wrapped, "ave", out) == 0 and out.is_dir()


def test_avvp_needs_the_st_weights(authors_files, tmp_path, capsys):
    src, _, _ = authors_files["avvp"]
    out = tmp_path / "never"
    assert "st.weights=" in _refused(capsys, run_import(src, "avvp", out), out)


def test_avmoe_checkpoint_round_trip_and_variant_check(tmp_path, capsys):
    """An AVMoE-baseline file (no CASTE/CASE/caption keys) imports with --variant avmoe into a `variant=avmoe`
    checkpoint with the same tensors; without the flag it is refused in one line naming it, nothing written."""
    torch.manual_seed(0)
    cfg = load_config("tiny", "ave", ["variant=avmoe"])
    ckpt = save_checkpoint(build_model(cfg), cfg, tmp_path / "ckpt")
    src = tmp_path / "avmoe.pt"
    assert main(["export-official", str(ckpt), "--out", str(src)]) == 0
    state = torch.load(src, weights_only=True)
    assert not any(k.startswith(("case.", "vis_caste_blocks_p1.", "mapper.", "frame_adapter_v.")) for k in state)
    out = tmp_path / "never"
    assert "--variant avmoe" in _refused(capsys, run_import(src, "ave", out), out)
    out = tmp_path / "imported"
    assert run_import(src, "ave", out, "--variant", "avmoe") == 0
    original, _ = load_checkpoint(ckpt)
    imported, icfg = load_checkpoint(out)
    assert icfg.variant == "avmoe" and imported.case is None
    a, b = original.state_dict(), imported.state_dict()
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
