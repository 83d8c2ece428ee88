"""Faults of `caeav captions generate` (issue 15, items 1 and 5), against loopback servers (tests/caption_server.py):
a dead endpoint or a server that is not OpenAI-compatible is one line before any work; an endpoint that goes away
mid-run trips the circuit breaker (one line, the resume command, the cache kept); garbage and empty answers are
retried with the usual backoff; SIGINT/SIGTERM stop the run within 2 s without waiting for requests in flight."""

import shlex
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from caption_server import MODEL, CaptionServer, PlainServer

from caeav.captions.cache import CaptionCache
from caeav.captions.client import ChatClient
from caeav.captions.generate import generate_captions
from caeav.captions.prompts import audio_request
from caeav.captions.sources import dataset_jobs
from caeav.cli.main import main
from caeav.data.synth import synth_dataset

FRAME = 64
MODALITIES = ("visual", "audio")


@pytest.fixture(scope="module")
def ave_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("caption-faults") / "ave"
    synth_dataset("ave", root, seed=3, clips=2, media="video")  # 6 clips, 12 captions
    return root


@pytest.fixture(scope="module")
def keys(ave_root) -> set:
    jobs, _ = dataset_jobs("ave", ave_root, frame_size=FRAME)
    return {(j.clip_id, m) for j in jobs for m in MODALITIES}


def _argv(ave_root, cache, *extra):
    return ["captions", "generate", "--task", "ave", "--root", str(ave_root), "--cache", str(cache),
            "--frame-size", str(FRAME), "-q", *extra]


def _dead_url() -> str:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def _rows(path: Path) -> dict:
    with CaptionCache(path, readonly=True) as cache:
        return {(c.clip_id, c.modality): c.text for c in cache.captions()}


def _count_rows(path: Path) -> int:
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
        try:
            return con.execute("SELECT count(*) FROM captions").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:  # not created yet
        return 0


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("caeav: error: "), err
    return lines[0]


def test_a_dead_endpoint_is_one_line_before_any_work(ave_root, tmp_path, capsys):
    cache = tmp_path / "dead.sqlite"
    url = _dead_url()
    start = time.monotonic()
    assert main(_argv(ave_root, cache, "--model", "m", "--endpoint", url)) == 2
    elapsed = time.monotonic() - start
    line = _one_error_line(capsys.readouterr().err)
    assert f"caption endpoint {url} is unreachable" in line and "Connection refused" in line
    assert elapsed < 5.0, elapsed  # before: 6 attempts with backoff for the model list, then 6 per caption
    assert not cache.exists()  # nothing was started


@pytest.mark.parametrize("status", [200, 404])
def test_a_server_that_is_not_openai_compatible_is_one_line(ave_root, tmp_path, capsys, status):
    cache = tmp_path / "html.sqlite"
    with PlainServer(status) as srv:
        assert main(_argv(ave_root, cache, "--model", "m", "--endpoint", srv.url)) == 2
        hits = list(srv.hits)
    line = _one_error_line(capsys.readouterr().err)
    assert f"{srv.url} is not an OpenAI-compatible server" in line
    assert hits[0] == "GET /v1/models" and len(hits) <= 2  # the pre-flight (and, on 404, one empty probe)
    assert not cache.exists()


def test_garbage_and_empty_answers_are_retried_with_the_same_backoff(ave_root, tmp_path):
    waits = []
    with CaptionServer() as srv:
        srv.fail[("x", "audio")] = ["garbage", "empty", "garbage", "empty"]
        client = ChatClient(srv.url, retries=4, backoff=1.0, max_backoff=4.0, sleep=waits.append, seed=1)
        done = client.complete(audio_request(np.zeros(32000, np.float32), MODEL),
                               {"X-Caeav-Clip": "x", "X-Caeav-Modality": "audio"})
        assert done.attempts == 5 and done.text.startswith("x audio:")
    assert len(waits) == 4
    for k, wait in enumerate(waits):  # the envelope of every transient failure (test_captions_generate)
        d = min(4.0, 2.0 ** k)
        assert d / 2 <= wait <= d, (k, wait)

    jobs, _ = dataset_jobs("ave", ave_root, frame_size=FRAME)
    a, b = jobs[0].clip_id, jobs[1].clip_id
    with CaptionServer() as srv, CaptionCache(tmp_path / "g.sqlite") as cache:
        srv.fail[(a, "visual")] = ["garbage", "empty"]
        srv.fail[(b, "audio")] = ["empty"]
        client = ChatClient(srv.url, timeout=10, retries=3, backoff=0.01, max_backoff=0.05, seed=0)
        report = generate_captions(jobs, cache, client, concurrency=2)
        assert report.ok, report.summary()
        counts = srv.counts()
        assert (counts[(a, "visual")], counts[(b, "audio")]) == (3, 2)
        attempts = {(c.clip_id, c.modality): c.params["attempts"] for c in cache.captions()}
        assert (attempts[(a, "visual")], attempts[(b, "audio")]) == (3, 2)
        assert all(c.text for c in cache.captions())  # no empty caption stored


def test_an_endpoint_that_goes_away_trips_the_breaker_and_the_resume_command_finishes(ave_root, keys, tmp_path,
                                                                                       capsys):
    cache = tmp_path / "breaker.sqlite"
    with CaptionServer() as srv:
        srv.die_after = 3  # then every connection is refused
        start = time.monotonic()
        assert main(_argv(ave_root, cache, "-j", "2", "--backoff", "0.05", "--endpoint", srv.url)) == 2
        elapsed = time.monotonic() - start
        answered, asked = srv.answers(), len(srv.requests)
    out, err = capsys.readouterr()
    line = _one_error_line(err)
    assert "stopped: 5 connection failures in a row to" in line and "Connection refused" in line
    assert elapsed < 10.0, elapsed  # before: 50 failed requests of 6 attempts each
    assert "stopped early" in out
    kept = _rows(cache)
    assert set(kept) == set(answered) and len(kept) >= 3 and asked == len(answered)
    assert f"{len(kept)} new caption(s) kept in {cache}" in line
    words = shlex.split(line.split("resume with: ", 1)[1])
    assert words[:3] == ["caeav", "captions", "generate"] and "--backoff" in words
    port = int(srv.url.rsplit(":", 1)[1].split("/")[0])
    with CaptionServer(port=port) as again:  # the endpoint is back: the printed command finishes the run
        assert main(words[1:]) == 0
        assert again.counts() == Counter({k: 1 for k in keys - set(kept)})
    assert set(_rows(cache)) == keys


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_the_run_within_2_s_keeping_what_was_committed(ave_root, keys, tmp_path, sig, code):
    cache = tmp_path / "signal.sqlite"
    argv = [sys.executable, "-m", "caeav.cli.main", *_argv(ave_root, cache, "-j", "2", "--timeout", "120")]
    with CaptionServer() as srv:
        srv.hang_after = 2  # then every request hangs (a slow model): the run has requests in flight
        proc = subprocess.Popen(argv + ["--endpoint", srv.url], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 60
            while (_count_rows(cache) < 2 or srv.in_flight < 1) and proc.poll() is None \
                    and time.monotonic() < deadline:
                time.sleep(0.02)
            assert proc.poll() is None and srv.in_flight >= 1
            start = time.monotonic()
            proc.send_signal(sig)
            rc = proc.wait(timeout=30)
            elapsed = time.monotonic() - start
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            err = proc.stderr.read().decode()
            proc.stderr.close()
        answered = srv.answers()
    assert elapsed < 2.0, elapsed  # before: ~20 s, the thread pool waited for the requests in flight
    assert rc == code, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and "interrupted" in err
    kept = _rows(cache)  # the cache reopens with every committed row
    assert set(kept) == set(answered) and len(kept) == 2
    con = sqlite3.connect(cache)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()
    with CaptionServer() as srv:
        assert main(_argv(ave_root, cache, "--endpoint", srv.url)) == 0
        assert srv.counts() == Counter({k: 1 for k in keys - set(kept)})
