"""Checkpoint integrity through the real CLI (issue 15, item 4): a damaged, truncated or misfitting checkpoint file is
one `caeav: error:` line naming it, on `eval`, `export`, `train --resume` and `infer --engine torch`; checkpoints
written before hashes existed still load."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import caeav
from caeav.cli.main import main
from caeav.config import load_config
from caeav.data.synth import synth_dataset
from caeav.errors import WeightsError
from caeav.export.source import rebuild
from caeav.files import sha256_file
from caeav.model.checkpoint import load_checkpoint, load_trainer_state, save_checkpoint
from caeav.train.trainer import Trainer, TrainOptions

FAST = ["task.train.batch_size=2", "task.train.accum_steps=1", "task.train.epochs=1", "task.train.checkpoint_every=1"]
DAMAGED = "fails its checksum: the file is damaged; retrain or restore it"


@pytest.fixture(scope="module")
def ave_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "ave"
    synth_dataset("ave", root, seed=0, clips=4, media="frames")
    return root


@pytest.fixture(scope="module")
def stopped_run(ave_root, tmp_path_factory):
    """A run stopped after its first optimiser step: last/ with weights, optimiser and trainer state."""
    out = tmp_path_factory.mktemp("run") / "run"
    cfg = load_config("tiny", "ave", FAST)
    opts = TrainOptions(data_root=str(ave_root), out=str(out), show_progress=False, eval_test=False, max_steps=1)
    assert Trainer(cfg, opts).fit()["stopped"]
    return out


@pytest.fixture
def run(stopped_run, tmp_path):
    """A private copy of `stopped_run`."""
    return shutil.copytree(stopped_run, tmp_path / "run")


def _flip_byte(path, at=None):
    data = bytearray(path.read_bytes())
    data[len(data) // 2 if at is None else at] ^= 0xFF
    path.write_bytes(bytes(data))


def _drop_hashes(ckpt):
    """Make `ckpt` look like a checkpoint written before config.json carried hashes."""
    meta = json.loads((ckpt / "config.json").read_text())
    meta.pop("sha256", None)
    (ckpt / "config.json").write_text(json.dumps(meta))


def _one_error_line(err: str, *parts: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and len([x for x in lines if x.startswith("caeav: error:")]) == 1, err
    line = next(x for x in lines if x.startswith("caeav: error:"))
    assert all(p in line for p in parts), line
    return line


def _resume(run, ave_root):
    return main(["train", "ave", "--data-root", str(ave_root), "--out", str(run), "--resume", "-q", *FAST])


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    from caeav.model.cae_av import build_model

    cfg = load_config("tiny", "ave")
    torch.manual_seed(0)
    return save_checkpoint(build_model(cfg).eval(), cfg, tmp_path_factory.mktemp("ck") / "ck", {"epoch": 1})


def test_save_records_sha256_of_every_file_written_before_config(run):
    meta = json.loads((run / "last" / "config.json").read_text())
    files = sorted(p.name for p in (run / "last").iterdir() if p.name != "config.json")
    assert sorted(meta["sha256"]) == files == ["model.safetensors", "optimizer.safetensors", "trainer_state.json"]
    assert all(meta["sha256"][name] == sha256_file(run / "last" / name) for name in files)


def test_flipped_weight_byte_fails_eval_and_export_with_one_line(tiny_checkpoint, ave_root, tmp_path, capsys):
    ck = shutil.copytree(tiny_checkpoint, tmp_path / "ck")
    _flip_byte(ck / "model.safetensors")
    assert main(["eval", "ave", "--checkpoint", str(ck), "--data-root", str(ave_root)]) == 2
    _one_error_line(capsys.readouterr().err, str(ck / "model.safetensors"), DAMAGED)
    # export must refuse it, not stamp fresh checksums on the damaged weights
    out = tmp_path / "bundle"
    assert main(["export", "--checkpoint", str(ck), "--out", str(out)]) == 2
    _one_error_line(capsys.readouterr().err, str(ck / "model.safetensors"), DAMAGED)
    assert not out.exists() and not list(tmp_path.glob("bundle*"))


def test_checkpoint_without_hashes_still_loads(tiny_checkpoint, tmp_path):
    ck = shutil.copytree(tiny_checkpoint, tmp_path / "ck")
    _drop_hashes(ck)
    model, cfg = load_checkpoint(ck)
    assert cfg.task.name == "ave" and load_trainer_state(ck) == {"epoch": 1}


def test_torch_engine_verifies_the_checkpoint_it_rebuilds(tiny_checkpoint, tmp_path, capsys):
    # a bundle whose manifest names its checkpoint/ without a sha256: the checkpoint's own hashes still guard it
    bundle = tmp_path / "bundle"
    ck = shutil.copytree(tiny_checkpoint, bundle / "checkpoint")
    _flip_byte(ck / "model.safetensors")
    with pytest.raises(WeightsError, match=DAMAGED):
        rebuild({"kind": "checkpoint", "path": "checkpoint"}, bundle=bundle)
    # the shipped default bundle: a damaged checkpoint/ fails the manifest's checksum, one line, before torch runs
    copy = shutil.copytree(Path(caeav.__file__).parent / "assets" / "default" / "bundle", tmp_path / "default")
    _flip_byte(copy / "checkpoint" / "model.safetensors")
    assert main(["infer", "--bundle", str(copy), "--engine", "torch", "-q"]) == 2
    _one_error_line(capsys.readouterr().err, "checkpoint/model.safetensors fails its checksum")


def test_resume_refuses_weights_missing_a_trainable_key_as_eval_does(run, ave_root, tmp_path, capsys):
    weights = run / "last" / "model.safetensors"
    state = load_file(str(weights))
    dropped = next(k for k in state if k.startswith("head."))
    save_file({k: v for k, v in state.items() if k != dropped}, str(weights))
    meta = json.loads((run / "last" / "config.json").read_text())
    meta.setdefault("sha256", {})["model.safetensors"] = sha256_file(weights)  # intact: the key check must catch it
    (run / "last" / "config.json").write_text(json.dumps(meta))
    assert _resume(run, ave_root) == 2
    line = _one_error_line(capsys.readouterr().err, str(weights), "does not fit the model", dropped)
    assert main(["eval", "ave", "--checkpoint", str(run / "last"), "--data-root", str(ave_root)]) == 2
    assert _one_error_line(capsys.readouterr().err) == line  # one check, shared


@pytest.mark.parametrize("hashed", [True, False], ids=["hashed", "legacy"])
@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.safetensors", "trainer_state.json"])
def test_truncated_file_on_resume_is_one_line(run, ave_root, name, hashed, capsys):
    path = run / "last" / name
    before = {p.name: p.read_bytes() for p in (run / "last").iterdir()}
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    if not hashed:
        _drop_hashes(run / "last")
    assert _resume(run, ave_root) == 2
    _one_error_line(capsys.readouterr().err, str(path), DAMAGED if hashed else "unreadable")
    after = {p.name: p.read_bytes() for p in (run / "last").iterdir()}
    assert after.keys() == before.keys() and after[name] != before[name]  # nothing was rewritten over it
