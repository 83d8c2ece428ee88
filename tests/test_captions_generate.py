"""Caption generation (P Eq. 14, App. A) against a local OpenAI-compatible server on 127.0.0.1 (tests/caption_server.py):
request payloads, exactly-once captioning, bounded concurrency, retries, failures, and resume after a kill."""

import os
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from caption_server import MODEL, CaptionServer, decode_parts

from caeav.captions.cache import CaptionCache, file_sha256
from caeav.captions.client import ChatClient
from caeav.captions.generate import generate_captions, open_dataset_cache
from caeav.captions.prompts import PROMPT_VERSION, audio_request
from caeav.captions.sources import dataset_jobs
from caeav.cli.main import main
from caeav.data.synth import synth_dataset
from caeav.errors import CaptionError

FRAME = 64  # px of the frames sent (small: fast JPEG)
MODALITIES = ("visual", "audio")


@pytest.fixture(scope="module")
def ave_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("caption-gen") / "ave"
    synth_dataset("ave", root, seed=3, clips=2, media="video")  # 2 clips per split: 6 clips, 12 captions
    return root


@pytest.fixture(scope="module")
def jobs(ave_root):
    found, _ = dataset_jobs("ave", ave_root, frame_size=FRAME)
    assert len(found) == 6
    return found


def _client(srv, **kw) -> ChatClient:
    kw.setdefault("timeout", 10.0)
    kw.setdefault("retries", 3)
    return ChatClient(srv.url, backoff=0.01, max_backoff=0.05, seed=0, **kw)


def _keys(jobs) -> set:
    return {(j.clip_id, m) for j in jobs for m in MODALITIES}


def _cached(path) -> dict:
    with CaptionCache(path, readonly=True) as cache:
        return {(c.clip_id, c.modality): c for c in cache.captions()}


def _assert_texts(captions: dict, keys: set) -> None:
    assert set(captions) == keys
    for (clip, modality), c in captions.items():
        assert c.text.startswith(f"{clip} {modality}:"), c.text
        assert c.model == MODEL and c.prompt_version == PROMPT_VERSION
        if modality == "visual":
            assert "10 frames" in c.text
        else:
            assert c.text.endswith("10 s at 32000 Hz")


def test_every_clip_is_captioned_exactly_once_with_bounded_concurrency(jobs, tmp_path):
    path = tmp_path / "ave.sqlite"
    with CaptionServer() as srv, CaptionCache(path) as cache:
        srv.delay = 0.15  # answers overlap: the concurrency bound is exercised
        report = generate_captions(jobs, cache, _client(srv), concurrency=3)
        assert report.ok and report.model == MODEL
        assert (report.requested, report.generated, report.cached) == (12, 12, 0)
        assert srv.counts() == Counter({k: 1 for k in _keys(jobs)})  # one request per (clip, modality)
        assert srv.answers() == srv.counts()
        assert 2 <= srv.max_in_flight <= 3
        again = generate_captions(jobs, cache, _client(srv), concurrency=3)  # nothing missing: nothing asked
        assert (again.requested, again.cached, len(srv.requests)) == (0, 12, 12)
        for job in jobs[:2]:  # the runtime finds captions by the video's content hash too
            assert cache.resolve(file_sha256(job.video)) == job.clip_id
    _assert_texts(_cached(path), _keys(jobs))


def test_request_payload_carries_t_frames_in_order_and_the_audio_as_wav(jobs, tmp_path):
    job = jobs[0]
    raw = job.load()
    with CaptionServer() as srv, CaptionCache(tmp_path / "c.sqlite") as cache:
        assert generate_captions([job], cache, _client(srv), concurrency=1).ok
        visual, audio = srv.bodies[(job.clip_id, "visual")], srv.bodies[(job.clip_id, "audio")]
    vis, aud = decode_parts(visual), decode_parts(audio)
    T = raw.frames.shape[0]
    assert T == 10 and vis["kinds"] == ["image_url"] * T + ["text"]
    assert aud["kinds"] == ["input_audio", "text"]
    # frame k of the request is frame k of the clip (JPEG is lossy: match each sent frame to its nearest clip frame)
    clip_frames = raw.frames.astype(np.float32)
    for k, sent in enumerate(vis["frames"]):
        assert sent.shape == (FRAME, FRAME, 3)
        err = np.abs(clip_frames - sent.astype(np.float32)).mean(axis=(1, 2, 3))
        assert int(np.argmin(err)) == k and err[k] < 3.0, (k, err)
    assert len({f.tobytes() for f in vis["frames"]}) == T  # the frames differ, so the order check means something
    pcm, rate, channels, width = aud["audio"]
    assert (rate, channels, width) == (32000, 1, 2)
    expected = np.round(np.clip(raw.audio.reshape(-1), -1, 1) * 32767).astype(np.int16)
    np.testing.assert_array_equal(pcm, expected)  # the whole T-second track, lossless
    assert np.abs(expected).max() > 1000
    # same model and decoding settings for both modalities; prompts differ only in modality wording
    decoding = ("model", "temperature", "top_p", "max_tokens", "seed")
    assert {k: visual[k] for k in decoding} == {k: audio[k] for k in decoding}
    assert visual["model"] == MODEL and visual["temperature"] == 0.0
    assert "10 frames in temporal order" in vis["text"] and "audio track" in aud["text"]
    assert vis["text"].count("\n") == aud["text"].count("\n")


def test_transient_failures_and_timeouts_are_retried(jobs, tmp_path):
    a, b, c = (j.clip_id for j in jobs[:3])
    path = tmp_path / "r.sqlite"
    with CaptionServer() as srv, CaptionCache(path) as cache:
        srv.fail[(a, "visual")] = [500, 502]
        srv.fail[(b, "audio")] = [429]
        srv.sleep[(c, "visual")] = 1  # the first answer comes after the client gave up
        srv.sleep_s = 1.5
        report = generate_captions(jobs, cache, _client(srv, timeout=0.5), concurrency=2)
        assert report.ok, report.summary()
        counts = srv.counts()
        assert (counts[(a, "visual")], counts[(b, "audio")], counts[(c, "visual")]) == (3, 2, 2)
        assert srv.answers() == Counter({k: 1 for k in _keys(jobs)})  # still exactly one caption each
        attempts = {(x.clip_id, x.modality): x.params["attempts"] for x in cache.captions()}
        assert (attempts[(a, "visual")], attempts[(b, "audio")], attempts[(c, "visual")]) == (3, 2, 2)
        assert attempts[(a, "audio")] == 1
    _assert_texts(_cached(path), _keys(jobs))


def test_backoff_grows_exponentially_with_jitter_and_ends_in_caption_error():
    waits = []
    with CaptionServer() as srv:
        srv.fail[("x", "audio")] = [-1]
        client = ChatClient(srv.url, retries=4, backoff=1.0, max_backoff=4.0, sleep=waits.append, seed=1)
        body = audio_request(np.zeros(32000, np.float32), MODEL)
        with pytest.raises(CaptionError, match=r"no answer after 5 attempt\(s\).*HTTP 500"):
            client.complete(body, {"X-Caeav-Clip": "x", "X-Caeav-Modality": "audio"})
        assert srv.counts()[("x", "audio")] == 5
    assert len(waits) == 4
    for k, wait in enumerate(waits):
        d = min(4.0, 2.0 ** k)
        assert d / 2 <= wait <= d, (k, wait)


def test_exhausted_retries_fail_one_caption_and_the_cli_reports_it(ave_root, jobs, tmp_path, capsys):
    bad = (jobs[1].clip_id, "visual")
    cache = tmp_path / "cli.sqlite"
    argv = ["captions", "generate", "--task", "ave", "--root", str(ave_root), "--cache", str(cache), "-j", "2",
            "--frame-size", str(FRAME), "--retries", "2", "-q"]
    with CaptionServer() as srv:
        srv.fail[bad] = [-1]
        assert main(argv + ["--endpoint", srv.url]) == 2
        out, err = capsys.readouterr()
        assert "1 caption(s) failed" in err and len(err.strip().splitlines()) == 1
        assert f"{bad[0]} [visual]" in out and "no answer after 3 attempt(s)" in out
        assert srv.counts()[bad] == 3
        assert srv.answers() == Counter({k: 1 for k in _keys(jobs) - {bad}})  # the run went on with the others
        assert set(_cached(cache)) == _keys(jobs) - {bad}
        srv.fail.clear()
        before = len(srv.requests)
        assert main(argv + ["--endpoint", srv.url]) == 0
        assert srv.requests[before:] == [bad]  # the rerun asks for the missing caption only
    _assert_texts(_cached(cache), _keys(jobs))
    with pytest.raises(CaptionError, match="belongs to task 'ave'"):  # one cache per dataset
        open_dataset_cache(cache, "avvp")


def _count_rows(path: Path) -> int:
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
        try:
            return con.execute("SELECT count(*) FROM captions").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:  # not created yet
        return 0


def test_resume_after_a_kill_loses_and_duplicates_nothing(ave_root, jobs, tmp_path):
    cache = tmp_path / "killed.sqlite"
    argv = [sys.executable, "-m", "caeav.cli.main", "captions", "generate", "--task", "ave", "--root", str(ave_root),
            "--cache", str(cache), "-j", "1", "--frame-size", str(FRAME), "-q"]
    with CaptionServer() as srv:
        srv.delay = 0.25
        proc = subprocess.Popen(argv + ["--endpoint", srv.url], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 60
            while _count_rows(cache) < 3 and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            assert proc.poll() is None, proc.stderr.read().decode()
        finally:
            proc.kill()
            proc.wait()
            proc.stderr.close()
        kept = set(_cached(cache))
        assert 3 <= len(kept) < 12
        assert all(n == 1 for n in srv.counts().values())
    with CaptionServer() as srv:  # a fresh server: a request the killed run left in flight cannot be counted here
        assert main([str(a) for a in argv[3:]] + ["--endpoint", srv.url]) == 0
        assert srv.counts() == Counter({k: 1 for k in _keys(jobs) - kept})  # only the missing ones, once each
    _assert_texts(_cached(cache), _keys(jobs))
    con = sqlite3.connect(cache)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert con.execute("SELECT count(*) FROM captions").fetchone()[0] == 12
    con.close()
