"""The fault matrix of issue 15, through the real CLI: each case asserts the exit status, that stderr is one line (or
click's usage block for usage errors), never a traceback, and that outputs which existed before are byte-identical
afterwards. Faults of single subsystems live beside them (test_faults_captions, test_faults_checkpoint,
test_faults_train, test_infer_outputs); this module covers the CLI entry and the ones that cross commands."""

import hashlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from caeav.cli.main import main
from caeav.runtime.bundle import DEFAULT_BUNDLE, DEFAULT_SAMPLE

ENTRY = "import sys; from caeav.cli.main import main; sys.exit(main())"  # what the `caeav` console script runs


def tree_digest(root: Path) -> dict:
    """{relative path: sha256} of every file under `root` (the 'byte-identical afterwards' check)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def cli(capsys, *argv) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def spawn(*argv, cwd=None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-c", ENTRY, *map(str, argv)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the command ended (rc {proc.returncode}) before the signal could be sent: {err[-2000:]}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail("timed out waiting for the command to start working")


# ------------------------------------------------------------------------------------------- item 0: usage errors

@pytest.mark.parametrize("argv, needle", [
    (("infer", "--bogus"), "No such option: --bogus"),
    (("eval", "ave", "--perturbation-typo", "x"), "No such option"),
    (("train",), "Missing argument"),
    (("infer", "--workers", "abc"), "Invalid value for '--workers'"),
    (("export", "--out"), "requires an argument"),
    (("data", "synth", "ave"), "Missing option '--out'"),
    (("frobnicate",), "No such command"),
])
def test_usage_errors_print_usage_and_one_message_exit_2(capsys, argv, needle):
    code, err = cli(capsys, *argv)
    assert code == 2, err
    assert "Traceback" not in err and err.lstrip().startswith("Usage: caeav "), err
    errors = [ln for ln in err.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1 and needle in errors[0], err


def test_console_script_returns_the_usage_status():
    """The entry point passes main's status to the shell (a dropped return value was how Ctrl-C exited 0)."""
    proc = subprocess.run([sys.executable, "-c", ENTRY, "infer", "--bogus"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and "No such option: --bogus" in proc.stderr and "Traceback" not in proc.stderr


# ------------------------------------------------------------------------------------------- item 1: interrupts

@pytest.mark.parametrize("signum, status, name", [(signal.SIGINT, 130, "SIGINT"), (signal.SIGTERM, 143, "SIGTERM")])
def test_interrupted_export_exits_with_the_signal_status_and_keeps_the_old_bundle(tmp_path, signum, status, name):
    """An export into an existing bundle, interrupted mid-way: 130/143, one line, the old bundle byte-identical
    and no temporary directory left beside it."""
    out = tmp_path / "bundle"
    shutil.copytree(DEFAULT_BUNDLE, out)
    before = tree_digest(out)
    proc = spawn("export", "--config", "tiny", "--random-weights", "--task", "ave", "--out", out)
    wait_for(lambda: any(p.name.startswith("bundle.tmp-") for p in tmp_path.iterdir()), proc)
    time.sleep(0.3)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == status, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == f"caeav: interrupted by {name}; stopped", err
    assert tree_digest(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


# ------------------------------------------------------------------------------------------- item 2: unwritable outputs

@pytest.fixture()
def a_file(tmp_path) -> Path:
    f = tmp_path / "plain.txt"
    f.write_text("keep me\n")
    return f


@pytest.mark.parametrize("command", [
    ("data", "synth", "ave", "--out", "{file}/sub"),
    ("export", "--config", "tiny", "--random-weights", "--task", "ave", "--out", "{file}/bundle"),
    ("train", "ave", "--config", "tiny", "--data-root", "{tmp}", "--out", "{file}/run"),
    ("export", "--config", "tiny", "--random-weights", "--task", "ave", "--out", "/proc/caeav-bundle"),
    ("data", "synth", "ave", "--out", "{file}"),
])
def test_unwritable_outputs_are_one_line_before_any_work(capsys, tmp_path, a_file, command):
    argv = [c.format(file=a_file, tmp=tmp_path) for c in command]
    before = tree_digest(tmp_path)
    t0 = time.perf_counter()
    code, err = cli(capsys, *argv)
    assert code == 2, err
    line = one_line(err)
    assert "--out" in line and ("not a directory" in line or "cannot write" in line or "is a file" in line), line
    assert tree_digest(tmp_path) == before  # nothing created, the file untouched
    assert time.perf_counter() - t0 < 20  # refused up front, not after building a model


def test_bad_task_names_are_called_unknown(capsys, tmp_path):
    for argv in (("export", "--config", "tiny", "--random-weights", "--task", "foo", "--out", tmp_path / "b"),
                 ("train", "foo", "--config", "tiny", "--data-root", tmp_path, "--out", tmp_path / "r")):
        code, err = cli(capsys, *argv)
        assert code == 2 and "unknown task 'foo'" in one_line(err)
    assert list(tmp_path.iterdir()) == []


def test_engine_trt_without_tensorrt_says_so(capsys):
    code, err = cli(capsys, "infer", DEFAULT_SAMPLE, "--engine", "trt", "-q")
    line = one_line(err)
    assert code == 2 and "TensorRT" in line
    if importlib.util.find_spec("tensorrt") is None:
        assert "TensorRT is not installed here" in line


# ------------------------------------------------------------------------------------------- item 3: portable bundles

def test_bundle_moved_to_another_directory_runs_parity_and_torch_without_its_source(tmp_path, capsys):
    """Export from a checkpoint, move the bundle, delete the run it came from: parity and `--engine torch` use the
    bundle's own checkpoint/, and no path of the exporting machine is in the manifest."""
    from caeav.config import load_config
    from caeav.export.source import random_model
    from caeav.model.checkpoint import save_checkpoint

    cfg = load_config("tiny", "ave")
    run = tmp_path / "run"
    save_checkpoint(random_model(cfg, seed=3), cfg, run / "best")
    built = tmp_path / "built"
    code, err = cli(capsys, "export", "--checkpoint", run / "best", "--out", built, "--batch", "1:1:2")
    assert code == 0, err
    moved = tmp_path / "elsewhere" / "bundle"
    shutil.copytree(built, moved)
    shutil.rmtree(run)
    shutil.rmtree(built)
    text = (moved / "manifest.json").read_text()
    assert str(tmp_path) not in text and json.loads(text)["source"]["path"] == "checkpoint"

    assert main(["parity", str(moved)]) == 0, capsys.readouterr().err
    docs = {}
    for engine in ("ort", "torch"):
        out = tmp_path / f"{engine}.json"
        code = main(["infer", str(DEFAULT_SAMPLE), "--bundle", str(moved), "--engine", engine, "--json", str(out),
                     "-q"])
        assert code == 0, capsys.readouterr().err
        docs[engine] = json.loads(out.read_text())
    labels = {e: [s["index"] for s in d["videos"][0]["per_second"]] for e, d in docs.items()}
    assert labels["ort"] == labels["torch"] and len(labels["ort"]) == 10
