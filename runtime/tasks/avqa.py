"""AVQA (audio-visual question answering, MUSIC-AVQA): free-text questions about a clip, one of 42 answers each.

    caeav infer clip.mp4 --bundle B --question "Is the violin louder than the piano?"   # repeatable
    caeav infer clips/ --bundle B --questions questions.jsonl                          # or one question a line

Queries: one per question (`--question` texts first, then the `--questions` file's questions for this clip, see
`caeav.runtime.question`), tokenised by the training loader's own rule with the bundle's vocabulary. A question with
no known word is not asked (`head_feeds` -> None) and gets answer null; unknown words left out and a question cut to
14 tokens are warnings in its answer entry, never an error. Every head call takes the question's ids `[14]` int64.

Windows: the bundle samples like training (`sampling` = `linspace`: within a T = 10-s window, T frames from the
first to the last, and the window's T seconds of audio; MUSIC-AVQA's own clips are 60 s, of which training decodes
the first T seconds of a raw video). A video longer than T is covered by the pipeline's T-second windows
(`caeav.runtime.windows`, `--window-stride`); every question is asked of every window, and the video's answer
distribution is the mean over its windows of softmax(answer logits), each window weighted equally. With one window
(a clip of at most T seconds) the answer is exactly `avqa_predict`'s argmax of the logits, the rule
`caeav eval` applies.

JSON (`finish`): `answers[k] = {question, answer, index, confidence, top: [[answer, p], ...], tokens, warnings}`;
`confidence` is the answer's probability, `top` the five most probable answers, best first (ties: lower index
first), `tokens` the vocabulary words the model read; answer, index and confidence are null for a question that was
not asked.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from caeav.errors import CaeavError

from ..question import Question, QuestionEncoder, questions_for, read_questions_file
from ..rows import Ranking, Text
from .ave import video_title
from ..events import softmax
from .base import TaskAdapter

TOP_K = 5
BENCH_QUESTION = "How many instruments are sounding in the video?"  # what `caeav bench` asks (a MUSIC-AVQA question)


class AVQAAdapter(TaskAdapter):
    tasks = ("avqa",)
    family = "AVQA"
    extra_inputs = ("question",)
    options = ("questions", "questions_file")
    output_sets = (("answer",),)
    agreement = "answers"

    # -------------------------------------------------------------------------------------------- options

    def check_options(self, bundle, options) -> None:
        """The base checks, then: at least one question (one line naming the options), a readable questions file
        and a bundle that carries its question vocabulary, all before any video is decoded."""
        super().check_options(bundle, options)
        qfile = getattr(options, "questions_file", None)
        if not getattr(options, "questions", None) and not qfile:
            raise CaeavError(f"{bundle.path} is an AVQA bundle: ask something with --question TEXT (repeatable) or "
                             '--questions FILE (one question per line, or JSONL {"video": ..., "question": ...})')
        if qfile:
            read_questions_file(qfile)
        QuestionEncoder.from_bundle(bundle)

    # -------------------------------------------------------------------------------------------- inference

    def queries(self, bundle, options, path: str) -> tuple[list, list]:
        """One `Question` per question asked of this video (module doc)."""
        texts, warnings = questions_for(getattr(options, "questions", None) or [],
                                        getattr(options, "questions_file", None), path)
        encoder = QuestionEncoder.from_bundle(bundle)
        return [encoder.question(t) for t in texts], warnings

    def head_feeds(self, bundle, query: Question) -> Optional[dict]:
        return None if query.ids is None else {"question": query.ids}

    def finish(self, bundle, video, outputs: Sequence[Sequence[Optional[dict]]]) -> dict:
        """{"answers": [...]} for one video; `video.queries` are the Questions `queries` gave, in order."""
        questions = list(video.queries)
        names = answer_names(bundle, outputs)
        answers, probs = [], []
        for k, q in enumerate(questions):
            p = window_mean([w[k] for w in outputs])
            answers.append(answer_entry(q, p, names))
            probs.append(np.full(len(names), np.nan, np.float32) if p is None else p.astype(np.float32))
        arrays = {"probs": np.stack(probs) if probs else np.zeros((0, len(names)), np.float32)}
        return {"answers": answers, "arrays": arrays}

    # -------------------------------------------------------------------------------------------- rendering

    def table(self, result):
        from rich.table import Table

        table = Table(title=video_title(result), title_justify="left")
        for col, just in (("question", "left"), ("answer", "left"), ("p", "right"), ("top 5", "left")):
            table.add_column(col, justify=just)
        for a in result.timeline["answers"]:
            question = a["question"] + "".join(f"\n[dim]{w}[/dim]" for w in a["warnings"])
            if a["answer"] is None:
                table.add_row(question, "[dim]-[/dim]", "-", "")
                continue
            top = ", ".join(f"{name} {p:.2f}" for name, p in a["top"])
            table.add_row(question, f"[b]{a['answer']}[/b]", f"{a['confidence']:.2f}", top)
        if not result.timeline["answers"]:
            table.add_row("[dim]no question asked of this video[/dim]", "-", "-", "")
        return table

    def figure_rows(self, result, bundle) -> list:
        """Per question: the question (bold), the answer with its probability, the top 5 as bars."""
        rows = []
        for a in result.timeline["answers"]:
            rows.append(Text([f"Q: {a['question']}"], bold=True))
            if a["answer"] is None:
                rows.append(Text(["A: - (" + "; ".join(a["warnings"]) + ")"]))
                continue
            rows.append(Text([f"A: {a['answer']} ({a['confidence']:.2f})"] + [f"note: {w}" for w in a["warnings"]]))
            rows.append(Ranking("top 5", [(name, p) for name, p in a["top"]], mark=a["answer"]))
        return rows

    # -------------------------------------------------------------------------------------------- bench

    def bench_labels(self, bundle, outputs: dict) -> np.ndarray:
        from caeav.model.heads.postprocess import avqa_predict

        return avqa_predict(outputs)

    def bench_feeds(self, bundle) -> dict:
        """The ids of `BENCH_QUESTION`, batch axis of 1."""
        return {"question": QuestionEncoder.from_bundle(bundle).encode(BENCH_QUESTION)[0][None]}


def answer_names(bundle, outputs) -> list[str]:
    """The answer vocabulary (postprocess.json `answers`), cut or padded with `answer i` to the head's width."""
    names = [str(n) for n in (bundle.postprocess.get("answers") or [])]
    width = next((np.shape(o["answer"])[-1] for w in outputs for o in w if o is not None), len(names))
    return names[:width] + [f"answer {i}" for i in range(len(names), width)]


def window_mean(outputs: Sequence[Optional[dict]]) -> Optional[np.ndarray]:
    """Mean over the windows of softmax(answer) (float64 [A]); None when the question was not run."""
    if not outputs or any(o is None for o in outputs):
        return None
    return np.mean([softmax(np.asarray(o["answer"]).reshape(-1)) for o in outputs], axis=0)


def answer_entry(question: Question, probs: Optional[np.ndarray], names: Sequence[str]) -> dict:
    """One `answers[k]` entry (module doc)."""
    entry = {"question": question.text, "answer": None, "index": None, "confidence": None, "top": [],
             "tokens": list(question.tokens), "warnings": list(question.warnings)}
    if probs is None:
        return entry
    order = np.argsort(-probs, kind="stable")
    best = int(order[0])
    entry.update(answer=names[best], index=best, confidence=round(float(probs[best]), 4),
                 top=[[names[int(i)], round(float(probs[i]), 4)] for i in order[:TOP_K]])
    return entry


ADAPTER = AVQAAdapter()
