"""Trainer mechanics on `tiny` + synthetic AVE data: resume equivalence, NaN stop, checkpoints, eval, DDP, CLI."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from caeav.cli.main import main
from caeav.config import load_config
from caeav.data.synth import synth_dataset
from caeav.model.checkpoint import load_checkpoint, load_trainer_state, save_checkpoint
from caeav.train.run import evaluate_checkpoint
from caeav.train.trainer import Trainer, TrainingError, TrainOptions

FAST = ["task.train.batch_size=2", "task.train.accum_steps=1"]


@pytest.fixture(scope="module")
def ave_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "ave"
    synth_dataset("ave", root, seed=0, clips=4, media="frames")
    return root


def _trainer(root, out, overrides, **kw):
    cfg = load_config("tiny", "ave", FAST + overrides)
    return Trainer(cfg, TrainOptions(data_root=str(root), out=str(out), show_progress=False, eval_test=False, **kw))


def _weights(run_dir):
    return load_file(str(run_dir / "last" / "model.safetensors"))


def test_killed_mid_epoch_and_resumed_equals_uninterrupted_run(ave_root, tmp_path):
    # 4 clips, batch 2: 2 optimiser steps per epoch, 2 epochs = 4 steps; the Gumbel noise and dropout draw from the RNG
    overrides = ["task.train.epochs=2", "task.train.checkpoint_every=1"]
    full = _trainer(ave_root, tmp_path / "full", overrides).fit()
    assert full["best_epoch"] in (1, 2)
    # "kill" after step 3 (mid epoch 2; last/ was refreshed after it), then resume in a fresh trainer
    stopped = _trainer(ave_root, tmp_path / "cut", overrides, max_steps=3).fit()
    assert stopped == {"stopped": True, "global_step": 3}
    state = load_trainer_state(tmp_path / "cut" / "last")
    assert (state["epoch"], state["step_in_epoch"], state["global_step"]) == (1, 1, 3)
    at_step_3 = _weights(tmp_path / "cut")
    _trainer(ave_root, tmp_path / "cut", overrides, resume=True).fit()
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "cut")
    assert a.keys() == b.keys()
    differing = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differing, f"resumed run differs in {differing[:5]}"
    assert any(not torch.equal(a[k], at_step_3[k]) for k in a), "step 4 changed nothing: the comparison is vacuous"
    rows = (tmp_path / "cut" / "metrics.csv").read_text().strip().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2"]
    full_rows = (tmp_path / "full" / "metrics.csv").read_text().strip().splitlines()
    assert [r.split(",")[:-2] for r in full_rows] == [r.split(",")[:-2] for r in rows]  # same losses and metrics


def test_nan_loss_stops_with_message_and_last_good_checkpoint(ave_root, tmp_path, monkeypatch):
    from caeav.model.cae_av import CAEAV

    real_loss, calls = CAEAV.loss, {"n": 0}

    def poisoned(self, outputs, batch, epoch):
        total, parts = real_loss(self, outputs, batch, epoch)
        calls["n"] += 1
        return (total * float("nan") if calls["n"] == 2 else total), parts

    monkeypatch.setattr(CAEAV, "loss", poisoned)
    trainer = _trainer(ave_root, tmp_path / "run", ["task.train.epochs=1"])
    with pytest.raises(TrainingError, match=r"loss became nan at epoch 1, optimiser step 2.*last good checkpoint"):
        trainer.fit()
    state = load_trainer_state(tmp_path / "run" / "last")
    assert state["global_step"] == 1 and state["step_in_epoch"] == 1
    model, _ = load_checkpoint(tmp_path / "run" / "last")
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_checkpoint_roundtrip_and_eval_command(ave_root, tmp_path, capsys):
    cfg = load_config("tiny", "ave")
    from caeav.model.cae_av import build_model

    torch.manual_seed(3)
    model = build_model(cfg).eval()
    save_checkpoint(model, cfg, tmp_path / "ck", {"epoch": 1})
    again, cfg2 = load_checkpoint(tmp_path / "ck")
    assert cfg2 == cfg
    ref, got = model.state_dict(), again.state_dict()
    assert all(torch.equal(ref[k], got[k]) for k in ref), "tiny's random backbones must be restored from the file"
    meta = json.loads((tmp_path / "ck" / "config.json").read_text())
    assert meta["backbone_weights"] == {"visual": None, "audio": None}
    assert main(["eval", "ave", "--checkpoint", str(tmp_path / "ck"), "--data-root", str(ave_root),
                 "--split", "val", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == evaluate_checkpoint(str(tmp_path / "ck"), str(ave_root), "val")
    assert 0.0 <= printed["accuracy"] <= 100.0 and printed["score"] == printed["accuracy"]
    assert main(["eval", "avvp", "--checkpoint", str(tmp_path / "ck"), "--data-root", str(ave_root)]) == 2


def test_train_cli_refuses_to_overwrite_and_resume_needs_a_run(ave_root, tmp_path, capsys):
    (tmp_path / "run" / "last").mkdir(parents=True)
    args = ["train", "ave", "--data-root", str(ave_root), "--out", str(tmp_path / "run"), "-q"]
    assert main(args) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main(["train", "ave", "--data-root", str(ave_root), "--out", str(tmp_path / "new"), "--resume"]) == 2
    assert main(["train", "ave", "--data-root", str(ave_root), "task.train.bogus=1"]) == 2
    assert main(["train", "ave", "--data-root", str(ave_root), "--out", str(tmp_path / "t0"), "--threads", "0"]) == 2
    assert "--threads must be at least 1" in capsys.readouterr().err


def test_cli_main_does_not_import_torch():
    code = "import sys, caeav.cli.main; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


@pytest.mark.slow
def test_ddp_two_gloo_processes_train_and_write_one_checkpoint(ave_root, tmp_path):
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "caeav.cli.main", "train", "ave", "--data-root", str(ave_root), "--out", str(out),
           "--devices", "2", "--device", "cpu", "-q", *FAST, "task.train.epochs=1"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["best", "last", "tensorboard"]
    assert not list(out.glob(".*tmp*")) and not list(out.glob("*.old-*"))
    state = load_trainer_state(out / "last")
    assert state["world"] == 2 and len(state["rng"]) == 2
    assert state["global_step"] == 1  # 4 clips / (2 ranks x batch 2)
    model, _ = load_checkpoint(out / "last")  # no `module.` prefixes: loads without DDP
    assert not any(k.startswith("module.") for k in load_file(str(out / "last" / "model.safetensors")))
    rows = (out / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 2 and "test" in json.loads((out / "results.json").read_text())
    assert list((out / "tensorboard").iterdir())


@pytest.mark.parametrize("clip", [0.0, 1e-3])
def test_accumulation_sums_micro_batch_gradients_and_clipping_bounds_the_step(ave_root, tmp_path, monkeypatch, clip):
    """accum 2 on 4 clips at batch 2: one optimiser step per epoch whose gradient is the *sum* of the two micro-batch
    gradients (architecture.md §8: summed, not averaged); with grad_clip the step sees a total norm <= grad_clip."""
    micro, at_step, watched = [], [], {}
    real_setup, real_step = Trainer._setup, torch.optim.Adam.step

    def setup(self):
        state = real_setup(self)
        watched["p"] = [p for p in self.model.parameters() if p.requires_grad][-1]
        watched["p"].register_hook(lambda g: micro.append(g.detach().clone()))
        return state

    def step(opt, *a, **kw):
        at_step.append({id(p): p.grad.detach().clone() for group in opt.param_groups for p in group["params"]
                        if p.grad is not None})
        return real_step(opt, *a, **kw)

    monkeypatch.setattr(Trainer, "_setup", setup)
    monkeypatch.setattr(torch.optim.Adam, "step", step)
    trainer = _trainer(ave_root, tmp_path / "run", ["task.train.epochs=1", "task.train.accum_steps=2",
                                                   f"task.train.grad_clip={clip}"])
    trainer.fit()
    assert len(micro) == 2 and len(at_step) == 1
    assert load_trainer_state(tmp_path / "run" / "last")["global_step"] == 1
    stepped, raw = at_step[0], micro[0] + micro[1]
    norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in stepped.values()])))
    got = stepped[id(watched["p"])]
    if clip == 0:
        torch.testing.assert_close(got, raw)
    else:
        assert norm <= clip * (1 + 1e-4)
        torch.testing.assert_close(got, raw * (got.norm() / raw.norm()))  # scaled down, same direction
        assert got.norm() < raw.norm()
