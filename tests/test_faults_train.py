"""`caeav train` under faults (issue 15, items 1 and 7): a signal leaves a resumable last/ and prints the command that
resumes; a plain rerun never writes over an existing run, even one a crash left only as `last.old-<pid>`; a crash-left
`last.old-<pid>` is resumed from and cleaned; a bad override type is one line."""

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time

import pytest

from caeav.cli.main import main
from caeav.config import load_config
from caeav.data.synth import synth_dataset
from caeav.errors import Terminated
from caeav.files import pid_alive
from caeav.model.checkpoint import load_checkpoint, load_trainer_state
from caeav.train.interrupt import StopRequest
from caeav.train.trainer import Trainer, TrainOptions

FAST = ["task.train.batch_size=2", "task.train.accum_steps=1", "task.train.checkpoint_every=1"]
DEAD_PID = 123456


@pytest.fixture(scope="module")
def ave_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "ave"
    synth_dataset("ave", root, seed=0, clips=4, media="frames")
    return root


def _train_args(root, out, *extra):
    return ["train", "ave", "--data-root", str(root), "--out", str(out), "-q", *FAST, *extra]


def _signal_when_saved(cmd, run, signum, timeout=240):
    """Start `cmd`, send `signum` as soon as its first last/ exists; (exit code, stderr)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    while not (run / "last" / "config.json").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def test_sigint_saves_last_prints_the_resume_command_and_it_resumes(ave_root, tmp_path, capsys):
    # 4 clips at batch 2: the signal lands during step 2 of 2, so last/ is rewritten at the end of epoch 1's steps
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "caeav.cli.main", *_train_args(ave_root, run, "task.train.epochs=1")]
    code, err = _signal_when_saved(cmd, run, signal.SIGINT)
    assert code == 130, err[-2000:]
    assert err.strip().splitlines()[-1] == "caeav: interrupted by SIGINT; stopped" and "Traceback" not in err
    state = load_trainer_state(run / "last")  # complete: it loads
    load_checkpoint(run / "last")
    assert state["global_step"] == 2 and not (run / "results.json").exists()
    (line,) = [x for x in err.splitlines() if "resume with: " in x]
    assert line.startswith(f"caeav: {run / 'last'} holds ")
    argv = shlex.split(line.split("resume with: ", 1)[1])
    assert argv[0] == "caeav" and argv[-1] == "--resume"
    assert main(argv[1:]) == 0, capsys.readouterr().err  # continues: validation, best/, test, results.json
    assert load_trainer_state(run / "last")["epoch"] == 1
    rows = (run / "metrics.csv").read_text().strip().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1"] and (run / "results.json").is_file()


@pytest.mark.slow
def test_sigterm_with_loader_workers_exits_143_with_last_saved(ave_root, tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "caeav.cli.main", *_train_args(ave_root, run, "task.train.epochs=2"),
           "--workers", "2"]
    code, err = _signal_when_saved(cmd, run, signal.SIGTERM)
    assert code == 143 and err.strip().splitlines()[-1] == "caeav: interrupted by SIGTERM; stopped", err[-2000:]
    assert load_trainer_state(run / "last")["global_step"] >= 1 and "resume with: " in err


@pytest.mark.parametrize("left", ["last.old-123456", "last.tmp-123456", "best", "metrics.csv"])
def test_plain_rerun_refuses_a_directory_holding_a_run(ave_root, tmp_path, left, capsys):
    run = tmp_path / "run"
    if left == "metrics.csv":
        run.mkdir()
        (run / left).write_text("epoch,lr\n1,0.003\n")
    else:
        (run / left).mkdir(parents=True)
        (run / left / "config.json").write_text("{}")
    before = sorted((p.relative_to(run), p.read_bytes() if p.is_file() else None) for p in run.rglob("*"))
    assert main(_train_args(ave_root, run, "task.train.epochs=1")) == 2
    err = capsys.readouterr().err
    assert f"already holds a run ({left}" in err and "--resume" in err
    assert sorted((p.relative_to(run), p.read_bytes() if p.is_file() else None) for p in run.rglob("*")) == before


def test_resume_recovers_a_crash_left_old_checkpoint_and_cleans_it(ave_root, tmp_path):
    assert not pid_alive(DEAD_PID)
    run = tmp_path / "run"
    cfg = load_config("tiny", "ave", FAST + ["task.train.epochs=1"])
    opts = dict(data_root=str(ave_root), out=str(run), show_progress=False, eval_test=False)
    assert Trainer(cfg, TrainOptions(**opts, max_steps=1)).fit()["stopped"]
    os.replace(run / "last", run / f"last.old-{DEAD_PID}")  # killed between the two renames of the next save
    shutil.copytree(run / f"last.old-{DEAD_PID}", run / f"last.tmp-{DEAD_PID}")  # and a half-written new one
    Trainer(cfg, TrainOptions(**opts, resume=True)).fit()
    assert load_trainer_state(run / "last")["epoch"] == 1
    assert sorted(p.name for p in run.glob("last*")) == ["last"]


def test_bad_override_type_is_one_line_naming_key_value_and_type(ave_root, tmp_path, capsys):
    assert main(_train_args(ave_root, tmp_path / "run", "task.train.epochs=abc")) == 2
    err = capsys.readouterr().err
    assert err.strip() == 'caeav: error: task.train.epochs: expected an integer, got "abc"'
    assert not (tmp_path / "run").exists()


def test_stop_request_holds_one_signal_and_a_second_one_stops_at_once():
    with StopRequest(announce=False) as stop:
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)  # torchrun passing the same Ctrl-C on: still one request
        assert stop.requested and stop.signum == signal.SIGINT
        stop._at -= 5  # a second press, seconds later
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        with StopRequest(announce=False) as stop:
            os.kill(os.getpid(), signal.SIGTERM)
            assert stop.requested
            with pytest.raises(Terminated):
                stop.deliver()
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_stopped_note_without_a_checkpoint_says_how_to_start_over(tmp_path):
    from caeav.train.run import stopped_note

    note = stopped_note(tmp_path / "run", "caeav train ave --resume")
    assert note == f"caeav: no checkpoint was saved in {tmp_path / 'run'} yet; to start over, run the same command again"
