"""The caption tokeniser of a bundle: open_clip's CLIP BPE vocabulary written as `text_tokenizer.json`.

`write_tokenizer_file(dir, tower)` reads the ranked merges of the vocabulary open_clip ships
(`bpe_simple_vocab_16e6.txt.gz`, the one `open_clip.tokenize` uses), checks that the ids they give fit the text
tower's embedding table, and writes them with the special tokens and the tower's context length in the format
`caeav.runtime.tokenizer` reads (`TOKENIZER_FORMAT`), atomically. The runtime then tokenises captions exactly as the
PyTorch side does, without torch or open_clip.
"""

from __future__ import annotations

import gzip
from pathlib import Path

from caeav.errors import ExportError
from caeav.files import write_json_atomic
from caeav.runtime.tokenizer import TOKENIZER_FILE, TOKENIZER_FORMAT

SPECIALS = ("<start_of_text>", "<end_of_text>")  # open_clip's SimpleTokenizer names (ids 49406, 49407)
MERGES = 49152 - 256 - 2  # ranked merges CLIP uses: the file's lines 1..48894 (line 0 is a version header)


def clip_merges() -> tuple[list[str], str]:
    """(ranked merges "left right", where they came from) of open_clip's bundled CLIP vocabulary."""
    import open_clip
    from open_clip.tokenizer import default_bpe

    path = Path(default_bpe())
    lines = gzip.open(path).read().decode("utf-8").split("\n")
    merges = [" ".join(line.split()) for line in lines[1:MERGES + 1]]
    if len(merges) != MERGES or any(len(m.split()) != 2 for m in merges):
        raise ExportError(f"{path}: not the CLIP BPE vocabulary ({len(merges)} merges, expected {MERGES})")
    return merges, f"open_clip {open_clip.__version__} {path.name}"


def write_tokenizer_file(directory: Path, tower) -> str:
    """Write `TOKENIZER_FILE` for the caption `tower` (a `caeav.model.text_tower.TextTower`) into `directory`;
    returns the file name (for the manifest's `files`)."""
    merges, source = clip_merges()
    vocab_size = 2 * 256 + len(merges) + len(SPECIALS)
    rows = int(tower.text.token_embedding.num_embeddings)
    if rows < vocab_size:
        raise ExportError(f"the caption tower embeds {rows} tokens, CLIP's tokeniser gives ids up to {vocab_size - 1}; "
                          f"set caption.vocab_size to at least {vocab_size}")
    write_json_atomic(Path(directory) / TOKENIZER_FILE, {
        "format": TOKENIZER_FORMAT, "source": source, "context_length": int(tower.context_length),
        "vocab_size": vocab_size, "specials": list(SPECIALS), "clean": "ftfy + html.unescape x2 + whitespace + lower",
        "merges": merges}, indent=0)
    return TOKENIZER_FILE
