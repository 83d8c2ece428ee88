"""The caption cache (SQLite, WAL) and its CLIP text features S_ori (P §III-C after Eq. 14): fresh-encoding parity on the
`tiny` random tower, staleness per caption, the empty-caption fallback, concurrent writers, JSONL, the torch-free reader
and the `caeav captions` commands."""

import json
import pickle
import sqlite3
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from caeav.captions.cache import EMPTY_CLIP_ID, CaptionCache, file_sha256
from caeav.captions.encode import build_encoder, encode_cache
from caeav.captions.jsonl import export_jsonl, import_jsonl
from caeav.captions.reader import CaptionFeatureReader
from caeav.cli.main import main
from caeav.config import load_config
from caeav.errors import CaptionError

TEXTS = {("a", "visual"): "a red square moves left", ("a", "audio"): "a dog barks twice",
         ("b", "visual"): "a violin on a table", ("b", "audio"): "a violin plays a slow melody",
         ("c", "visual"): "an empty street at night", ("c", "audio"): "wind and distant traffic",
         ("e", "visual"): "a person waves"}  # "e" has no audio caption; "d" (registered below) has none at all


@pytest.fixture(scope="module")
def cfg():
    return load_config("tiny", "ave").caption


@pytest.fixture(scope="module")
def encoder(cfg):
    return build_encoder(cfg)


def fresh_features(cfg, text: str) -> np.ndarray:
    """float32 [77, D] of `text` from a tower built from scratch (same seeded random tiny weights)."""
    from caeav.model.text_tower import encode_texts

    tower, _ = build_encoder(cfg)
    return encode_texts(tower, [text])[0].detach().numpy()


def make_cache(path, video=None) -> None:
    with CaptionCache(path) as cache:
        for (clip, modality), text in TEXTS.items():
            cache.put_caption(clip, modality, text, "test-omni", "v1", endpoint="http://x/v1",
                              params={"temperature": 0.0}, latency_s=0.1)
        cache.add_clips([("d", None, None)] + ([("a", file_sha256(video), video)] if video else []))


@pytest.fixture
def encoded(tmp_path, encoder, cfg):
    video = tmp_path / "a.mp4"
    video.write_bytes(b"not really a video, but bytes with a hash")
    path = tmp_path / "ave.sqlite"
    make_cache(path, video)
    with CaptionCache(path) as cache:
        report = encode_cache(cache, cfg, encoder=encoder)
    return path, video, report


def _feature_rows(path) -> dict:
    con = sqlite3.connect(path)
    rows = {(r[0], r[1]): (r[2], r[3], r[4]) for r in
            con.execute("SELECT clip_id, modality, data, text_sha256, created FROM features")}
    con.close()
    return rows


def test_cached_features_equal_a_fresh_encoding(encoded, cfg, encoder):
    path, video, report = encoded
    assert report.encoder == encoder[1] == build_encoder(cfg)[1]  # the seeded tiny tower is the same every build
    assert (report.encoded, report.stale, report.up_to_date) == (7, 0, 0)
    reader = CaptionFeatureReader(path)
    assert reader.encoder == encoder[1]
    item = reader.lookup("a")
    assert item.clip_id == "a" and item.fallback == (False, False)
    assert item.visual.dtype == np.float16 and item.visual.shape == (77, cfg.text_dim)
    for feats, key in ((item.visual, ("a", "visual")), (item.audio, ("a", "audio"))):
        np.testing.assert_allclose(feats.astype(np.float32), fresh_features(cfg, TEXTS[key]), rtol=2e-3, atol=2e-3)
    assert np.abs(item.visual.astype(np.float32) - item.audio.astype(np.float32)).max() > 0.1  # texts differ
    # the runtime finds a clip by the content hash of its video file as well
    assert reader.lookup(file_sha256(video)).clip_id == "a"
    np.testing.assert_array_equal(reader.lookup_video(video).audio, item.audio)
    visual, audio = reader.batch(["a", "b", "c"])
    assert visual.shape == audio.shape == (3, 77, cfg.text_dim)
    hook = reader("b")  # the datasets' captions= hook
    assert hook["caption_visual"].dtype == np.float32 and not hook["caption_fallback"].any()
    clone = pickle.loads(pickle.dumps(reader))  # spawned DataLoader workers get a copy and reconnect
    np.testing.assert_array_equal(clone.lookup("c").visual, reader.lookup("c").visual)
    with CaptionCache(path) as cache:  # a second run finds everything up to date
        again = encode_cache(cache, cfg, encoder=encoder)
    assert (again.encoded, again.up_to_date) == (0, 7)


def test_clip_without_caption_gets_the_empty_caption_features_and_is_counted(encoded, cfg):
    path, _, report = encoded
    assert report.without_caption == 2  # d (no caption), e (no audio caption)
    empty = fresh_features(cfg, "")
    reader = CaptionFeatureReader(path)
    d, e, unknown = reader.lookup("d"), reader.lookup("e"), reader.lookup("never-seen")
    assert (d.fallback, e.fallback, unknown.fallback) == ((True, True), (False, True), (True, True))
    assert unknown.clip_id is None
    for feats in (d.visual, d.audio, e.audio, unknown.visual):
        np.testing.assert_allclose(feats.astype(np.float32), empty, rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(e.visual.astype(np.float32), fresh_features(cfg, TEXTS[("e", "visual")]),
                               rtol=2e-3, atol=2e-3)
    assert reader.fallbacks == 3
    reader.lookup("a")
    assert reader.fallbacks == 3
    assert reader("d")["caption_fallback"].tolist() == [True, True]


def test_changing_one_caption_invalidates_only_its_features(encoded, cfg, encoder, tmp_path):
    path, _, _ = encoded
    before = _feature_rows(path)
    exported = tmp_path / "captions.jsonl"
    with CaptionCache(path) as cache:
        assert export_jsonl(cache, exported) == 7
        lines = [json.loads(line) for line in exported.read_text().splitlines()]
        for line in lines:  # the user edits one caption
            if (line["clip_id"], line["modality"]) == ("b", "audio"):
                line["text"] = "a cello plays loudly"
        exported.write_text("".join(json.dumps(line) + "\n" for line in lines))
        assert import_jsonl(cache, exported) == 7  # every line re-imported; six texts unchanged
    reader = CaptionFeatureReader(path)
    with pytest.raises(CaptionError, match="stale"):
        reader.lookup("b")
    assert reader.lookup("c").fallback == (False, False)
    with CaptionCache(path) as cache:
        report = encode_cache(cache, cfg, encoder=encoder)
    assert (report.encoded, report.stale, report.up_to_date) == (1, 1, 6)
    after = _feature_rows(path)
    assert set(after) == set(before)
    changed = {k for k in before if before[k] != after[k]}
    assert changed == {("b", "audio")}
    np.testing.assert_allclose(reader.lookup("b").audio.astype(np.float32), fresh_features(cfg, "a cello plays loudly"),
                               rtol=2e-3, atol=2e-3)
    # another encoder (other weights) never reuses these features
    other_cfg = load_config("tiny", "ave", ["caption.tower_layers=1"]).caption
    with CaptionCache(path) as cache:
        other = encode_cache(cache, other_cfg)
    assert other.encoder != encoder[1] and other.encoded == 7
    with pytest.raises(CaptionError, match="several encoders"):
        CaptionFeatureReader(path)
    assert CaptionFeatureReader(path, encoder=other.encoder).lookup("a").fallback == (False, False)


WRITER = textwrap.dedent("""
    import os, sys, time, numpy as np
    from caeav.captions.cache import CaptionCache
    path, tag, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with CaptionCache(path) as cache:
        open(path + "." + tag, "w").close()  # a barrier: start writing when both processes are ready
        deadline = time.time() + 30
        while not all(os.path.exists(path + "." + t) for t in "pq") and time.time() < deadline:
            time.sleep(0.001)
        start = time.time()
        for i in range(n):  # one transaction per row, competing with the other process
            clip = f"{tag}{i:04d}"
            cache.put_caption(clip, "visual", f"caption {clip}", "m", "v1")
            cache.put_features([(clip, "visual", "enc", "sha", np.full((77, 8), i, np.float32))])
        print(start, time.time())
""")


def test_two_concurrent_writer_processes_lose_no_rows(tmp_path):
    path = tmp_path / "shared.sqlite"
    CaptionCache(path).close()
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), tag, "150"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
             for tag in ("p", "q")]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err.decode() for _, err in outs]
    spans = [tuple(map(float, out.split())) for out, _ in outs]
    assert max(s[0] for s in spans) < min(s[1] for s in spans)  # the two writers really overlapped
    with CaptionCache(path, readonly=True) as cache:
        clips = cache.clip_ids()
        assert len(clips) == 300 and len(cache.captions()) == 300
        assert clips == sorted([f"p{i:04d}" for i in range(150)] + [f"q{i:04d}" for i in range(150)])
        feats, _ = cache.features("q0149", "visual", "enc")
        assert feats.shape == (77, 8) and float(feats[0, 0]) == 149.0
    con = sqlite3.connect(path)
    assert con.execute("SELECT count(*) FROM features").fetchone()[0] == 300
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()


def test_reader_imports_no_torch(encoded):
    path, video, _ = encoded
    code = textwrap.dedent(f"""
        import sys
        import caeav.captions
        from caeav.captions.reader import CaptionFeatureReader
        reader = CaptionFeatureReader({str(path)!r})
        item = reader.lookup_video({str(video)!r})
        assert item.clip_id == "a" and item.visual.shape[0] == 77
        assert reader.lookup("d").fallback == (True, True)
        loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
        print("TORCH" if loaded else "NO-TORCH", loaded[:3])
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("NO-TORCH"), out.stdout


def test_jsonl_import_is_all_or_nothing_and_round_trips(tmp_path):
    src, dst = tmp_path / "src.sqlite", tmp_path / "dst.sqlite"
    make_cache(src)
    with CaptionCache(src) as cache:
        cache.add_clips([("b", "ab" * 32, None)])
        assert export_jsonl(cache, tmp_path / "all.jsonl") == 7
        assert export_jsonl(cache, tmp_path / "audio.jsonl", modality="audio") == 3
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"clip_id": "x", "modality": "visual", "text": "ok"}\n{"clip_id": "y", "modality": "smell", '
                   '"text": "no"}\n')
    with CaptionCache(dst) as cache:
        with pytest.raises(CaptionError, match=r"bad.jsonl:2: unknown modality"):
            import_jsonl(cache, bad)
        assert cache.captions() == []
        with pytest.raises(CaptionError, match="reserved"):
            cache.put_caption(EMPTY_CLIP_ID, "visual", "x", "m", "v")
        assert import_jsonl(cache, tmp_path / "all.jsonl") == 7
        got = {(c.clip_id, c.modality): c for c in cache.captions()}
        assert {k: c.text for k, c in got.items()} == TEXTS
        assert got[("a", "visual")].model == "test-omni" and got[("a", "visual")].params == {"temperature": 0.0}
        assert cache.resolve("ab" * 32) == "b"


def test_cli_encode_show_import_export(tmp_path, capsys):
    path = tmp_path / "cli.sqlite"
    lines = [{"clip_id": clip, "modality": mod, "text": text} for (clip, mod), text in TEXTS.items()]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert main(["captions", "import", str(tmp_path / "in.jsonl"), "--cache", str(path), "--model", "mine"]) == 0
    assert "imported 7 caption(s)" in capsys.readouterr().out
    assert main(["captions", "encode", "--cache", str(path), "--config", "tiny"]) == 0
    out = capsys.readouterr().out
    assert "7 caption feature(s) computed" in out and "1 clip(s) without a caption" in out
    assert main(["captions", "show", "e", "--cache", str(path)]) == 0
    out = capsys.readouterr().out
    assert "visual [mine, external, imported]: a person waves" in out and "audio: (no caption" in out
    assert main(["captions", "export", str(tmp_path / "out.jsonl"), "--cache", str(path), "--modality", "visual"]) == 0
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 4
    assert main(["captions", "show", "zzz", "--cache", str(path)]) == 2
    assert "knows no clip 'zzz'" in capsys.readouterr().err
    assert main(["captions", "encode", "--cache", str(tmp_path / "missing.sqlite"), "--config", "tiny"]) == 2
    assert "caption cache not found" in capsys.readouterr().err
