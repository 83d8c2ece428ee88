"""Issue 15 for `caeav infer`: outputs checked before any work, results written as they go (OUT.partial.jsonl), an
interrupted folder run writes what it finished ("interrupted": true, exit 130 / 143), and a truncated file reports the
duration it really decodes. Toy bundles (tests/runtime_bundles.py) keep each case to a few seconds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import pytest

from caeav.cli.main import main
from caeav.runtime.results import partial_path, read_partial
from caeav.runtime.windows import timeline_seconds
from runtime_bundles import toy_bundle
from test_runtime import make_clip

ENTRY = "import sys; from caeav.cli.main import main; sys.exit(main())"


@pytest.fixture(scope="module")
def toys(tmp_path_factory):
    root = tmp_path_factory.mktemp("out-toys")
    return {"ave": toy_bundle(root / "ave", "ave"), "c10": make_clip(root / "c10.mp4", 10, bright={3}),
            "c25": make_clip(root / "c25.mp4", 25, bright={20}), "root": root}


def one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def tree(root: Path) -> list:
    return sorted((str(p.relative_to(root)), p.stat().st_size if p.is_file() else -1) for p in root.rglob("*"))


# ------------------------------------------------------------------------------------------- checked before any work

@pytest.mark.parametrize("flag, where, needle", [
    ("--json", "/proc/caeav-out.json", "cannot write"),
    ("--json", "{dir}", "is a directory"),
    ("--json", "{file}/out.json", "is a file"),
    ("--plot", "/proc/caeav-out.png", "cannot write"),
    ("--overlay", "/proc/caeav-out.mp4", "cannot write"),
    ("--overlay", "{dir}/out.gif", "give a video file name"),
    ("--masks", "{file}", "is a file"),
])
def test_unwritable_outputs_fail_before_the_bundle_is_even_opened(tmp_path, capsys, flag, where, needle):
    (tmp_path / "d").mkdir()
    (tmp_path / "f.txt").write_text("keep\n")
    before = tree(tmp_path)
    path = where.format(dir=tmp_path / "d", file=tmp_path / "f.txt")
    code = main(["infer", str(tmp_path / "clip.mp4"), "--bundle", str(tmp_path / "no-bundle"), flag, path])
    line = one_line(capsys.readouterr().err)
    assert code == 2 and f"{flag} " in line and needle in line, line  # not the missing bundle: checked first
    assert tree(tmp_path) == before


# ------------------------------------------------------------------------------------------- written as it goes

def test_a_failure_at_the_end_keeps_every_result_in_the_partial_file(toys, tmp_path, capsys, monkeypatch):
    import caeav.runtime.results as results

    out = tmp_path / "r.json"
    assert main(["infer", str(toys["c10"]), str(toys["c25"]), "--bundle", str(toys["ave"]), "--json", str(out),
                 "-q"]) == 0
    good = json.loads(out.read_text())
    assert not partial_path(out).exists()  # removed once the JSON holds everything
    out.unlink()

    def disk_full(path, data, indent=2):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(results, "write_json_atomic", disk_full)
    code = main(["infer", str(toys["c10"]), str(toys["c25"]), "--bundle", str(toys["ave"]), "--json", str(out),
                 "-q"])
    line = one_line(capsys.readouterr().err)
    assert code == 2 and "No space left on device" in line and str(partial_path(out)) in line, line
    header, videos, failures = read_partial(partial_path(out))
    assert header["schema"] == "caeav.infer-partial/1" and header["bundle"]["task"] == "ave" and failures == []
    assert videos == good["videos"] and not out.exists()


def _folder_of_long_clips(root: Path, count: int) -> Path:
    folder = root / "many"
    folder.mkdir()
    clip = make_clip(root / "long.mp4", 120, bright=set(range(50, 60)), fps=1)
    for i in range(count):
        os.symlink(clip, folder / f"v{i:03d}.mp4")
    return folder


@pytest.mark.parametrize("signum, status, name", [
    (signal.SIGINT, 130, "SIGINT"), pytest.param(signal.SIGTERM, 143, "SIGTERM", marks=pytest.mark.slow)])
def test_interrupted_folder_run_writes_what_it_finished(toys, tmp_path, signum, status, name):
    folder = _folder_of_long_clips(tmp_path, 60)
    out = tmp_path / "r.json"
    proc = subprocess.Popen([sys.executable, "-c", ENTRY, "infer", str(folder), "--bundle", str(toys["ave"]),
                             "--json", str(out), "-q", "--workers", "1"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    partial = partial_path(out)
    deadline = time.monotonic() + 120
    while not (partial.is_file() and len(partial.read_text().splitlines()) >= 2):  # header + the first video
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-2000:]
        time.sleep(0.02)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == status, err
    assert one_line(err) == f"caeav: interrupted by {name}; stopped"
    doc = json.loads(out.read_text())
    names = [Path(v["path"]).name for v in doc["videos"]]
    assert doc["interrupted"] is True and 1 <= len(names) < 60 and names == [f"v{i:03d}.mp4" for i in range(len(names))]
    assert all(v["seconds"] == 120 for v in doc["videos"]) and not partial.exists()


# ------------------------------------------------------------------------------------------- truncated files

def truncated_copy(src: Path, dst: Path, keep: float = 0.5) -> Path:
    """`src` remuxed with its index at the front (faststart), then cut to `keep` of its bytes: the header still
    claims the full duration."""
    whole = dst.with_suffix(".whole.mp4")
    with av.open(str(src)) as inp, av.open(str(whole), "w", options={"movflags": "faststart"}) as outp:
        streams = {s.index: outp.add_stream_from_template(s) for s in inp.streams}
        for packet in inp.demux():
            if packet.dts is not None:
                packet.stream = streams[packet.stream.index]
                outp.mux(packet)
    data = whole.read_bytes()
    dst.write_bytes(data[: int(len(data) * keep)])
    return dst


def last_decodable_second(path: Path) -> float:
    """End of the last video frame PyAV can decode from `path` (an independent look at where the data stops)."""
    end = 0.0
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        try:
            for frame in c.decode(stream):
                end = float(frame.time) + 1.0 / float(stream.average_rate)
        except av.FFmpegError:
            pass
    return end


@pytest.mark.parametrize("seconds", [10, 40])
def test_truncated_mp4_reports_what_it_really_decodes(toys, tmp_path, capsys, seconds):
    from caeav.media import probe

    full = make_clip(tmp_path / "full.mp4", seconds, bright=set(range(0, seconds, 2)), loud=set(range(seconds)))
    cut = truncated_copy(full, tmp_path / "cut.mp4")
    assert probe(cut).duration == pytest.approx(seconds, abs=0.2)  # what the header claims
    real = last_decodable_second(cut)
    assert 1 < real < 0.8 * seconds, real
    out = tmp_path / "r.json"
    assert main(["infer", str(cut), "--bundle", str(toys["ave"]), "--json", str(out), "-q"]) == 0
    (video,) = json.loads(out.read_text())["videos"]
    assert video["duration"] == pytest.approx(real, abs=0.6), (video["duration"], real)
    assert video["seconds"] == len(video["per_second"]) == timeline_seconds(video["duration"])
    assert video["windows"][-1]["end"] == video["seconds"] or video["seconds"] < 10
    assert any("truncated" in w and f"header says {seconds:.2f} s" in w for w in video["warnings"]), video["warnings"]
