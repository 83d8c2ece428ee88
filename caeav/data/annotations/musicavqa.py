"""MUSIC-AVQA questions and vocabularies (metrics-and-data.md §1.4).

`avqa-{val,test}.json` (the `json_update` lists the authors' scripts use; `avqa-train.json` is not bundled): a JSON list of
objects with `video_id` (str), `question_id` (int), `type` (a *string* holding a list [modality, kind]),
`question_content` (a template with `<Object>`, `<LR>`, `<FL>`, ... placeholders), `templ_values` (a string holding the
list of fill-ins), `question_deleted` and `anser` (sic, the answer).

Question encoding (`dataloader_avst.py:41-69,231-250`; one definition with the runtime's free-text tokeniser in
`caeav.data.questions`): strip trailing spaces, split on single spaces, drop the last character of the last token
(the `?`, ASCII or full-width), replace each token containing `<` by the next templ_values entry, pad with `<pad>` to
14 tokens, map tokens through the question vocabulary; the label is the answer's index.

Vocabularies: `ans_vocab.txt` (42 answers) is the label order. `ques_vocab.txt` holds 186 lines that are the same 93
tokens written twice (`<pad>` first); the vocabulary is the first occurrence of each token, 93 entries, which is the
first-appearance order the authors' loader builds (`word_to_ix` over the list it appends to).
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from caeav.errors import DataError
from caeav.metrics.avqa import AVQA_QUESTION_TYPES

from ..questions import PAD, QUESTION_LENGTH, QuestionVocab, template_tokens
from ._io import PathLike, read_lines, read_text, resolve_root

AVQA_MAX_QUESTION_LEN = QUESTION_LENGTH
AVQA_PAD = PAD
AVQA_SPLITS = ("train", "val", "test")
_KEYS = ("video_id", "question_id", "type", "question_content", "templ_values", "anser")
question_tokens = template_tokens  # the authors' rule, shared with the runtime (caeav.data.questions)


@dataclass(frozen=True)
class AVQAQuestion:
    """One question about one video."""

    video_id: str  # keys the media: frames/<video_id>/, audio_wave/<video_id>.npy
    question_id: int
    modality: str  # "Audio", "Visual" or "Audio-Visual"
    kind: str  # "Counting", "Comparative", "Location", "Existential" or "Temporal"
    template: str  # question_content, placeholders unfilled
    templ_values: tuple[str, ...]
    answer: str
    split: str

    @property
    def type(self) -> tuple[str, str]:
        """(modality, kind), as `caeav.metrics.avqa_accuracy` takes it."""
        return (self.modality, self.kind)

    def tokens(self) -> list[str]:
        return question_tokens(self.template, self.templ_values)

    @property
    def question(self) -> str:
        """The filled question text, e.g. "Is the violin in the video always playing"."""
        return " ".join(self.tokens())


@dataclass(frozen=True)
class AVQAVocab:
    """Question-token and answer vocabularies; index = position."""

    questions: tuple[str, ...]
    answers: tuple[str, ...]
    _answer_ix: dict = field(init=False, repr=False, compare=False)
    _question_vocab: QuestionVocab = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "_answer_ix", {a: i for i, a in reversed(list(enumerate(self.answers)))})
        object.__setattr__(self, "_question_vocab", QuestionVocab(self.questions, AVQA_MAX_QUESTION_LEN, AVQA_PAD))

    def question_vocab(self, max_len: int = AVQA_MAX_QUESTION_LEN) -> QuestionVocab:
        """The question vocabulary as `caeav.data.questions` encodes with it (training and runtime)."""
        qv = self._question_vocab
        return qv if max_len == qv.length else QuestionVocab(self.questions, max_len, AVQA_PAD)

    def encode_question(self, question: AVQAQuestion, max_len: int = AVQA_MAX_QUESTION_LEN) -> np.ndarray:
        """[max_len] int64 token indices, `<pad>`-padded at the end."""
        return self.question_vocab(max_len).ids(question.tokens(), f"question {question.question_id}")

    def answer_index(self, answer: str) -> int:
        if answer not in self._answer_ix:
            raise DataError(f"answer {answer!r} is not in the answer vocabulary")
        return self._answer_ix[answer]


def load_avqa_vocab(root: Optional[PathLike] = None) -> AVQAVocab:
    """Vocabularies from `ques_vocab.txt` (first occurrences, `<pad>` = 0) and `ans_vocab.txt` (file order)."""
    base = resolve_root(root, "avqa")
    words = list(dict.fromkeys(line.strip() for _, line in read_lines(base / "ques_vocab.txt")))
    if not words or words[0] != AVQA_PAD:
        raise DataError(f"{base / 'ques_vocab.txt'}: the first token must be {AVQA_PAD}")
    answers = [line.strip() for _, line in read_lines(base / "ans_vocab.txt")]
    if len(set(answers)) != len(answers):
        raise DataError(f"{base / 'ans_vocab.txt'}: an answer is listed twice")
    return AVQAVocab(tuple(words), tuple(answers))


def _string_list(value, path: Path, i: int, key: str) -> list[str]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            try:
                value = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                raise DataError(f"{path}: entry {i}: {key} {value!r} is not a list") from None
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise DataError(f"{path}: entry {i}: {key} must be a list of strings, got {value!r}")
    return list(value)


def parse_avqa_questions(path: PathLike, split: str) -> list[AVQAQuestion]:
    """Parse one `avqa-<split>.json` list into questions, in file order (= the official test loader order)."""
    path = Path(path)
    try:
        items = json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(items, list):
        raise DataError(f"{path}: expected a JSON list of questions")
    known = set(AVQA_QUESTION_TYPES)
    out = []
    for i, item in enumerate(items):
        missing = [k for k in _KEYS if not isinstance(item, dict) or k not in item]
        if missing:
            raise DataError(f"{path}: entry {i}: missing key {missing[0]!r}")
        qtype = tuple(_string_list(item["type"], path, i, "type"))
        if qtype not in known:
            raise DataError(f"{path}: entry {i}: unknown question type {list(qtype)}")
        values = tuple(_string_list(item["templ_values"], path, i, "templ_values"))
        template = str(item["question_content"])
        if sum("<" in w for w in template.rstrip().split(" ")) > len(values):
            raise DataError(f"{path}: entry {i}: more placeholders than templ_values in {template!r}")
        try:
            qid = int(item["question_id"])
        except (TypeError, ValueError):
            raise DataError(f"{path}: entry {i}: question_id {item['question_id']!r} is not an integer") from None
        answer = str(item["anser"])
        out.append(AVQAQuestion(str(item["video_id"]), qid, qtype[0], qtype[1], template, values, answer, split))
    return out


def load_avqa_questions(split: str, root: Optional[PathLike] = None) -> list[AVQAQuestion]:
    """Questions of `split` from `<root>/avqa-<split>.json` (bundled: val and test; train needs a root holding it)."""
    if split not in AVQA_SPLITS:
        raise DataError(f"unknown MUSIC-AVQA split {split!r}; known: {', '.join(AVQA_SPLITS)}")
    base = resolve_root(root, "avqa")
    path = base / f"avqa-{split}.json"
    if not path.is_file():
        hint = " (avqa-train.json is not bundled: pass a root that holds it)" if root is None else ""
        raise DataError(f"annotation file not found: {path}{hint}")
    return parse_avqa_questions(path, split)
