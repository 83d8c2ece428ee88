"""Cached caption features S_ori,v = E_clip(Cap_v), S_ori,a = E_clip(Cap_a) (P §III-C, after Eq. 14).

`encode_cache` runs the frozen CLIP text tower (`caeav.model.text_tower`: `[N, 77]` token ids → `[N, 77, D]` last hidden
states) over every cached caption whose features are missing or stale, and stores them as float16 `[77, D]`. A feature
row is stale when the sha256 of the caption text it was computed from differs from the current caption's, or when it
was made by another encoder: the encoder id names the tower and hashes its weights, so new weights (or another tiny
seed) never reuse old features.

The caption of a (clip, modality) is its newest cached caption, optionally restricted to one model / prompt version.
The features of the empty string go under `EMPTY_CLIP_ID`: the reader hands them to clips without a caption, and the
report counts those clips. This module imports torch; reading features (`caeav.captions.reader`) does not.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch

from caeav.config import CaptionConfig

from .cache import EMPTY_CLIP_ID, MODALITIES, CaptionCache, text_sha256

TINY_SEED = 0


@dataclass
class EncodeReport:
    encoder: str
    encoded: int = 0  # feature rows computed in this run (new + stale)
    stale: int = 0  # of which replaced rows whose caption text had changed
    up_to_date: int = 0
    without_caption: int = 0  # clips lacking a caption in at least one modality (they get the empty-caption features)

    def summary(self) -> str:
        return (f"encoder {self.encoder}: {self.encoded} caption feature(s) computed ({self.stale} stale), "
                f"{self.up_to_date} up to date; {self.without_caption} clip(s) without a caption in some modality "
                "use the empty-caption features")


def encoder_id(tower: torch.nn.Module, cfg: CaptionConfig) -> str:
    """`<tower>:<name>:ctx<L>:w<D>:<sha256 of the weights, 16 hex>`: changes whenever the features could."""
    digest = hashlib.sha256()
    for name, tensor in sorted(tower.state_dict().items()):
        data = tensor.detach().to("cpu", torch.float32).contiguous()
        digest.update(f"{name}:{tuple(data.shape)};".encode())
        digest.update(data.numpy().tobytes())
    name = cfg.open_clip_name if cfg.tower == "open_clip" else f"l{cfg.tower_layers}h{cfg.tower_heads}"
    return f"{cfg.tower}:{name}:ctx{cfg.context_length}:w{cfg.text_dim}:{digest.hexdigest()[:16]}"


def build_encoder(cfg: CaptionConfig, device: str = "cpu"):
    """(frozen text tower on `device`, encoder id). The random `tiny` tower is seeded, so every build is the same."""
    from caeav.model.text_tower import build_text_tower

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        tower = build_text_tower(cfg)
    return tower.to(device), encoder_id(tower, cfg)


@torch.no_grad()
def encode_texts_f16(tower, texts: list[str]) -> np.ndarray:
    """float16 `[N, 77, D]` features of `texts` (each distinct text encoded once)."""
    from caeav.model.text_tower import encode_texts

    unique = sorted(set(texts))
    feats = encode_texts(tower, unique).to("cpu", torch.float16).numpy()
    index = {t: i for i, t in enumerate(unique)}
    return feats[[index[t] for t in texts]]


def _selected(cache: CaptionCache, model: Optional[str], prompt_version: Optional[str]) -> dict:
    """{(clip_id, modality): text} of the newest caption per clip and modality (after the filters)."""
    chosen: dict = {}
    for c in cache.captions(model=model, prompt_version=prompt_version):  # newest first within (clip, modality)
        chosen.setdefault((c.clip_id, c.modality), c.text)
    return chosen


def encode_cache(cache: CaptionCache, cfg: CaptionConfig, device: str = "cpu", batch_size: int = 64,
                 model: Optional[str] = None, prompt_version: Optional[str] = None,
                 progress: Optional[Callable[[int, int], None]] = None, encoder=None) -> EncodeReport:
    """Compute the missing or stale features of `cache`; `encoder` = (tower, id) reuses an already built tower."""
    tower, enc = encoder if encoder is not None else build_encoder(cfg, device)
    report = EncodeReport(enc)
    have = cache.feature_hashes(enc)
    wanted = {(EMPTY_CLIP_ID, m): "" for m in MODALITIES}
    wanted.update(_selected(cache, model, prompt_version))
    clips = set(cache.clip_ids())
    report.without_caption = sum(any((c, m) not in wanted for m in MODALITIES) for c in clips)
    todo = []
    for key, text in sorted(wanted.items()):
        old = have.get(key)
        if old == text_sha256(text):
            report.up_to_date += key[0] != EMPTY_CLIP_ID
            continue
        report.stale += old is not None and key[0] != EMPTY_CLIP_ID
        todo.append((key, text))
    for start in range(0, len(todo), batch_size):
        chunk = todo[start: start + batch_size]
        feats = encode_texts_f16(tower, [text for _, text in chunk])
        cache.put_features((cid, mod, enc, text_sha256(text), f) for ((cid, mod), text), f in zip(chunk, feats))
        report.encoded += sum(cid != EMPTY_CLIP_ID for (cid, _), _ in chunk)
        if progress is not None:
            progress(min(start + batch_size, len(todo)), len(todo))
    return report
