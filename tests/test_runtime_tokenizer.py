"""The runtime's torch-free CLIP tokeniser (caeav.runtime.tokenizer) against open_clip's `tokenize`, and the bundle's
`text_encoder` graph on those tokens against the PyTorch text tower (the fp32 parity bound of export/bundle.py)."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from tiny_caption_bundle import tiny_ave

open_clip = pytest.importorskip("open_clip")

SPECIAL = [
    "", " ", "\t\n\r ", "a", "A dog barks.", "  Hello,   WORLD!!  ", "it's we're they'll I'd you've I'm she's",
    "IT'S WE'RE", "&amp;lt;b&amp;gt; &quot;quoted&quot; &#39;x&#39; &nbsp;&copy;", "café naïve Ångström Straße",
    "日本語のテキスト", "😀🎉👍🏽 family 👨‍👩‍👧", "Привет, мир", "مرحبا بالعالم", "עברית", "ΕΛΛΗΝΙΚΆ",
    "<start_of_text> hi <end_of_text>", "<START_OF_TEXT>", "<|startoftext|>", "3.14159 1,000,000 ²³ ½ ١٢٣",
    "ſt K Å ﬁ", "Ã©tÃ© mojibake â€œquotesâ€\x9d", "\x00\x01 control \x7f", "a\u200bb\u00adc zero-width",
    "...!!!???---___***", "e-mail: someone@example.com, url: https://x.org/a?b=c&d=e", "word " * 100,
    "x" * 400, "supercalifragilisticexpialidocious " * 12, " ".join(str(i) for i in range(80)), "🎵" * 90,
    "A man plays a guitar while a dog barks in the background, and a car passes by on the wet street.",
]
PIECES = ["dog", "barks", "Guitar", "piano", "the", "a", "sound", "of", "water", "speech", "Man", "WOMAN", "engine",
          "ß", "é", "ñ", "ø", "中文", "音楽", "😀", "🚗", "—", "…", "«", "»", "“", "”", "'s", "'ll", "&amp;", "&lt;",
          "&#x27;", "  ", "\t", "\n", ".", ",", "!", "?", "(", ")", "[", "]", "-", "_", "/", "\\", "123", "7", "ǅ",
          "İ", "ﬀ", "Ⅻ", "①", "\u0301", "\u00a0", "\u3000", "<", ">", "|", "#", "@"]


def corpus(n: int = 400, seed: int = 0) -> list:
    """The special cases plus `n` random strings of words, punctuation, unicode, whitespace and entities, some of
    them longer than the 77-token context."""
    rng = random.Random(seed)
    out = list(SPECIAL)
    for i in range(n):
        count = rng.choice([1, 3, 8, 20, 60, 120])
        glue = rng.choice(["", " ", " ", "  "])
        out.append(glue.join(rng.choice(PIECES) for _ in range(count)))
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_ave(tmp_path_factory)


def test_tokenizer_equals_open_clip(tiny):
    from caeav.runtime import Bundle
    from caeav.runtime.tokenizer import TOKENIZER_FILE, ClipTokenizer

    bundle = Bundle.load(tiny["bundle"])
    manifest = json.loads((tiny["bundle"] / "manifest.json").read_text())
    assert TOKENIZER_FILE in manifest["files"]  # listed and checksummed like every bundle file
    tok = ClipTokenizer.from_bundle(bundle)
    texts = corpus()
    assert len(texts) > 400
    mine = tok(texts)
    ref = open_clip.tokenize(texts, context_length=tok.context_length).numpy()
    bad = [t for t, a, b in zip(texts, mine, ref) if not np.array_equal(a, b)]
    assert not bad, f"{len(bad)} strings differ, e.g. {bad[0]!r}"
    lengths = (ref != 0).sum(1)
    assert (lengths == tok.context_length).sum() > 50 and (ref[lengths == 77, -1] == tok.eot).all()  # truncation
    assert mine.dtype == np.int64 and tok.vocab_size == 49408


def test_bundle_text_encoder_equals_pytorch_tower(tiny):
    import torch

    from caeav.captions.encode import encoder_id
    from caeav.config import ModelConfig
    from caeav.export.bundle import TOLERANCES
    from caeav.export.source import text_tower
    from caeav.runtime import Bundle
    from caeav.runtime.caption_text import TextEncoder

    bundle = Bundle.load(tiny["bundle"])
    cfg = ModelConfig.from_dict(bundle.manifest["config"])
    tower = text_tower(cfg, load_weights=False)
    assert encoder_id(tower, cfg.caption) == bundle.manifest["text_encoder_id"]  # the tower the bundle was cut from
    enc = TextEncoder(bundle)
    texts = corpus(120, seed=1)
    tokens = enc.tokenizer(texts)
    got = np.concatenate([enc.run(tokens[i:i + 32]) for i in range(0, len(texts), 32)])
    with torch.no_grad():
        ref = tower(open_clip.tokenize(texts)).numpy()
    assert got.shape == ref.shape == (len(texts), 77, cfg.caption.text_dim)
    assert float(np.abs(got - ref).max()) <= TOLERANCES["fp32"]["max_abs"]
    assert np.array_equal(enc.encode(texts[:3]), got[:3].astype(np.float16).astype(np.float32))  # as the cache holds


def test_bundle_without_tokenizer_is_one_line(tiny, tmp_path):
    import shutil

    from caeav.errors import BundleError
    from caeav.runtime import Bundle
    from caeav.runtime.tokenizer import TOKENIZER_FILE, ClipTokenizer

    copy = tmp_path / "b"
    shutil.copytree(tiny["bundle"], copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["files"].pop(TOKENIZER_FILE)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="no caption tokeniser"):
        ClipTokenizer.from_bundle(Bundle.load(copy))
    (tmp_path / "t.json").write_text("{}")
    with pytest.raises(BundleError, match="not a caeav.clip-bpe/1 tokeniser file"):
        ClipTokenizer.from_file(tmp_path / "t.json")
