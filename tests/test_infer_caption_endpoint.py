"""`caeav infer --caption-endpoint` (issue 13) against the loopback OpenAI-compatible server of tests/caption_server.py:
an uncached clip is captioned (one visual + one audio request, the prompts of `caeav captions generate`), encoded by
the bundle's text tower, stored, and the next run asks nothing and gives the same outputs, all without torch; a dead
endpoint, HTTP 500 forever or garbage answers cost one warning and the affected clip's captions only; a run killed
while requests are in flight leaves a cache that opens and reads."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from caption_server import MODEL, CaptionServer
from tiny_caption_bundle import tiny_ave

from caeav.captions.cache import CaptionCache
from caeav.captions.reader import CaptionFeatureReader
from caeav.cli.main import main

REPO = Path(__file__).resolve().parents[1]
BLOCK_TORCH = """
import sys, importlib.abc
class _NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            sys.stderr.write("TORCH-IMPORTED " + name + "\\n")
            raise ImportError("torch is blocked in this test")
sys.meta_path.insert(0, _NoTorch())
"""


def _infer_without_torch(args: list, wait: bool = True):
    """`caeav infer ARGS` in a fresh interpreter where any import of torch fails (and says so on stderr)."""
    prog = BLOCK_TORCH + textwrap.dedent(f"""
        from caeav.cli.main import main
        sys.exit(main({["infer", *map(str, args)]!r}))
    """)
    cmd = [sys.executable, "-c", prog]
    env = {**os.environ, "COLUMNS": "200"}
    if not wait:
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300, env=env)


def _outputs(doc: dict) -> dict:
    """{clip stem: per-second outputs} of an infer JSON document."""
    return {Path(v["path"]).stem: v["per_second"] for v in doc["videos"]}


def _dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_ave(tmp_path_factory)


@pytest.fixture(scope="module")
def runs(tiny, tmp_path_factory):
    """The empty-caption run of all clips, and two runs of the first clip with an endpoint and a new cache."""
    d = tmp_path_factory.mktemp("caption-runs")
    videos, bundle = tiny["videos"], tiny["bundle"]
    assert main(["infer", *map(str, videos), "--bundle", str(bundle), "--engine", "ort", "-q", "--json",
                 str(d / "empty.json")]) == 0
    cache = d / "new" / "captions.sqlite"  # neither the file nor its folder exist yet
    out = {"empty": json.loads((d / "empty.json").read_text()), "cache": cache}
    with CaptionServer() as srv:
        for n in ("first", "second"):
            proc = _infer_without_torch([videos[0], "--bundle", bundle, "--engine", "ort", "--caption-endpoint",
                                         srv.url, "--captions", cache, "--json", d / f"{n}.json"])
            assert proc.returncode == 0, proc.stderr[-3000:]
            out[n] = {"doc": json.loads((d / f"{n}.json").read_text()), "proc": proc, "counts": srv.counts()}
        out["bodies"] = dict(srv.bodies)
        out["answered"] = list(srv.answered)
    return out


def test_uncached_clip_is_captioned_stored_and_reused_without_torch(tiny, runs):
    clip = tiny["videos"][0].stem
    first, second = runs["first"], runs["second"]
    assert first["counts"] == {(clip, "visual"): 1, (clip, "audio"): 1}  # one request per modality
    assert second["counts"] == first["counts"]  # the second run asked nothing
    for run in (first, second):
        assert "TORCH-IMPORTED" not in run["proc"].stderr
    kinds = {m: [p["type"] for p in runs["bodies"][(clip, m)]["messages"][-1]["content"]] for m in ("visual", "audio")}
    assert kinds["visual"] == ["image_url"] * 10 + ["text"] and kinds["audio"] == ["input_audio", "text"]
    v1, v2 = first["doc"]["videos"][0], second["doc"]["videos"][0]
    assert v1["captions"] == {"source": "endpoint", "clip_id": clip, "missing": [],
                              "sources": {"visual": "endpoint", "audio": "endpoint"}}
    assert v2["captions"]["sources"] == {"visual": "cache", "audio": "cache"} and v2["captions"]["source"] == "cache"
    empty = _outputs(runs["empty"])[clip]
    assert v1["per_second"] != empty  # the captions reach the model
    assert v2["per_second"] == v1["per_second"]  # cached features = the features used on the fly
    assert "captions: no captions" not in first["proc"].stdout and first["doc"]["notes"] == []
    with CaptionCache(runs["cache"], readonly=True) as cache:
        texts = {(c.clip_id, c.modality): c.text for c in cache.captions()}
        assert set(texts) == {(clip, "visual"), (clip, "audio")} and set(texts.values()) <= {
            t for t in _server_texts(runs)}
        assert {c.model for c in cache.captions()} == {MODEL}
    item = CaptionFeatureReader(runs["cache"]).lookup(clip)
    assert item.fallback == (False, False) and item.visual.shape == (77, 64)


def _server_texts(runs) -> set:
    from caption_server import caption_for, decode_parts

    return {caption_for(k[0], decode_parts(b)) for k, b in runs["bodies"].items()}


def test_same_requests_as_captions_generate(tiny, runs, tmp_path):
    clip = tiny["videos"][0].stem
    with CaptionServer() as srv:
        assert main(["captions", "generate", "--task", "ave", "--root", str(tiny["root"]), "--endpoint", srv.url,
                     "--cache", str(tmp_path / "gen.sqlite"), "-q"]) == 0
        for m in ("visual", "audio"):
            assert srv.bodies[(clip, m)] == runs["bodies"][(clip, m)]  # prompts, frames, audio, decoding settings


def test_empty_caption_run_says_so_in_the_table(tiny, capsys):
    assert main(["infer", str(tiny["videos"][0]), "--bundle", str(tiny["bundle"]), "--engine", "ort"]) == 0
    out = capsys.readouterr().out
    line = [x for x in out.splitlines() if "captions:" in x]
    assert len(line) == 1 and "README 'Captions at inference'" in line[0] and "--caption-endpoint" in line[0]
    assert "caeav captions generate" in line[0]


@pytest.mark.parametrize("fault", ["down", "500-forever", "garbage"])
def test_endpoint_faults_cost_one_warning(tiny, runs, tmp_path, capsys, fault):
    videos, bundle = tiny["videos"], tiny["bundle"]
    bad = videos[1].stem
    out = tmp_path / "o.json"
    with CaptionServer() as srv:
        if fault == "500-forever":
            srv.fail[(bad, "visual")] = [-1]
        elif fault == "garbage":
            srv.fail[(bad, "audio")] = ["garbage"] * 20
        url = _dead_url() if fault == "down" else srv.url
        t0 = time.monotonic()
        assert main(["infer", *map(str, videos), "--bundle", str(bundle), "--engine", "ort", "-q",
                     "--caption-endpoint", url, "--json", str(out)]) == 0
        elapsed = time.monotonic() - t0
    doc = json.loads(out.read_text())
    notes = [n for n in doc["notes"] if "caption" in n]
    assert len(notes) == 1 and "empty-caption features" in notes[0], doc["notes"]
    assert capsys.readouterr().err.count("warning:") == 1
    got, empty = _outputs(doc), _outputs(runs["empty"])
    sources = {Path(v["path"]).stem: v["captions"]["sources"] for v in doc["videos"]}
    assert len(doc["videos"]) == 3 and not doc["failures"]
    if fault == "down":
        assert got == empty and all(s == {"visual": "none", "audio": "none"} for s in sources.values())
        return
    failed = "visual" if fault == "500-forever" else "audio"
    assert sources[bad][failed] == "none" and list(sources[bad].values()).count("endpoint") == 1
    assert got[videos[0].stem] == _outputs(runs["first"]["doc"])[videos[0].stem]  # the other clips: their captions
    assert sources[videos[2].stem] == {"visual": "endpoint", "audio": "endpoint"}
    assert elapsed < 60


def test_killed_run_leaves_a_readable_cache(tiny, tmp_path):
    videos, bundle = tiny["videos"], tiny["bundle"]
    cache = tmp_path / "c.sqlite"
    with CaptionServer() as srv:
        srv.hang_after = 3  # the fourth request hangs: the run is killed with requests in flight
        proc = _infer_without_torch([*videos, "--bundle", bundle, "--engine", "ort", "-q", "--caption-endpoint",
                                     srv.url, "--captions", cache], wait=False)
        deadline = time.monotonic() + 120
        while not (len(srv.answered) >= 3 and srv.in_flight >= 1) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            time.sleep(0.05)
        assert srv.in_flight >= 1
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    con = sqlite3.connect(str(cache))
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()
    reader = CaptionFeatureReader(cache)
    with CaptionCache(cache) as store:
        kept = {(c.clip_id, c.modality) for c in store.captions()}
    assert 1 <= len(kept) <= 3
    for v in videos:  # every stored caption has its features (one transaction each): nothing half-written
        item = reader.lookup(v.stem)
        assert [m for m, fb in zip(("visual", "audio"), item.fallback) if not fb] == \
            [m for m in ("visual", "audio") if (v.stem, m) in kept]
    with CaptionServer() as srv:  # the rerun asks only for what is missing
        assert main(["infer", *map(str, videos), "--bundle", str(bundle), "--engine", "ort", "-q",
                     "--caption-endpoint", srv.url, "--captions", str(cache)]) == 0
        assert set(srv.counts()) == {(v.stem, m) for v in videos for m in ("visual", "audio")} - kept


def test_bench_reports_the_caption_cost_per_clip(tiny):
    """`caeav bench`'s preprocessing figures: the text encoder's ms for a clip's two captions, and with an endpoint
    the latency of both requests (asked once, nothing stored); without one, the endpoint figure is None."""
    from caeav.runtime.bench import caption_costs
    from caeav.runtime.bundle import Bundle

    bundle, video = Bundle.load(tiny["bundle"]), tiny["videos"][0]
    alone = caption_costs(bundle, video)
    assert alone["text_encoder_ms"] > 0 and alone["caption_endpoint_ms"] is None
    with CaptionServer() as srv:
        asked = caption_costs(bundle, video, srv.url)
        assert sorted(m for _, m in srv.requests) == ["audio", "visual"]
    assert asked["caption_endpoint_ms"] > 0
