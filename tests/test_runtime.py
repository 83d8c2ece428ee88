"""caeav.runtime on toy bundles (tests/runtime_bundles.py): windows, post-processing, bad inputs, batch runs, outputs.

The toy graphs make the expected labels known exactly: bright seconds are AVE events of TOY_CLASS, loud seconds are
AVVP audio events; everything runs through `caeav infer` (caeav.cli.main.main) as a user would call it.
"""

from __future__ import annotations

import json
import shutil
import wave
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from caeav.captions.cache import EMPTY_CLIP_ID, CaptionCache, text_sha256
from caeav.cli.main import main
from caeav.media.write import write_video
from caeav.runtime import Bundle, InferOptions, Pipeline
from caeav.runtime.events import ave_timeline, avvp_timeline
from caeav.runtime.windows import merge_per_second, plan_windows
from caeav.model.heads.postprocess import ave_predict
from caeav.model.heads.postprocess_avvp import avvp_predict_outputs
from runtime_bundles import TOY_CAPTION_CLASS, TOY_CLASS, TOY_DIM, sha, toy_bundle


def make_clip(path: Path, seconds: int, bright=(), loud=(), fps: int = 2, audio: bool = True, sr: int = 8000) -> Path:
    """A 32x32 clip: frames white during the `bright` seconds (else black), a tone during the `loud` seconds."""
    frames = [np.full((32, 32, 3), 250 if int(i / fps) in bright else 5, np.uint8) for i in range(seconds * fps)]
    samples = None
    if audio:
        t = np.arange(seconds * sr) / sr
        samples = (0.5 * np.sin(2 * np.pi * 440 * t) * np.isin(t.astype(int), list(loud))).astype(np.float32)[None]
    write_video(path, frames, fps=fps, audio=samples, sample_rate=sr)
    return path


@pytest.fixture(scope="module")
def toys(tmp_path_factory):
    root = tmp_path_factory.mktemp("toys")
    return {"ave": toy_bundle(root / "ave", "ave"), "avvp": toy_bundle(root / "avvp", "avvp"), "root": root}


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    return {
        "c10": make_clip(d / "c10.mp4", 10, bright={2, 3, 4}, loud={6, 7}),
        "c25": make_clip(d / "c25.mp4", 25, bright={3, 4, 5, 17, 18, 19, 20}, loud={8, 9, 10, 11, 12}),
        "one": make_clip(d / "one.mp4", 1, bright={0}),
        "long": make_clip(d / "long.mp4", 180, bright=set(range(95, 107)) | {179}, fps=1),
        "silent": make_clip(d / "silent.mp4", 4, bright={1}, audio=False),
        "dir": d,
    }


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = main(["infer", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def infer_json(tmp_path, capsys, *args) -> dict:
    out = tmp_path / "r.json"
    code, _, err = run_cli(capsys, *args, "--json", out, "-q")
    assert code == 0, err
    return json.loads(out.read_text())


def ave_labels(video: dict) -> list[int]:
    return [s["index"] for s in video["per_second"]]


def expected_ave(seconds: int, bright) -> list[int]:
    return [TOY_CLASS if t in bright else 28 for t in range(seconds)]


# ------------------------------------------------------------------------------------------------ windows and merging

def test_plan_windows_cover_every_second():
    assert plan_windows(10.0, 10) == ([0], 10)
    assert plan_windows(1.0, 10) == ([0], 1)
    assert plan_windows(25.0, 10) == ([0, 10, 15], 25)
    assert plan_windows(25.0, 10, 5) == ([0, 5, 10, 15], 25)
    assert plan_windows(180.2, 10)[0][-1] == 170 and len(plan_windows(180.2, 10)[0]) == 18
    assert plan_windows(10.3, 10) == ([0], 10)  # a trailing piece under half a second is not a second
    with pytest.raises(ValueError):
        plan_windows(30, 10, 11)


def test_merge_averages_overlaps_and_keeps_single_windows_exact():
    a, b = np.arange(10, dtype=np.float32) + 0.1, np.full(10, 100.0, np.float32)
    merged = merge_per_second([a, b], [0, 5], 15)
    assert merged[:5].tolist() == a[:5].tolist() and merged[10:].tolist() == b[5:].tolist()
    np.testing.assert_allclose(merged[5:10], (a[5:] + 100) / 2, rtol=1e-6)


def test_single_window_timeline_matches_the_model_rules():
    rng = np.random.default_rng(0)
    ave_out = {"is_event": rng.normal(size=(1, 10)).astype(np.float32),
               "event": rng.normal(size=(1, 28)).astype(np.float32)}
    tl = ave_timeline([{k: v[0] for k, v in ave_out.items()}], [0], 10, 10, [str(i) for i in range(28)])
    assert tl["arrays"]["labels"].tolist() == ave_predict(ave_out)[0].tolist()
    avvp_out = {"global_prob": rng.uniform(size=(1, 25)).astype(np.float32),
                "a_frame_prob": rng.uniform(size=(1, 10, 25)).astype(np.float32),
                "v_frame_prob": rng.uniform(size=(1, 10, 25)).astype(np.float32)}
    tl = avvp_timeline([{k: v[0] for k, v in avvp_out.items()}], [0], 10, 10, [str(i) for i in range(25)])
    ref = avvp_predict_outputs(avvp_out)
    for mine, theirs in (("audio", "audio"), ("visual", "visual"), ("audio_visual", "av")):
        assert tl["arrays"][mine].T.tolist() == ref[theirs][0].tolist()


# ------------------------------------------------------------------------------------------------ end to end (toy)

def test_ave_ten_second_clip(toys, clips, tmp_path, capsys):
    doc = infer_json(tmp_path, capsys, clips["c10"], "--bundle", toys["ave"], "--engine", "ort")
    assert doc["schema"] == "caeav.infer/2" and doc["bundle"]["task"] == "ave" and doc["failures"] == []
    assert doc["interrupted"] is False
    (video,) = doc["videos"]
    assert video["seconds"] == 10 and video["windows"] == [{"start": 0, "end": 10}]
    assert ave_labels(video) == expected_ave(10, {2, 3, 4})
    assert [(e["onset"], e["offset"], e["background"]) for e in video["events"]] == \
        [(0, 2, True), (2, 5, False), (5, 10, True)]
    assert video["captions"] == {"source": "none", "clip_id": None, "missing": [],
                                 "sources": {"visual": "none", "audio": "none"}}
    assert all(0.0 <= s["confidence"] <= 1.0 for s in video["per_second"])


@pytest.mark.parametrize("stride", [None, 4])
def test_long_video_is_windowed_and_merged(toys, clips, tmp_path, capsys, stride):
    extra = ["--window-stride", stride] if stride else []
    doc = infer_json(tmp_path, capsys, clips["c25"], "--bundle", toys["ave"], *extra)
    (video,) = doc["videos"]
    assert video["seconds"] == 25 and video["windows"][-1] == {"start": 15, "end": 25}
    assert len(video["windows"]) == (3 if stride is None else 5)
    assert ave_labels(video) == expected_ave(25, {3, 4, 5, 17, 18, 19, 20})


def test_three_minute_clip(toys, clips, tmp_path, capsys):
    doc = infer_json(tmp_path, capsys, clips["long"], "--bundle", toys["ave"])
    (video,) = doc["videos"]
    assert video["seconds"] == 180 and len(video["windows"]) == 18
    assert ave_labels(video) == expected_ave(180, set(range(95, 107)) | {179})


def test_one_second_clip_is_padded_and_reported_as_one_second(toys, clips, tmp_path, capsys):
    doc = infer_json(tmp_path, capsys, clips["one"], "--bundle", toys["ave"])
    (video,) = doc["videos"]
    assert video["seconds"] == 1 and ave_labels(video) == [TOY_CLASS]
    assert any("shorter than" in w for w in video["warnings"])


def test_avvp_events_with_onsets_and_offsets(toys, clips, tmp_path, capsys):
    doc = infer_json(tmp_path, capsys, clips["c25"], "--bundle", toys["avvp"])
    (video,) = doc["videos"]
    audio = {(e["onset"], e["offset"]) for e in video["events"]["audio"]}
    visual = {(e["onset"], e["offset"]) for e in video["events"]["visual"]}
    assert audio == {(8, 13)} and visual == {(3, 6), (17, 21)}
    assert video["events"]["audio_visual"] == []
    assert video["per_second"][9]["audio"] == [f"toy class {c}" for c in range(25)]
    assert video["per_second"][4]["audio"] == [] and len(video["per_second"][4]["visual"]) == 25
    assert len(video["video_labels"]) == 25


def test_caption_cache_by_clip_id_and_missing_caption_reported(toys, clips, tmp_path, capsys):
    cache = tmp_path / "caps.sqlite"
    with CaptionCache(cache) as c:
        c.add_clips([("c10", None, None)])
        c.put_caption("c10", "visual", "a dog", "m", "v1")
        c.put_features([("c10", "visual", "enc", text_sha256("a dog"), np.full((77, TOY_DIM), 0.01, np.float32)),
                        (EMPTY_CLIP_ID, "visual", "enc", text_sha256(""), np.zeros((77, TOY_DIM), np.float32)),
                        (EMPTY_CLIP_ID, "audio", "enc", text_sha256(""), np.zeros((77, TOY_DIM), np.float32))])
    doc = infer_json(tmp_path, capsys, clips["c10"], clips["c25"], "--bundle", toys["ave"], "--captions", cache)
    c10, c25 = doc["videos"]
    assert c10["captions"] == {"source": "cache", "clip_id": "c10", "missing": ["audio"],
                               "sources": {"visual": "cache", "audio": "none"}}
    assert {s["index"] for s in c10["per_second"]} == {TOY_CAPTION_CLASS, 28}  # the caption reached the graphs
    assert c25["captions"]["missing"] == ["visual", "audio"] and any("caption" in w for w in c25["warnings"])
    assert {s["index"] for s in c25["per_second"]} == {TOY_CLASS, 28}


def test_outputs_table_json_and_png(toys, clips, tmp_path, capsys):
    png, out = tmp_path / "t.png", tmp_path / "t.json"
    for task in ("ave", "avvp"):
        code, stdout, err = run_cli(capsys, clips["c25"], clips["one"], "--bundle", toys[task], "--plot", png,
                                    "--json", out)
        assert code == 0, err
        assert "c25.mp4" in stdout and "one.mp4" in stdout
        assert ("toy class 3" if task == "ave" else "audio") in stdout
        with Image.open(png) as img:
            assert img.format == "PNG" and img.width >= 1200 and img.height > 40
            packed = np.asarray(img.convert("RGB")).reshape(-1, 3).astype(np.int64) @ np.array([65536, 256, 1])
            assert len(np.unique(packed)) > 3  # more than a blank canvas
        assert len(json.loads(out.read_text())["videos"]) == 2


# ------------------------------------------------------------------------------------------------ bad inputs

def test_bad_files_each_one_line_and_nonzero(toys, clips, tmp_path, capsys):
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40)
    audio_only = tmp_path / "audio_only.wav"
    with wave.open(str(audio_only), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(8000)
        w.writeframes(np.zeros(16000, np.int16).tobytes())
    cases = {tmp_path / "missing.mp4": "no such file", corrupt: "corrupt.mp4", audio_only: "no video track",
             clips["silent"]: "no audio track"}
    for path, needle in cases.items():
        code, _, err = run_cli(capsys, path, "--bundle", toys["ave"])
        assert code != 0 and err.count("\n") == 1 and err.startswith("caeav: error:"), err
        assert needle in err and str(path.name) in err, err


def test_video_without_audio_runs_on_silence_when_allowed(toys, clips, tmp_path, capsys):
    doc = infer_json(tmp_path, capsys, clips["silent"], "--bundle", toys["avvp"], "--allow-missing-audio")
    (video,) = doc["videos"]
    assert video["events"]["audio"] == [] and {(e["onset"], e["offset"]) for e in video["events"]["visual"]} == {(1, 2)}
    assert any("no audio track" in w for w in video["warnings"])


def test_batch_run_continues_past_bad_files(toys, clips, tmp_path, capsys):
    corrupt = tmp_path / "bad.mp4"
    corrupt.write_bytes(b"not a video at all" * 100)
    out = tmp_path / "batch.json"
    code, _, err = run_cli(capsys, clips["c10"], tmp_path / "gone.mp4", corrupt, clips["c25"], "--bundle",
                           toys["ave"], "--json", out, "--batch", "3")
    assert code == 1 and err.count("\n") == 1 and "2 of 4 video(s) failed" in err
    doc = json.loads(out.read_text())
    assert [Path(v["path"]).name for v in doc["videos"]] == ["c10.mp4", "c25.mp4"]
    assert [Path(f["path"]).name for f in doc["failures"]] == ["gone.mp4", "bad.mp4"]
    assert ave_labels(doc["videos"][1]) == expected_ave(25, {3, 4, 5, 17, 18, 19, 20})


def test_folder_and_list_inputs(toys, clips, tmp_path, capsys):
    listing = tmp_path / "videos.txt"
    listing.write_text(f"# two clips\n{clips['c10']}\n{clips['one']}\n")
    doc = infer_json(tmp_path, capsys, listing, "--bundle", toys["ave"])
    assert [Path(v["path"]).name for v in doc["videos"]] == ["c10.mp4", "one.mp4"]
    folder = tmp_path / "folder"
    folder.mkdir()
    for name in ("c10", "one"):
        shutil.copy(clips[name], folder / f"{name}.mp4")
    (folder / "notes.md").write_text("not a video")
    doc = infer_json(tmp_path, capsys, folder, "--bundle", toys["ave"], "--workers", "1")
    assert sorted(Path(v["path"]).name for v in doc["videos"]) == ["c10.mp4", "one.mp4"]


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_bundle_for_another_task(toys, clips, capsys):
    code, _, err = run_cli(capsys, clips["c10"], "--bundle", toys["avvp"], "--task", "ave")
    assert code == 2 and err.count("\n") == 1 and "exported for task 'avvp', not 'ave'" in err


def test_bundle_failing_its_checksums(toys, clips, tmp_path, capsys):
    bad = _copy(toys["ave"], tmp_path / "tampered")
    data = bytearray((bad / "head.onnx").read_bytes())
    data[-5] ^= 0xFF
    (bad / "head.onnx").write_bytes(bytes(data))
    code, _, err = run_cli(capsys, clips["c10"], "--bundle", bad)
    assert code == 2 and err.count("\n") == 1 and "head.onnx fails its checksum" in err
    (bad / "manifest.json").write_text("{not json")
    code, _, err = run_cli(capsys, clips["c10"], "--bundle", bad)
    assert code == 2 and "unreadable manifest" in err
    code, _, err = run_cli(capsys, clips["c10"], "--bundle", tmp_path / "nowhere")
    assert code == 2 and "no such bundle directory" in err


def test_engine_built_for_another_gpu_or_tensorrt(toys, clips, tmp_path, capsys):
    b = _copy(toys["ave"], tmp_path / "engines")
    (b / "engines").mkdir()
    manifest = json.loads((b / "manifest.json").read_text())
    for graph in ("caption_projector", "encoder", "head"):
        f = b / "engines" / f"{graph}.fp32.sm87.trt10.3.0.engine"
        f.write_bytes(b"fake engine " + graph.encode())
        manifest["engines"][f"{graph}.fp32"] = {"file": f"engines/{f.name}", "sha256": sha(f),
                                               "compute_capability": "8.7", "tensorrt": "10.3.0"}
    (b / "manifest.json").write_text(json.dumps(manifest))
    code, _, err = run_cli(capsys, clips["c10"], "--bundle", b, "--engine", "trt")
    assert code == 2 and err.count("\n") == 1, err
    assert "was built for sm87 with TensorRT 10.3.0 and cannot run here" in err
    doc = infer_json(tmp_path, capsys, clips["c10"], "--bundle", b)  # auto: falls back to onnxruntime, says why
    assert doc["engine"]["name"] == "ort" and any("TensorRT engines not used" in n for n in doc["notes"])


def test_bad_options_are_one_line(toys, clips, capsys):
    for args, needle in (((("--engine", "tpu")), "unknown engine"), (("--precision", "int8"), "no int8 graphs"),
                         (("--window-stride", "0"), "--window-stride"), (("--window-stride", "11"), "at most"),
                         (("--captions", "/nope.sqlite"), "no such caption cache")):
        code, _, err = run_cli(capsys, clips["c10"], "--bundle", toys["ave"], *args)
        assert code == 2 and err.count("\n") == 1 and needle in err, (args, err)


def test_bundle_api(toys):
    b = Bundle.load(toys["avvp"])
    assert (b.task, b.segments, b.image_size, b.precisions) == ("avvp", 10, 16, ["fp32"])
    assert b.graph("encoder", "fp16").precision == "fp32"  # no fp16 variant: the fp32 graph
    assert b.empty_caption().shape == (77, TOY_DIM)
    report = Pipeline(b, InferOptions(engine="ort")).run([])
    assert report.results == [] and report.failures == []
