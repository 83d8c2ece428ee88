"""The caption cache: one SQLite file per dataset holding MLLM captions (P Eq. 14) and their CLIP text features.

Torch-free (sqlite3 + numpy): the runtime reads it. Layout (schema version 1):

* ``clips(clip_id PK, video_sha256, video_path)`` — the dataset's clips, so a caption can be found by clip id or by the
  sha256 of the video file (`resolve`).
* ``captions(clip_id, modality, model, prompt_version)`` → text, its sha256 and the generation metadata (endpoint,
  decoding parameters as JSON, created time, latency, source: generated / imported).
* ``features(clip_id, modality, encoder)`` → float16 ``[tokens, dim]`` little-endian blob plus the sha256 of the caption
  text it was computed from: features whose text hash no longer matches the caption, or made by another encoder id,
  are stale (`caeav.captions.encode` recomputes them).

The features of the empty string are stored under the reserved clip id `EMPTY_CLIP_ID`: a clip without a caption gets
them (see `caeav.captions.reader`). Clip ids starting with ``__`` are reserved.

Concurrency and crashes: WAL journal, ``synchronous=NORMAL``, a busy timeout, and every write is one
``BEGIN IMMEDIATE`` transaction, so two processes can write at once and a kill at any moment leaves either the whole
transaction or none of it. WAL needs a local file system (not NFS).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Optional, Union

import numpy as np

from caeav.errors import CaptionError
from caeav.files import sha256_file

MODALITIES = ("visual", "audio")
EMPTY_CLIP_ID = "__empty__"
SCHEMA_VERSION = "1"
BUSY_TIMEOUT_MS = 60_000
PathLike = Union[str, os.PathLike]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS clips (
    clip_id TEXT PRIMARY KEY, video_sha256 TEXT, video_path TEXT);
CREATE INDEX IF NOT EXISTS clips_by_sha ON clips (video_sha256);
CREATE TABLE IF NOT EXISTS captions (
    clip_id TEXT NOT NULL, modality TEXT NOT NULL CHECK (modality IN ('visual', 'audio')),
    model TEXT NOT NULL, prompt_version TEXT NOT NULL,
    text TEXT NOT NULL, text_sha256 TEXT NOT NULL,
    endpoint TEXT, params TEXT NOT NULL DEFAULT '{}', created REAL NOT NULL, latency_s REAL,
    source TEXT NOT NULL DEFAULT 'generated',
    PRIMARY KEY (clip_id, modality, model, prompt_version));
CREATE TABLE IF NOT EXISTS features (
    clip_id TEXT NOT NULL, modality TEXT NOT NULL CHECK (modality IN ('visual', 'audio')),
    encoder TEXT NOT NULL, text_sha256 TEXT NOT NULL,
    tokens INTEGER NOT NULL, dim INTEGER NOT NULL, data BLOB NOT NULL, created REAL NOT NULL,
    PRIMARY KEY (clip_id, modality, encoder));
"""
_CAPTION_COLS = "clip_id, modality, model, prompt_version, text, text_sha256, endpoint, params, created, latency_s, source"


def text_sha256(text: str) -> str:
    """The hash that ties features to the exact caption text they were computed from."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_sha256(path: PathLike, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes: the content key of a video (`CaptionCache.resolve` accepts it)."""
    try:
        return sha256_file(path, chunk)
    except OSError as exc:
        raise CaptionError(f"{os.fspath(path)}: cannot be read for hashing ({exc.strerror or exc})") from None


@dataclass(frozen=True)
class Caption:
    """One cached caption and how it was made."""

    clip_id: str
    modality: str
    model: str
    prompt_version: str
    text: str
    text_sha256: str = ""
    endpoint: Optional[str] = None
    params: dict = field(default_factory=dict)
    created: float = 0.0
    latency_s: Optional[float] = None
    source: str = "generated"


def _caption_from_row(row) -> Caption:
    return Caption(row[0], row[1], row[2], row[3], row[4], row[5], row[6], json.loads(row[7] or "{}"), row[8], row[9],
                   row[10])


_PUT_CAPTION = f"INSERT OR REPLACE INTO captions ({_CAPTION_COLS}) VALUES ({', '.join('?' * 11)})"
_PUT_FEATURES = "INSERT OR REPLACE INTO features VALUES (?, ?, ?, ?, ?, ?, ?, ?)"


def _caption_row(c: Caption) -> tuple:
    """The captions-table row of `c` (its text hash computed here)."""
    if not isinstance(c.text, str):
        raise CaptionError(f"caption of {c.clip_id}/{c.modality} is not a string")
    return (check_clip_id(c.clip_id), check_modality(c.modality), c.model, c.prompt_version, c.text,
            text_sha256(c.text), c.endpoint, json.dumps(c.params or {}, sort_keys=True), c.created or time.time(),
            c.latency_s, c.source)


def _feature_row(clip_id: str, modality: str, encoder: str, sha: str, array, now: float) -> tuple:
    """The features-table row: float16 little-endian `[tokens, dim]` blob."""
    arr = np.asarray(array)
    if arr.ndim != 2:
        raise CaptionError(f"features of {clip_id}/{modality} must be [tokens, dim], got shape {arr.shape}")
    blob = np.ascontiguousarray(arr, dtype="<f2").tobytes()
    return (clip_id, check_modality(modality), encoder, sha, arr.shape[0], arr.shape[1], blob, now)


def check_clip_id(clip_id: str) -> str:
    if not isinstance(clip_id, str) or not clip_id.strip():
        raise CaptionError(f"invalid clip id {clip_id!r}: must be a non-empty string")
    if clip_id.startswith("__"):
        raise CaptionError(f"clip id {clip_id!r} is reserved (ids starting with '__' are caeav's own)")
    return clip_id


def check_modality(modality: str) -> str:
    if modality not in MODALITIES:
        raise CaptionError(f"unknown modality {modality!r}; choose visual or audio")
    return modality


def connect(path: PathLike, readonly: bool = False) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit) with WAL, synchronous=NORMAL and a busy timeout."""
    path = Path(path)
    try:
        if readonly:
            if not path.is_file():
                raise CaptionError(f"caption cache not found: {path} (run `caeav captions generate` or import captions)")
            try:
                con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None,
                                      check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000)
                con.execute("SELECT count(*) FROM sqlite_master").fetchone()
            except sqlite3.OperationalError:  # read-only directory without the -shm file: read the file as it is
                con = sqlite3.connect(f"{path.resolve().as_uri()}?immutable=1", uri=True, isolation_level=None,
                                      check_same_thread=False)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            con = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False,
                                  timeout=BUSY_TIMEOUT_MS / 1000)
            con.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            mode = con.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise CaptionError(f"caption cache {path}: the file system does not support SQLite WAL mode")
            con.execute("PRAGMA synchronous=NORMAL")
        con.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        return con
    except sqlite3.DatabaseError as exc:
        raise CaptionError(f"caption cache {path} cannot be opened: {exc}") from None


class CaptionCache:
    """Read/write access to one caption cache file. Thread-safe (one lock around the connection)."""

    def __init__(self, path: PathLike, readonly: bool = False):
        self.path = Path(path)
        self.readonly = readonly
        self._lock = threading.RLock()
        self._con = connect(self.path, readonly)
        if not readonly:
            with self.transaction() as con:
                for statement in filter(str.strip, _SCHEMA.split(";")):  # executescript would COMMIT first
                    con.execute(statement)
                con.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
        self._check_schema()

    def _check_schema(self) -> None:
        try:
            row = self._con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        except sqlite3.DatabaseError as exc:
            raise CaptionError(f"{self.path} is not a caeav caption cache ({exc})") from None
        if row is None or row[0] != SCHEMA_VERSION:
            raise CaptionError(f"{self.path}: caption cache schema {row[0] if row else 'unknown'} is not supported "
                               f"(expected {SCHEMA_VERSION})")

    def close(self) -> None:
        with self._lock:
            self._con.close()

    def __enter__(self) -> "CaptionCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic write: BEGIN IMMEDIATE (waits for other writers) ... COMMIT, or ROLLBACK on any error."""
        if self.readonly:
            raise CaptionError(f"caption cache {self.path} is open read-only")
        with self._lock:
            try:
                self._con.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise CaptionError(f"caption cache {self.path} is busy or locked: {exc}") from None
            try:
                yield self._con
            except BaseException:
                if self._con.in_transaction:  # SQLite may already have rolled back (e.g. disk full)
                    self._con.execute("ROLLBACK")
                raise
            self._con.execute("COMMIT")

    def _query(self, sql: str, args: tuple = ()) -> list:
        with self._lock:
            return self._con.execute(sql, args).fetchall()

    # --- meta and clips ----------------------------------------------------------------------------------------
    def set_meta(self, key: str, value: str) -> None:
        with self.transaction() as con:
            con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, str(value)))

    def get_meta(self, key: str) -> Optional[str]:
        rows = self._query("SELECT value FROM meta WHERE key=?", (key,))
        return rows[0][0] if rows else None

    def add_clips(self, clips: Iterable[tuple]) -> int:
        """Register `(clip_id, video_sha256 or None, video_path or None)` rows (known values are kept)."""
        rows = [(check_clip_id(c[0]), c[1], None if c[2] is None else os.fspath(c[2])) for c in clips]
        with self.transaction() as con:
            con.executemany("INSERT INTO clips VALUES (?, ?, ?) ON CONFLICT (clip_id) DO UPDATE SET "
                            "video_sha256=coalesce(excluded.video_sha256, video_sha256), "
                            "video_path=coalesce(excluded.video_path, video_path)", rows)
        return len(rows)

    def clip_ids(self) -> list[str]:
        """Every clip the cache knows: registered clips and clips with a caption (sorted)."""
        rows = self._query("SELECT clip_id FROM clips UNION SELECT clip_id FROM captions")
        return sorted(r[0] for r in rows)

    def video_hashes(self) -> dict[str, str]:
        """{clip_id: video sha256} of the clips whose video hash is known."""
        return dict(self._query("SELECT clip_id, video_sha256 FROM clips WHERE video_sha256 IS NOT NULL"))

    def clip_for_video(self, sha256: str) -> Optional[str]:
        rows = self._query("SELECT clip_id FROM clips WHERE video_sha256=? ORDER BY clip_id LIMIT 1", (sha256.lower(),))
        return rows[0][0] if rows else None

    def resolve(self, key: str) -> Optional[str]:
        """A clip id from a clip id or from the sha256 (64 hex digits) of its video file; None if unknown."""
        if self._query("SELECT 1 FROM clips WHERE clip_id=? UNION SELECT 1 FROM captions WHERE clip_id=?", (key, key)):
            return key
        if len(key) == 64 and all(c in "0123456789abcdefABCDEF" for c in key):
            return self.clip_for_video(key)
        return None

    # --- captions ----------------------------------------------------------------------------------------------
    def put_captions(self, captions: Iterable[Caption]) -> int:
        """Insert or replace captions in one transaction (the text hash is computed here)."""
        rows = [_caption_row(c) for c in captions]
        with self.transaction() as con:
            con.executemany(_PUT_CAPTION, rows)
        return len(rows)

    def put_caption_and_features(self, caption: Caption, encoder: str, features: np.ndarray) -> None:
        """A new caption and its features (computed from exactly that text) in one transaction: a reader never sees
        the caption without its features, whenever the writer is killed."""
        row = _caption_row(caption)
        packed = _feature_row(caption.clip_id, caption.modality, encoder, row[5], features, time.time())
        with self.transaction() as con:
            con.execute(_PUT_CAPTION, row)
            con.execute(_PUT_FEATURES, packed)

    def put_caption(self, clip_id: str, modality: str, text: str, model: str, prompt_version: str, **meta) -> None:
        self.put_captions([Caption(clip_id, modality, model, prompt_version, text, **meta)])

    def captions(self, clip_id: Optional[str] = None, modality: Optional[str] = None, model: Optional[str] = None,
                 prompt_version: Optional[str] = None) -> list[Caption]:
        """Captions matching the filters (None = any), newest first within a clip and modality."""
        where, args = [], []
        for col, val in (("clip_id", clip_id), ("modality", modality), ("model", model),
                         ("prompt_version", prompt_version)):
            if val is not None:
                where.append(f"{col}=?")
                args.append(val)
        sql = f"SELECT {_CAPTION_COLS} FROM captions"
        sql += (" WHERE " + " AND ".join(where)) if where else ""
        sql += " ORDER BY clip_id, modality, created DESC, model, prompt_version"
        return [_caption_from_row(r) for r in self._query(sql, tuple(args))]

    def caption(self, clip_id: str, modality: str, model: Optional[str] = None,
                prompt_version: Optional[str] = None) -> Optional[Caption]:
        """The caption a clip's features come from: the newest one matching the filters, or None."""
        found = self.captions(clip_id, modality, model, prompt_version)
        return found[0] if found else None

    def caption_keys(self, model: str, prompt_version: str) -> set[tuple[str, str]]:
        """(clip_id, modality) pairs that already have a caption from this model and prompt version."""
        rows = self._query("SELECT clip_id, modality FROM captions WHERE model=? AND prompt_version=?",
                           (model, prompt_version))
        return {(r[0], r[1]) for r in rows}

    def delete_captions(self, clip_id: str, modality: Optional[str] = None) -> int:
        with self.transaction() as con:
            if modality is None:
                return con.execute("DELETE FROM captions WHERE clip_id=?", (clip_id,)).rowcount
            return con.execute("DELETE FROM captions WHERE clip_id=? AND modality=?", (clip_id, modality)).rowcount

    # --- features ----------------------------------------------------------------------------------------------
    def put_features(self, rows: Iterable[tuple]) -> int:
        """Store `(clip_id, modality, encoder, text_sha256, array [tokens, dim])` rows as float16, one transaction."""
        now = time.time()
        packed = [_feature_row(clip_id, modality, encoder, sha, array, now)
                  for clip_id, modality, encoder, sha, array in rows]
        with self.transaction() as con:
            con.executemany(_PUT_FEATURES, packed)
        return len(packed)

    def features(self, clip_id: str, modality: str, encoder: str) -> Optional[tuple[np.ndarray, str]]:
        """(float16 [tokens, dim] read-only array, text sha256 it was computed from), or None."""
        rows = self._query("SELECT tokens, dim, data, text_sha256 FROM features WHERE clip_id=? AND modality=? "
                           "AND encoder=?", (clip_id, modality, encoder))
        if not rows:
            return None
        tokens, dim, blob, sha = rows[0]
        return np.frombuffer(blob, dtype="<f2").reshape(tokens, dim), sha

    def feature_hashes(self, encoder: str) -> dict[tuple[str, str], str]:
        """{(clip_id, modality): text sha256} of every feature row of `encoder`."""
        rows = self._query("SELECT clip_id, modality, text_sha256 FROM features WHERE encoder=?", (encoder,))
        return {(r[0], r[1]): r[2] for r in rows}

    def encoders(self) -> list[str]:
        """Encoder ids that have feature rows."""
        return [r[0] for r in self._query("SELECT DISTINCT encoder FROM features ORDER BY encoder")]

    def stats(self) -> dict:
        """Counts for reports: clips, captions per modality, feature rows per encoder."""
        by_mod = dict(self._query("SELECT modality, count(*) FROM captions GROUP BY modality"))
        by_enc = dict(self._query("SELECT encoder, count(*) FROM features WHERE clip_id<>? GROUP BY encoder",
                                  (EMPTY_CLIP_ID,)))
        return {"clips": len(self.clip_ids()), "captions": {m: by_mod.get(m, 0) for m in MODALITIES},
                "features": by_enc, "models": [r[0] for r in self._query("SELECT DISTINCT model FROM captions")]}
