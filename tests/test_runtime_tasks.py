"""The task-agnostic runtime: the adapter registry, bundles whose graphs do not fit their task, task-only options,
one encoder run per window with one head call per query, per-frame tensors through the engine, the figure and the
bench through the adapters. Toy bundles (tests/runtime_bundles.py) keep every case to about a second."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from caeav.cli.main import main
from caeav.errors import BundleError
from caeav.runtime import Bundle, InferOptions, Pipeline
from caeav.runtime import tasks
from caeav.runtime.plot import GAP, LANE, LEFT, SPEC_H, THUMB_H, WIDTH, log_mel
from caeav.runtime.tasks.base import TaskAdapter
from runtime_bundles import TOY_Q, TOY_T, toy_bundle
from test_runtime import make_clip

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def toys(tmp_path_factory):
    root = tmp_path_factory.mktemp("task-toys")
    return {t: toy_bundle(root / t, t) for t in ("ave", "avvp", "avs_s4", "toyqa")}


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("task-clips")
    return {"c10": make_clip(d / "c10.mp4", 10, bright={2, 3}, loud={5}),
            "c25": make_clip(d / "c25.mp4", 25, bright={12}, loud={20})}


def one_line(capsys, *argv) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return code, lines[0]


# ------------------------------------------------------------------------------------------- registry and checks

def test_every_exported_task_but_avqa_has_an_adapter_and_unknown_tasks_are_one_line():
    assert {"ave", "avvp", "avs_s4", "avs_ms3"} <= set(tasks.supported_tasks())
    assert tasks.adapter_for("avs_ms3") is tasks.adapter_for("avs_s4")
    with pytest.raises(BundleError, match="task 'nope' is not supported"):
        tasks.adapter_for("nope")


def test_pipeline_does_not_branch_on_the_task():
    source = (REPO / "runtime" / "pipeline.py").read_text()
    assert not re.search(r"""["'](ave|avvp|avqa|avs_s4|avs_ms3)["']""", source)


def _edited(src: Path, dst: Path, **changes) -> Path:
    shutil.copytree(src, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest.update(changes)
    (dst / "manifest.json").write_text(json.dumps(manifest))
    return dst


def test_a_manifest_task_that_does_not_fit_the_head_is_one_line(toys, clips, tmp_path, capsys):
    bad = _edited(toys["ave"], tmp_path / "avvp-on-ave", task="avvp")
    code, line = one_line(capsys, "infer", clips["c10"], "--bundle", bad, "-q")
    assert code == 2 and "says task 'avvp'" in line and "is_event, event, av_score" in line, line
    bad = _edited(toys["avs_s4"], tmp_path / "ave-on-avs", task="ave")
    code, line = one_line(capsys, "infer", clips["c10"], "--bundle", bad, "-q")
    assert code == 2 and "head graph outputs masks" in line, line
    bad = _edited(toys["ave"], tmp_path / "unknown", task="segmentation")
    code, line = one_line(capsys, "infer", clips["c10"], "--bundle", bad, "-q")
    assert code == 2 and "task 'segmentation' is not supported" in line


def test_a_head_input_nothing_computes_is_one_line(toys, clips, tmp_path, capsys):
    bad = tmp_path / "st"
    shutil.copytree(toys["avvp"], bad)
    manifest = json.loads((bad / "manifest.json").read_text())
    manifest["graphs"]["head"]["inputs"].append({"name": "st", "shape": ["batch", TOY_T, 512], "dtype": "float32"})
    (bad / "manifest.json").write_text(json.dumps(manifest))
    code, line = one_line(capsys, "infer", clips["c10"], "--bundle", bad, "-q")
    assert code == 2 and "also needs st" in line and "no st_stream graph" in line and "re-export" in line, line


@pytest.mark.parametrize("flag, value, family", [("--masks", "m", "AVS"), ("--overlay", "o.mp4", "AVS"),
                                                 ("--question", "Is it loud?", "AVQA")])
def test_task_only_options_on_another_task_are_one_line(toys, clips, tmp_path, capsys, flag, value, family):
    code, line = one_line(capsys, "infer", clips["c10"], "--bundle", toys["ave"], flag, tmp_path / value
                          if flag != "--question" else value, "-q")
    assert code == 2 and f"{flag} is for {family} bundles" in line and "an AVE bundle" in line, line
    assert not (tmp_path / "m").exists()


# ------------------------------------------------------------------------------------------- queries and the engine

class ToyQA(TaskAdapter):
    """A question-answering adapter for the toyqa bundle: a query is a string, its feed its length."""

    tasks, family, extra_inputs = ("toyqa",), "toy QA", ("question",)
    options, output_sets = ("questions",), (("answer",),)

    def queries(self, bundle, options, path):
        return list(options.questions), [f"{len(options.questions)} question(s)"]

    def head_feeds(self, bundle, query):
        return None if query == "skip" else {"question": np.full(TOY_Q, float(len(query)), np.float32)}

    def finish(self, bundle, video, outputs):
        return {"answers": [[None if o is None else o["answer"].tolist() for o in w] for w in outputs]}

    def table(self, result):
        return str(result.timeline["answers"])

    def bench_feeds(self, bundle):
        return {"question": np.ones((1, TOY_Q), np.float32)}

    def bench_labels(self, bundle, outputs):
        return outputs["answer"].argmax(-1)


def test_encoder_once_per_window_and_head_once_per_query(toys, clips, monkeypatch):
    monkeypatch.setitem(tasks._registry(), "toyqa", ToyQA())
    pipe = Pipeline(toys["toyqa"], InferOptions(engine="ort", questions=["a", "bbb", "skip"], batch=2))
    calls = {"encoder": [], "head": []}
    for name in calls:
        graph = pipe.model.graphs[name]
        run = graph.run
        monkeypatch.setattr(graph, "run", lambda feeds, run=run, name=name: calls[name].append(feeds) or run(feeds))
    report = pipe.run([clips["c10"], clips["c25"]])
    assert [len(r.windows) for r in report.results] == [1, 3]
    assert [f["frames"].shape[0] for f in calls["encoder"]] == [2, 2]  # 4 windows, batches of 2, each encoded once
    assert [f["question"].shape[0] for f in calls["head"]] == [2, 2, 2, 2]  # 4 windows x 2 asked questions
    for result, frames in zip(report.results, ({2, 3}, {12})):
        assert result.warnings[-1] == "3 question(s)"
        for w, (a, bbb, skip) in enumerate(result.timeline["answers"]):
            assert skip is None and np.allclose(np.subtract(bbb, a), 2.0)  # each query got its own feed
    c10 = report.results[0].timeline["answers"][0][0][0]  # 1 + mean of the window's frame means
    assert c10 == pytest.approx(1.0 + float(np.mean(pipe.decode(0, str(clips["c10"])).frames)), abs=1e-4)


def test_per_frame_tensors_are_taken_and_split_by_clip(toys):
    pipe = Pipeline(toys["avs_s4"], InferOptions(engine="ort"))
    model = pipe.model
    T = pipe.bundle.segments
    assert {"v", "a", "stage0", "masks"} <= model.per_frame
    frames = np.random.default_rng(0).normal(size=(5, T, 3, 16, 16)).astype(np.float32)
    caps, wave = np.zeros((5, 77, 8), np.float32), np.zeros((5, T, 32000), np.float32)
    feats = model.encode(frames, wave, caps, caps)
    per = model.items(model.head(model.take(feats, [2, 0, 2])), 3)
    assert per[0]["masks"].shape == (T, 1, 16, 16)
    np.testing.assert_allclose(per[1]["masks"][:, 0], 10 * frames[0].mean(axis=1), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(per[0]["masks"], per[2]["masks"])
    assert model.max_batch == 4  # 5 clips are run as 4 + 1
    whole = model.items(model.run(frames, wave, caps, caps), 5)
    np.testing.assert_array_equal(whole[2]["masks"], per[0]["masks"])
    np.testing.assert_allclose(whole[4]["masks"][:, 0], 10 * frames[4].mean(axis=1), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------- figure and bench

def test_log_mel_puts_a_tone_in_its_band():
    from caeav.model.frontend_tables import hz_to_mel, mel_to_hz

    t = np.arange(32000 * 2) / 32000
    mel = log_mel(np.sin(2 * np.pi * 1000 * t).astype(np.float32))
    centres = mel_to_hz(np.linspace(hz_to_mel(50.0), hz_to_mel(14000.0), 66))[1:-1]
    assert mel.shape[0] == 64 and 100 <= mel.shape[1] <= WIDTH
    assert abs(int(np.median(mel.argmax(axis=0))) - int(np.argmin(np.abs(centres - 1000)))) <= 1


@pytest.mark.parametrize("task", ["ave", "avvp"])
def test_figure_has_filmstrip_spectrogram_and_task_rows(toys, clips, tmp_path, capsys, task):
    png = tmp_path / "f.png"
    assert main(["infer", str(clips["c10"]), "--bundle", str(toys[task]), "--plot", str(png), "-q"]) == 0
    report = Pipeline(toys[task], InferOptions(engine="ort", plot=png)).run([clips["c10"]])
    rows = report.bundle.adapter.figure_rows(report.results[0], report.bundle)
    titles = [r.title for r in rows]
    if task == "avvp":
        assert any(t.startswith("audio: ") for t in titles) and any(t.startswith("visual: ") for t in titles)
    else:
        assert titles == ["audio-visual event", "confidence"]
    thumbs = report.results[0].figure["thumbs"]
    assert len(thumbs) == 10 and thumbs[2][1][..., 0].mean() > 200 and thumbs[0][1][..., 0].mean() < 40
    with Image.open(png) as img:
        assert img.width >= 1200 and img.height > 300
        pixels = np.asarray(img.convert("RGB"))
    top, left = GAP + LANE + 4 + LANE, LEFT + 2 * (thumbs[2][1].shape[1] + GAP)  # header, clip title; third frame
    np.testing.assert_array_equal(pixels[top:top + THUMB_H, left:left + thumbs[2][1].shape[1]], thumbs[2][1])
    spectrogram = pixels[top + THUMB_H + LANE:top + THUMB_H + LANE + SPEC_H, LEFT:WIDTH - 30]
    assert (spectrogram.min(axis=-1) < 250).mean() > 0.99  # coloured, not blank canvas


def test_bench_runs_avs_and_queries_through_the_adapter(toys, clips, monkeypatch):
    from caeav.runtime.bench import _agreement, run_bench

    monkeypatch.setitem(tasks._registry(), "toyqa", ToyQA())
    for task in ("avs_s4", "toyqa"):
        result = run_bench(toys[task], engines=["ort"], batches=[1, 2], repeats=1, warmup=0, clip=clips["c10"])
        ort = [r for r in result.rows if r.engine == "ort"]
        assert [r.status for r in ort] == ["ok", "ok"] and ort[1].clips_per_s > 0, result.rows
    bundle = Bundle.load(toys["avs_s4"])
    masks = np.zeros((bundle.segments, 1, 16, 16), np.float32) - 1
    flipped = masks.copy()
    flipped[0, 0, :4] = 1  # 64 of 5 x 256 pixels
    assert _agreement(bundle, {"masks": masks}, {"masks": flipped}) == pytest.approx(1 - 64 / 1280)
