"""AVQA in `caeav infer`: the task adapter (`caeav.runtime.tasks.avqa`) on synthetic head outputs, the question
vocabulary a tiny AVQA export writes into its bundle, and the whole command on that bundle.

One tiny AVQA bundle (random weights, exported through the CLI once per session) serves every test that needs
graphs; the adapter tests need none and take milliseconds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from caeav.errors import CaeavError
from caeav.runtime.bundle import Bundle
from caeav.runtime.question import QuestionEncoder
from caeav.runtime.rows import Ranking, Text
from caeav.runtime.tasks import adapter_for
from test_question_tokens import vocab_bundle

REPO = Path(__file__).resolve().parent.parent
AVQA = adapter_for("avqa")
QUESTIONS = ["Is the violin louder than the piano?", "How many instruments are sounding in the video?"]
TRIM = ["visual.depths=[1,1,1,1]", "audio.depths=[1,1,1,1]"]  # one block per stage: a third less export time


def options(questions=(), questions_file=None, **extra):
    return SimpleNamespace(questions=list(questions), questions_file=questions_file, masks=None, overlay=None, **extra)


@pytest.fixture
def bundle(tmp_path):
    return vocab_bundle(tmp_path)


def run_queries(bundle, questions, logits_per_window):
    """(result of `finish`, queries): every query gets the same answer logits in window w."""
    queries, warnings = AVQA.queries(bundle, options(questions), "clip.mp4")
    assert warnings == []
    outputs = [[{"answer": np.asarray(logits, np.float32)} if AVQA.head_feeds(bundle, q) is not None else None
                for q in queries] for logits in logits_per_window]
    return AVQA.finish(bundle, SimpleNamespace(queries=queries), outputs), queries


def test_queries_feed_the_head_the_training_ids(bundle):
    queries, _ = AVQA.queries(bundle, options(QUESTIONS + ["???"]), "clip.mp4")
    assert [q.text for q in queries] == QUESTIONS + ["???"]
    feeds = AVQA.head_feeds(bundle, queries[1])
    assert list(feeds) == ["question"] == list(AVQA.extra_inputs)
    assert feeds["question"].shape == (14,) and feeds["question"].dtype == np.int64
    ids, _ = QuestionEncoder.from_bundle(bundle).encode(QUESTIONS[1])
    assert feeds["question"].tolist() == ids.tolist()
    assert AVQA.head_feeds(bundle, queries[2]) is None  # no known word: not asked


def test_finish_answers_with_sorted_top5(bundle):
    logits = np.linspace(-2, 3, 42)[::-1].copy()  # answer 0 best, then 1, 2, ...
    logits[7] = 10.0  # "yes" wins
    result, _ = run_queries(bundle, QUESTIONS, [logits])
    names = bundle.postprocess["answers"]
    a = result["answers"][0]
    assert set(a) >= {"question", "answer", "confidence", "top", "warnings", "tokens"}
    assert a["question"] == QUESTIONS[0] and a["answer"] == names[7] == "yes" and a["index"] == 7
    assert [t[0] for t in a["top"]] == [names[i] for i in (7, 0, 1, 2, 3)]
    probs = [p for _, p in a["top"]]
    assert probs == sorted(probs, reverse=True) and a["confidence"] == probs[0]
    assert 0.99 < a["confidence"] < 1 and sum(probs) <= 1.0 + 1e-4
    full = result["arrays"]["probs"]
    assert full.shape == (2, 42) and np.allclose(full.sum(axis=1), 1.0, atol=1e-5)
    json.dumps({k: v for k, v in result.items() if k != "arrays"})  # the JSON entry is plain data


def test_windows_are_combined_by_the_mean_of_probabilities(bundle):
    a, b = np.zeros(42), np.zeros(42)
    a[3], b[5] = 4.0, 3.0  # window 1 is surer of answer 3 than window 2 of answer 5
    result, _ = run_queries(bundle, QUESTIONS[:1], [a, b])
    entry = result["answers"][0]
    pa, pb = np.exp(a) / np.exp(a).sum(), np.exp(b) / np.exp(b).sum()
    mean = (pa + pb) / 2
    assert entry["index"] == 3 and entry["confidence"] == round(float(mean[3]), 4)
    assert entry["top"][1] == [bundle.postprocess["answers"][5], round(float(mean[5]), 4)]


def test_ties_and_one_window_agree_with_avqa_predict(bundle):
    from caeav.model.heads.postprocess import avqa_predict

    logits = np.zeros(42, np.float32)
    logits[[4, 9]] = 2.0  # a tie goes to the lower index, as numpy / torch / ONNX ArgMax do
    result, _ = run_queries(bundle, QUESTIONS[:1], [logits])
    assert result["answers"][0]["index"] == int(avqa_predict({"answer": logits[None]})[0]) == 4
    assert AVQA.bench_labels(bundle, {"answer": np.stack([logits, -logits])}).tolist() == [4, 0]


def test_unasked_and_warned_questions_never_crash(bundle):
    long = "How many instruments are sounding in the video " * 2
    result, queries = run_queries(bundle, ["", "Is the theremin louder?", long], [np.zeros(42)])
    empty, unknown, cut = result["answers"]
    assert empty["answer"] is None and empty["confidence"] is None and empty["top"] == []
    assert "empty" in empty["warnings"][0]
    assert unknown["answer"] is not None and "theremin" in unknown["warnings"][0]
    assert cut["answer"] is not None and "at most 14" in cut["warnings"][0] and len(cut["tokens"]) == 14
    assert np.isnan(result["arrays"]["probs"][0]).all()


def test_rendering_table_and_figure_rows(bundle):
    from rich.console import Console

    logits = np.zeros(42)
    logits[7] = 5.0
    finished, _ = run_queries(bundle, QUESTIONS[:1] + ["zzz"], [logits])
    result = SimpleNamespace(path="/x/clip.mp4", duration=10.0, windows=[{"start": 0, "end": 10}],
                             timeline=finished)
    console = Console(width=160, record=True)
    console.print(AVQA.table(result))
    text = console.export_text()
    assert "clip.mp4" in text and "Is the violin louder than the piano?" in text and "yes" in text
    assert "not answered" in text
    rows = AVQA.figure_rows(result, bundle)
    assert isinstance(rows[0], Text) and rows[0].bold and isinstance(rows[2], Ranking)
    assert rows[2].mark == "yes" and len(rows[2].items) == 5
    assert isinstance(rows[-1], Text) and "not answered" in rows[-1].lines[0]


def test_check_options(bundle, tmp_path):
    with pytest.raises(CaeavError, match=r"--question TEXT.*--questions FILE") as err:
        AVQA.check_options(bundle, options())
    assert "\n" not in str(err.value)
    AVQA.check_options(bundle, options(QUESTIONS))
    with pytest.raises(CaeavError, match="no such file"):
        AVQA.check_options(bundle, options(questions_file=tmp_path / "missing.jsonl"))
    qfile = tmp_path / "q.txt"
    qfile.write_text("Is the violin louder than the piano?\n")
    AVQA.check_options(bundle, options(questions_file=qfile))  # --questions alone is enough
    ave = Bundle(tmp_path, {"task": "ave"})
    with pytest.raises(CaeavError, match="--question is for AVQA bundles"):
        adapter_for("ave").check_options(ave, options(QUESTIONS))
    with pytest.raises(CaeavError, match="--questions is for AVQA bundles"):
        adapter_for("ave").check_options(ave, options(questions_file=qfile))


def test_bench_feeds(bundle):
    feeds = AVQA.bench_feeds(bundle)
    assert feeds["question"].shape == (1, 14) and feeds["question"].dtype == np.int64
    assert 0 < (feeds["question"] != 0).sum() < 14


# ---------------------------------------------------------------------------------------------------------- bundle


@pytest.fixture(scope="session")
def tiny_avqa(tmp_path_factory):
    """The tiny AVQA model (random weights) exported through `caeav export`, with a 12-s clip (two windows)."""
    from caeav.cli.main import main
    from caeav.runtime.bench import synthetic_clip

    root = tmp_path_factory.mktemp("tiny-avqa")
    bundle = root / "bundle"
    assert main(["export", "--config", "tiny", "--random-weights", "--task", "avqa", "--precision", "fp32",
                 "--batch", "1:2:4", "--out", str(bundle), *TRIM]) == 0
    clip = synthetic_clip(root, 12)
    return {"bundle": bundle, "clip": clip, "root": root}


def test_export_writes_the_question_vocabulary(tiny_avqa):
    from caeav.data.annotations import load_avqa_vocab
    from caeav.export.manifest import verify_bundle

    bundle = tiny_avqa["bundle"]
    manifest = verify_bundle(bundle)  # postprocess.json is listed with its sha256 like every bundle file
    assert "postprocess.json" in manifest["files"]
    pp = json.loads((bundle / "postprocess.json").read_text())
    vocab = load_avqa_vocab()
    assert pp["question_vocab"] == list(vocab.questions) and pp["answers"] == list(vocab.answers)
    assert pp["question_length"] == 14 and pp["question_pad"] == "<pad>" and pp["question_pads"] == "leading"
    head = {i["name"]: i for i in manifest["graphs"]["head"]["inputs"]}
    assert head["question"]["dtype"] == "int64" and head["question"]["shape"][1:] == [14]
    assert manifest["config"]["task"]["head"]["vocab_size"] == len(pp["question_vocab"])
    b = Bundle.load(bundle, "avqa")  # the AVQA adapter accepts the bundle's graphs (check_bundle)
    assert b.postprocess == pp
    ids, warnings = QuestionEncoder.from_bundle(b).encode(QUESTIONS[0])
    assert warnings == [] and ids.tolist() == vocab.question_vocab().encode(QUESTIONS[0])[0].tolist()


# ---------------------------------------------------------------------------------------------------------- command


def _run_without_torch(code: str) -> subprocess.CompletedProcess:
    """`code` in a fresh interpreter where `import torch` raises ImportError."""
    prog = "import sys\nsys.modules['torch'] = None  # not importable\n" + textwrap.dedent(code)
    env = {**os.environ, "COLUMNS": "200"}  # the table unwrapped
    return subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, cwd=REPO, timeout=300, env=env)


def test_infer_answers_questions_without_torch(tiny_avqa, tmp_path):
    out, qfile = tmp_path / "a.json", tmp_path / "q.jsonl"
    qfile.write_text(json.dumps({"video": "bench-clip", "question": QUESTIONS[1]}) + "\n"
                     + json.dumps({"video": "other.mp4", "question": "Is it outdoor?"}) + "\n")
    proc = _run_without_torch(f"""
        from caeav.cli.main import main
        sys.exit(main(["infer", {str(tiny_avqa['clip'])!r}, "--bundle", {str(tiny_avqa['bundle'])!r}, "--engine",
                       "ort", "--question", {QUESTIONS[0]!r}, "--question", "zzz?", "--questions", {str(qfile)!r},
                       "--json", {str(out)!r}]))
    """)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(out.read_text())
    video = doc["videos"][0]
    assert doc["bundle"]["task"] == "avqa" and len(video["windows"]) == 2
    asked, unknown, from_file = video["answers"]
    answers = json.loads((tiny_avqa["bundle"] / "postprocess.json").read_text())["answers"]
    for a, question in ((asked, QUESTIONS[0]), (from_file, QUESTIONS[1])):
        assert a["question"] == question and a["answer"] in answers and a["warnings"] == []
        assert len(a["top"]) == 5 and a["top"][0] == [a["answer"], a["confidence"]]
    assert unknown["answer"] is None and "not answered" in unknown["warnings"][0]
    assert QUESTIONS[0] in proc.stdout and asked["answer"] in proc.stdout  # the table


def test_ort_answers_equal_pytorch(tiny_avqa, tmp_path):
    from caeav.cli.main import main

    answers = {}
    for engine in ("ort", "torch"):
        out = tmp_path / f"{engine}.json"
        args = ["infer", str(tiny_avqa["clip"]), "--bundle", str(tiny_avqa["bundle"]), "--engine", engine, "-q",
                "--json", str(out)]
        assert main(args + [a for q in QUESTIONS for a in ("--question", q)]) == 0
        answers[engine] = json.loads(out.read_text())["videos"][0]["answers"]
    assert [a["answer"] for a in answers["ort"]] == [a["answer"] for a in answers["torch"]]
    np.testing.assert_allclose([a["confidence"] for a in answers["ort"]],
                               [a["confidence"] for a in answers["torch"]], atol=2e-4)  # 4 decimals each


def test_no_question_is_one_line(tiny_avqa, capsys):
    from caeav.cli.main import main

    code = main(["infer", str(tiny_avqa["clip"]), "--bundle", str(tiny_avqa["bundle"]), "--engine", "ort"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--question" in err and "--questions" in err, err
