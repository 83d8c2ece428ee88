"""Questions for an AVQA bundle, torch-free: the bundle's tokeniser and the questions a run asks of each video.

    enc = QuestionEncoder.from_bundle(bundle)
    ids, warnings = enc.encode("Is the violin louder than the piano?")  # int64 [14], `<pad>` at the end
    q = enc.question("Is the violin louder than the piano?")       # Question(text, ids or None, tokens, warnings)
    texts = questions_for(["Is it indoor?"], "questions.jsonl", "clips/a.mp4")

The tokeniser is the training loader's (`caeav.data.questions`, one definition for both); its vocabulary, padded
length and pad token travel in the bundle's `postprocess.json` (`question_vocab`, `question_length`, `question_pad`,
checksummed in the manifest like every bundle file), so the runtime reads the ids the model was trained on.

Questions file (`--questions FILE`), either
* plain text: one question per line, asked of every video (blank lines and lines starting with `#` are skipped);
* JSONL (the first non-blank line starts with `{`): one `{"video": ..., "question": ...}` object per line. `video` is
  matched to a clip by its full path (as given, or resolved from the working directory or the file's folder), its
  file name or its stem; a record without `video` is asked of every video.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from caeav.data.questions import PAD, QUESTION_LENGTH, QuestionVocab
from caeav.errors import BundleError, CaeavError

PathLike = Union[str, os.PathLike]


@dataclass
class Question:
    """One question asked of one video (a query of the AVQA adapter)."""

    text: str
    ids: Optional[np.ndarray]  # int64 [L]; None: no known word, the head is not run for it
    tokens: list = field(default_factory=list)  # the vocabulary words the model reads
    warnings: list = field(default_factory=list)


class QuestionEncoder:
    """Free text -> the head's `question` ids, with the bundle's vocabulary (module doc)."""

    def __init__(self, vocab: QuestionVocab):
        self.vocab = vocab

    @classmethod
    def from_bundle(cls, bundle) -> "QuestionEncoder":
        """The encoder of an AVQA bundle; BundleError (one line) when its postprocess.json has no vocabulary."""
        pp = bundle.postprocess or {}
        words = pp.get("question_vocab")
        if not isinstance(words, list) or not words or not all(isinstance(w, str) for w in words):
            raise BundleError(f"{bundle.path}: postprocess.json has no question vocabulary (question_vocab); "
                              "re-export the bundle with `caeav export`")
        try:
            return cls(QuestionVocab(tuple(words), int(pp.get("question_length", QUESTION_LENGTH)),
                                     str(pp.get("question_pad", PAD))))
        except (CaeavError, TypeError, ValueError) as exc:
            raise BundleError(f"{bundle.path}: postprocess.json: unusable question vocabulary ({exc})") from None

    def encode(self, text: str) -> tuple[np.ndarray, list[str]]:
        """(ids int64 [L] end-padded as in training, warnings); all pads when no word is known."""
        return self.vocab.encode(text)

    def question(self, text: str) -> Question:
        """The query the AVQA adapter asks: ids None when no word of `text` is known."""
        tokens, warnings = self.vocab.tokens(text)
        return Question(text, self.vocab.ids(tokens) if tokens else None, tokens, warnings)


# ------------------------------------------------------------------------------------------------ questions file


def read_questions_file(path: PathLike) -> list[tuple[Optional[str], str]]:
    """[(video or None, question)] from a plain or JSONL questions file (module doc); one-line CaeavError if bad."""
    p = Path(path)
    try:
        text = p.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise CaeavError(f"--questions: {p}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CaeavError(f"--questions: {p}: unreadable ({exc})") from None
    lines = [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1)]
    lines = [(n, line) for n, line in lines if line and not line.startswith("#")]
    if not lines:
        raise CaeavError(f"--questions: {p}: holds no question")
    if not lines[0][1].startswith("{"):
        return [(None, line) for _, line in lines]
    return [_record(p, n, line) for n, line in lines]


def _record(path: Path, n: int, line: str) -> tuple[Optional[str], str]:
    try:
        rec = json.loads(line)
    except json.JSONDecodeError as exc:
        raise CaeavError(f"--questions: {path}:{n}: not valid JSON ({exc.msg})") from None
    if not isinstance(rec, dict) or not isinstance(rec.get("question"), str):
        raise CaeavError(f'--questions: {path}:{n}: expected an object with a "question" string')
    video = rec.get("video")
    if video is not None and not isinstance(video, str):
        raise CaeavError(f'--questions: {path}:{n}: "video" must be a string (a path, file name or stem)')
    return video, rec["question"]


def video_matches(name: str, clip: PathLike, base: Optional[Path] = None) -> bool:
    """True when a record's `video` names `clip`: its full path (as given, or from the working directory or `base`),
    its file name or its stem."""
    c = Path(clip)
    if name in (str(clip), c.name, c.stem):
        return True
    target = c.resolve()
    return any((root / name).resolve() == target for root in (Path.cwd(), base) if root is not None)


def questions_for(asked: Sequence[str], questions_file: Optional[PathLike],
                  clip: PathLike) -> tuple[list[str], list[str]]:
    """(questions, warnings) for one video: the `--question` texts, then the file's questions for this clip."""
    texts = list(asked or [])
    if questions_file is None:
        return texts, []
    records = read_questions_file(questions_file)
    base = Path(questions_file).resolve().parent
    texts += [q for video, q in records if video is None or video_matches(video, clip, base)]
    warnings = [] if texts else [f"{clip}: {questions_file} asks nothing of this video (no record names it)"]
    return texts, warnings
