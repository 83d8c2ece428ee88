"""MUSIC-AVQA question tokens: one definition for the training loader and `caeav infer` (numpy only, no torch).

Training (`template_tokens`, the authors' `dataloader_avst.py:41-69,231-250`): strip trailing spaces, split on single
spaces, drop the last character of the last token (the `?`, ASCII or full-width), replace each token containing `<`
by the next `templ_values` entry. `QuestionVocab.ids` then pads with `<pad>` at the end to 14 tokens and maps them
through the vocabulary; a longer question or a token outside the vocabulary is a DataError (the vocabulary is built
from the dataset's questions, so training never meets one).

Free text (`QuestionVocab.tokens` / `encode`, what a user passes to `--question`) gives the same tokens for every
question written the way MUSIC-AVQA writes them (checked on every filled-in question of avqa-val/test.json), and
accepts what people type:

1. words are runs of letters, digits and `_`; anything else (spaces, `?`, `？`, commas, quotes, hyphens) separates
   them: MUSIC-AVQA questions hold no punctuation but the final question mark, which training drops;
2. an instrument written in two words is joined when the joined word is in the vocabulary ("acoustic guitar" ->
   `acoustic_guitar`, "electric-bass" -> `electric_bass`);
3. case as in training: MUSIC-AVQA capitalises the first word only (How, Is, What, Which, Where, Are) and the
   vocabulary holds both "Is" and "is", so the first kept word is looked up capitalised and the others lower-cased,
   each falling back to the other form, then to the word as typed;
4. a word outside the vocabulary is dropped, with a warning. Training has no unknown-word token, and `<pad>` cannot
   stand in for one: the head's `question_pads=leading` rolls the trailing pads to the front, which assumes every pad
   is at the end;
5. at most 14 tokens: a longer question keeps its first 14, with a warning; a question with no known word gets a
   warning and all-pad ids (`QuestionVocab.known` tells the caller not to ask it).

The ids are padded as in training (`<pad>` at the end, to 14); the head graph itself moves the pads in front when
the model was trained with `question_pads=leading` (`caeav.model.heads.avqa.pads_first`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from caeav.errors import DataError

QUESTION_LENGTH = 14  # MUSIC-AVQA pads every question to 14 tokens
PAD = "<pad>"
_WORD = re.compile(r"\w+")


def template_tokens(template: str, templ_values: Sequence[str]) -> list[str]:
    """The filled question tokens (no padding), exactly as the authors' loader builds them (module doc)."""
    words = template.rstrip().split(" ")
    words[-1] = words[-1][:-1]
    values = iter(templ_values)
    out = []
    for w in words:
        if "<" in w:
            try:
                w = next(values)
            except StopIteration:
                raise DataError(f"question {template!r}: more placeholders than templ_values "
                                f"{list(templ_values)}") from None
        out.append(w)
    return out


def text_words(text: str) -> list[str]:
    """Free text -> its words (step 1 of the module doc): runs of letters, digits and `_`."""
    return _WORD.findall(text)


def _shown(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class QuestionVocab:
    """The question vocabulary (index = position, `<pad>` first) and the padded length."""

    words: tuple[str, ...]
    length: int = QUESTION_LENGTH
    pad: str = PAD
    _ix: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "_ix", {w: i for i, w in reversed(list(enumerate(self.words)))})
        if self.pad not in self._ix:
            raise DataError(f"the question vocabulary has no {self.pad} token")

    @property
    def pad_id(self) -> int:
        return self._ix[self.pad]

    # ---------------------------------------------------------------------------------------- training (strict)

    def ids(self, tokens: Sequence[str], what: str = "question") -> np.ndarray:
        """[length] int64 ids of `tokens`, `<pad>`-padded at the end; DataError for too many or unknown tokens."""
        tokens = list(tokens)
        if len(tokens) > self.length:
            raise DataError(f"{what} has {len(tokens)} tokens, more than {self.length}")
        unknown = [t for t in tokens if t not in self._ix]
        if unknown:
            raise DataError(f"{what}: token {unknown[0]!r} is not in the question vocabulary")
        return self._padded([self._ix[t] for t in tokens])

    def _padded(self, ids: list[int]) -> np.ndarray:
        return np.array(ids + [self.pad_id] * (self.length - len(ids)), dtype=np.int64)

    # ---------------------------------------------------------------------------------------- free text (lenient)

    def _lookup(self, word: str, first: bool) -> Optional[str]:
        """The vocabulary entry a typed word stands for (step 3), or None."""
        cased = (word.capitalize(), word.lower()) if first else (word.lower(), word.capitalize())
        return next((w for w in (*cased, word) if w in self._ix), None)

    def tokens(self, text: str) -> tuple[list[str], list[str]]:
        """(tokens, warnings) of a free-text question (module doc, steps 1-5); never raises."""
        words = text_words(text)
        out: list[str] = []
        unknown: list[str] = []
        i = 0
        while i < len(words):
            joined = f"{words[i]}_{words[i + 1]}".lower() if i + 1 < len(words) else None
            if joined in self._ix:
                out.append(joined)
                i += 2
                continue
            token = self._lookup(words[i], first=not out)
            if token is None:
                unknown.append(words[i])
            else:
                out.append(token)
            i += 1
        warnings = []
        if not words:
            warnings.append("the question is empty; not answered")
        elif not out:
            warnings.append(f"no word of {_shown(text)!r} is in the model's question vocabulary; not answered")
        elif unknown:
            warnings.append(f"not in the model's question vocabulary, left out: {', '.join(dict.fromkeys(unknown))}")
        if len(out) > self.length:
            warnings.append(f"{len(out)} words, the model reads at most {self.length}: kept the first {self.length} "
                            f"(dropped {' '.join(out[self.length:])!r})")
            out = out[: self.length]
        return out, warnings

    def encode(self, text: str) -> tuple[np.ndarray, list[str]]:
        """(ids int64 [length], warnings) of a free-text question; all pads when no word is known."""
        tokens, warnings = self.tokens(text)
        return self._padded([self._ix[t] for t in tokens]), warnings

    def known(self, ids: np.ndarray) -> bool:
        """True when the ids hold at least one word (a question worth asking)."""
        return bool((np.asarray(ids) != self.pad_id).any())
