"""Reading cached caption features S_ori (P §III-C, after Eq. 14) for training and the runtime; torch-free.

    reader = CaptionFeatureReader("captions/ave.sqlite")        # the only encoder in the file, or encoder="..."
    item = reader.lookup("VWi2ENBuTbw")                         # a clip id ...
    item = reader.lookup_video("clip.mp4")                      # ... or a video file (found by its sha256)
    item.visual, item.audio                                     # float16 [77, D] each

A clip without a caption (unknown to the cache, or captioned in one modality only) gets the features of the empty
string, computed by the same encoder and stored under `EMPTY_CLIP_ID`; `fallbacks` counts those. A clip whose caption
exists but whose features are missing or stale (the text changed since `caeav captions encode` ran) is an error: the
features would not describe the caption.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from caeav.errors import CaptionError

from .cache import EMPTY_CLIP_ID, MODALITIES, PathLike, connect, file_sha256


@dataclass(frozen=True)
class ClipCaptionFeatures:
    """Caption features of one clip; `fallback[m]` is True where modality m got the empty-caption features."""

    clip_id: Optional[str]
    visual: np.ndarray  # float16 [tokens, dim]
    audio: np.ndarray
    fallback: tuple[bool, bool]


class CaptionFeatureReader:
    """Read-only view of a caption cache for one encoder; safe to use after fork (reconnects per process)."""

    def __init__(self, path: PathLike, encoder: Optional[str] = None):
        self.path = Path(path)
        self._pid = None
        self._con: Optional[sqlite3.Connection] = None
        self.fallbacks = 0
        self.encoder = encoder or self._only_encoder()
        empty = {m: self._row(EMPTY_CLIP_ID, m) for m in MODALITIES}
        if any(v is None for v in empty.values()):
            raise CaptionError(f"{self.path}: no empty-caption features for encoder {self.encoder!r} "
                               "(run `caeav captions encode` with that encoder)")
        self._empty = {m: v[0] for m, v in empty.items()}

    def __getstate__(self) -> dict:  # picklable for spawned DataLoader workers: each opens its own connection
        return {**self.__dict__, "_con": None, "_pid": None}

    def _db(self) -> sqlite3.Connection:
        if self._con is None or self._pid != os.getpid():
            self._con, self._pid = connect(self.path, readonly=True), os.getpid()
        return self._con

    def _only_encoder(self) -> str:
        try:
            found = [r[0] for r in self._db().execute("SELECT DISTINCT encoder FROM features ORDER BY encoder")]
        except sqlite3.DatabaseError as exc:
            raise CaptionError(f"{self.path} is not a caeav caption cache ({exc})") from None
        if len(found) != 1:
            what = "no caption features" if not found else f"features of several encoders ({', '.join(found)})"
            raise CaptionError(f"{self.path} holds {what}; pass the encoder id (or run `caeav captions encode`)")
        return found[0]

    def _row(self, clip_id: str, modality: str):
        row = self._db().execute("SELECT tokens, dim, data, text_sha256 FROM features WHERE clip_id=? AND "
                                 "modality=? AND encoder=?", (clip_id, modality, self.encoder)).fetchone()
        if row is None:
            return None
        return np.frombuffer(row[2], dtype="<f2").reshape(row[0], row[1]), row[3]

    def resolve(self, key: str) -> Optional[str]:
        """Clip id for a clip id or a video sha256; None when the cache does not know it."""
        db = self._db()
        if db.execute("SELECT 1 FROM clips WHERE clip_id=? UNION SELECT 1 FROM captions WHERE clip_id=?",
                      (key, key)).fetchone():
            return key
        row = db.execute("SELECT clip_id FROM clips WHERE video_sha256=? ORDER BY clip_id LIMIT 1",
                         (key.lower(),)).fetchone()
        return row[0] if row else None

    def _modality(self, clip_id: Optional[str], modality: str) -> tuple[np.ndarray, bool]:
        if clip_id is None:
            return self._empty[modality], True
        shas = {r[0] for r in self._db().execute("SELECT text_sha256 FROM captions WHERE clip_id=? AND modality=?",
                                                 (clip_id, modality))}
        if not shas:
            return self._empty[modality], True
        found = self._row(clip_id, modality)
        if found is None:
            raise CaptionError(f"clip {clip_id}: the {modality} caption has no features for encoder {self.encoder!r}; "
                               f"run `caeav captions encode --cache {self.path}`")
        if found[1] not in shas:
            raise CaptionError(f"clip {clip_id}: the {modality} features are stale (the caption changed); "
                               f"run `caeav captions encode --cache {self.path}`")
        return found[0], False

    def lookup(self, key: str) -> ClipCaptionFeatures:
        """Features of a clip given its id or its video's sha256 (unknown clips get the empty-caption features)."""
        clip_id = self.resolve(key)
        (vis, fb_v), (aud, fb_a) = (self._modality(clip_id, m) for m in MODALITIES)
        self.fallbacks += int(fb_v or fb_a)
        return ClipCaptionFeatures(clip_id, vis, aud, (fb_v, fb_a))

    def lookup_video(self, path: PathLike) -> ClipCaptionFeatures:
        """Features of the clip whose video file has the same bytes as `path`."""
        return self.lookup(file_sha256(path))

    def __call__(self, clip_id: str) -> dict:
        """The datasets' ``captions=`` hook: ``caption_visual`` / ``caption_audio`` float32 [tokens, dim] and
        ``caption_fallback`` bool [2] (visual, audio) for one item."""
        item = self.lookup(clip_id)
        return {"caption_visual": item.visual.astype(np.float32), "caption_audio": item.audio.astype(np.float32),
                "caption_fallback": np.array(item.fallback, dtype=bool)}

    def batch(self, keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Stacked float16 `[N, tokens, dim]` visual and audio features for `keys`."""
        items = [self.lookup(k) for k in keys]
        return np.stack([i.visual for i in items]), np.stack([i.audio for i in items])

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None
