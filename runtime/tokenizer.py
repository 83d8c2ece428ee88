"""CLIP's byte-level BPE tokeniser without torch: caption text -> the token ids the bundle's `text_encoder` graph reads.

    tok = ClipTokenizer.from_bundle(bundle)          # the bundle's text_tokenizer.json (checksummed like every file)
    ids = tok(["a dog barks", ""])                   # int64 [2, context_length]

It reproduces `open_clip.tokenize` (what `caeav.model.text_tower.tokenize` and `caeav captions encode` use), which is
OpenAI's CLIP tokeniser:

1. cleaning: `ftfy.fix_text`, HTML entities unescaped twice, surrounding whitespace stripped, runs of whitespace
   collapsed to one space, lower-cased;
2. pre-tokenising with the pattern in `PATTERN` (the two special tokens, English contractions, runs of letters,
   single digits, runs of other non-space characters; case-insensitive as CLIP compiles it);
3. each piece as UTF-8 bytes, each byte shown as one printable character (`byte_alphabet`), the last one marked
   end-of-word (``</w>``), then merged by the ranked merges of the vocabulary file, lowest rank first;
4. start token + ids + end token, cut to `context_length` with the end token kept as the last id, zero-padded.

The vocabulary is not shipped with the runtime: `caeav export` writes it into the bundle (`TOKENIZER_FILE`, format
`TOKENIZER_FORMAT`: the ranked merges, the special tokens and the context length of the graph). The id of a token
follows from the merges: the 256 byte characters, the same with ``</w>``, one id per merge in rank order, then the
special tokens. Needs the `regex` and `ftfy` packages (the `runtime` extra).
"""

from __future__ import annotations

import html
import json
import threading
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from caeav.errors import BundleError, CaeavError

TOKENIZER_FILE = "text_tokenizer.json"
TOKENIZER_FORMAT = "caeav.clip-bpe/1"
END_OF_WORD = "</w>"
PATTERN = r"""{specials}|'s|'t|'re|'ve|'m|'ll|'d|[\p{{L}}]+|[\p{{N}}]|[^\s\p{{L}}\p{{N}}]+"""


def byte_alphabet() -> dict:
    """{byte value: character}: printable Latin-1 bytes stand for themselves, the other 68 bytes (controls, space,
    0x7F-0xA0, 0xAD) take the characters from U+0100 on, in byte order (CLIP's reversible byte mapping)."""
    keep = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    kept = set(keep)
    table = {b: chr(b) for b in keep}
    extra = 0x100
    for b in range(256):
        if b not in kept:
            table[b] = chr(extra)
            extra += 1
    return table


def clean_text(text: str) -> str:
    """Step 1 of the module docstring (CLIP's `lower` cleaning)."""
    try:
        import ftfy
    except ImportError:
        raise CaeavError("the caption tokeniser needs the `ftfy` package: pip install 'caeav[runtime]'") from None
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return " ".join(text.split()).lower()


class ClipTokenizer:
    """Tokeniser built from ranked merges (module docstring); thread-safe (the word cache is locked)."""

    def __init__(self, merges: Sequence[str], specials: Sequence[str] = ("<start_of_text>", "<end_of_text>"),
                 context_length: int = 77):
        try:
            import regex
        except ImportError:
            raise CaeavError("the caption tokeniser needs the `regex` package: pip install 'caeav[runtime]'") from None
        self.context_length = int(context_length)
        self._bytes = byte_alphabet()
        symbols = list(self._bytes.values())
        pairs = [tuple(m.split()) for m in merges]
        if any(len(p) != 2 for p in pairs):
            raise CaeavError("tokeniser merges must be 'left right' pairs")
        tokens = symbols + [s + END_OF_WORD for s in symbols] + ["".join(p) for p in pairs] + list(specials)
        self.ids = {t: i for i, t in enumerate(tokens)}
        self.vocab_size = len(tokens)
        self.rank = {p: i for i, p in enumerate(pairs)}
        self.sot, self.eot = self.ids[specials[0]], self.ids[specials[1]]
        self._specials = {s: self.ids[s] for s in specials}
        alternatives = "|".join(regex.escape(s) for s in specials)
        self._pattern = regex.compile(PATTERN.format(specials=alternatives), regex.IGNORECASE)
        self._words: dict = {}
        self._lock = threading.Lock()

    @classmethod
    def from_file(cls, path: Union[str, Path]) -> "ClipTokenizer":
        """A tokeniser file written by `caeav export`; BundleError (one line) if it is not one."""
        try:
            spec = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BundleError(f"{path}: unreadable tokeniser file ({exc})") from None
        if not isinstance(spec, dict) or spec.get("format") != TOKENIZER_FORMAT:
            raise BundleError(f"{path}: not a {TOKENIZER_FORMAT} tokeniser file; re-export the bundle")
        try:
            tok = cls(spec["merges"], spec["specials"], spec["context_length"])
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise BundleError(f"{path}: incomplete tokeniser file ({type(exc).__name__}: {exc})") from None
        if spec.get("vocab_size") not in (None, tok.vocab_size):
            raise BundleError(f"{path}: the merges give {tok.vocab_size} tokens, the file says {spec['vocab_size']}")
        return tok

    @classmethod
    def from_bundle(cls, bundle) -> "ClipTokenizer":
        """The tokeniser of a `caeav.runtime.bundle.Bundle` (its checksum verified); BundleError if it has none."""
        entry = (bundle.manifest.get("files") or {}).get(TOKENIZER_FILE)
        if not entry:
            raise BundleError(f"{bundle.path}: the bundle has no caption tokeniser ({TOKENIZER_FILE}); re-export it "
                              "with this caeav to caption clips at inference")
        return cls.from_file(bundle.verified(TOKENIZER_FILE, entry.get("sha256")))

    def _merge(self, piece: str) -> list:
        """BPE of one pre-tokenised piece (already in the byte alphabet) -> its vocabulary tokens."""
        with self._lock:
            done = self._words.get(piece)
        if done is not None:
            return done
        word = list(piece[:-1]) + [piece[-1] + END_OF_WORD]
        while len(word) > 1:
            ranked = [(self.rank.get((a, b)), k) for k, (a, b) in enumerate(zip(word, word[1:]))]
            ranked = [r for r in ranked if r[0] is not None]
            if not ranked:
                break
            best = min(ranked)[0]
            left, right = next((word[k], word[k + 1]) for r, k in ranked if r == best)
            merged, k = [], 0
            while k < len(word):
                if k + 1 < len(word) and word[k] == left and word[k + 1] == right:
                    merged.append(left + right)
                    k += 2
                else:
                    merged.append(word[k])
                    k += 1
            word = merged
        with self._lock:
            self._words[piece] = word
        return word

    def encode(self, text: str) -> list:
        """Token ids of `text` without the start/end tokens and without truncation."""
        out: list = []
        for piece in self._pattern.findall(clean_text(text)):
            if piece in self._specials:
                out.append(self._specials[piece])
                continue
            mapped = "".join(self._bytes[b] for b in piece.encode("utf-8"))
            out.extend(self.ids[t] for t in self._merge(mapped))
        return out

    def __call__(self, texts: Union[str, Sequence[str]], context_length: Optional[int] = None) -> np.ndarray:
        """int64 `[N, context_length]`: start + ids + end, truncated with the end token kept, zero-padded."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        length = int(context_length or self.context_length)
        out = np.zeros((len(texts), length), dtype=np.int64)
        for row, text in enumerate(texts):
            ids = [self.sot] + self.encode(text) + [self.eot]
            if len(ids) > length:
                ids = ids[:length - 1] + [self.eot]
            out[row, :len(ids)] = ids
        return out
