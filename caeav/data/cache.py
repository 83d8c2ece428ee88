"""A cache of decoded clips on disk: one set of .npy files per clip, memory-mapped on read (torch-free).

What is stored is the decoded, resized clip before normalisation (`caeav.media.RawClip`): frames uint8
[T, S, S, 3] (4x smaller than float32) and audio float32 [T, 32000], plus a small JSON of the decode facts
(has_audio, padded_seconds, warnings). Later epochs open them with ``mmap_mode="r"`` instead of decoding again.

The key covers everything that changes the arrays: the source files (path, size, modification time), the number of
segments, the frame size, the sampling rule, the window start, and a format version. Files are written to a temporary
name and renamed into place, so a crash or a concurrent worker never leaves a half-written entry behind.

Arrays computed from a clip (AVVP's R(2+1)D-18 features, `caeav.data.clips.STFeatures`) live in the same folder under
their own key (`get_array` / `put_array`): one .npy per entry, present only once completely written.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from caeav.files import atomic_file, write_bytes_atomic
from caeav.media.types import RawClip

CACHE_VERSION = 1


def source_fingerprint(paths: Iterable[Path]) -> list:
    """(path, size, mtime_ns) of each source file; a change to any of them invalidates the cache entry."""
    out = []
    for p in paths:
        st = os.stat(p)
        out.append([str(Path(p).resolve()), st.st_size, st.st_mtime_ns])
    return out


class DecodedCache:
    """Decoded clips under `folder`: `get(key, sources, params)` / `put(...)`; `hits` / `misses` count lookups."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.hits = 0
        self.misses = 0

    def _stem(self, key: str, sources: list, params: dict) -> Path:
        blob = json.dumps({"v": CACHE_VERSION, "sources": sources, "params": params}, sort_keys=True)
        digest = hashlib.sha256(blob.encode()).hexdigest()[:16]
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", key)[:80]
        return self.folder / f"{safe}-{digest}"

    def get(self, key: str, sources: list, params: dict) -> Optional[RawClip]:
        stem = self._stem(key, sources, params)
        meta_path = stem.with_name(stem.name + ".json")
        try:
            meta = json.loads(meta_path.read_text())
            frames = np.load(stem.with_name(stem.name + ".frames.npy"), mmap_mode="r")
            audio = np.load(stem.with_name(stem.name + ".audio.npy"), mmap_mode="r")
        except (OSError, ValueError):
            self.misses += 1
            return None
        self.hits += 1
        return RawClip(frames=frames, audio=audio, **meta)

    def put(self, key: str, sources: list, params: dict, clip: RawClip) -> None:
        stem = self._stem(key, sources, params)
        meta = {
            "duration": float(clip.duration),
            "has_audio": bool(clip.has_audio),
            "padded_seconds": float(clip.padded_seconds),
            "warnings": list(clip.warnings),
            "start": float(clip.start),
            "frame_times": [float(t) for t in clip.frame_times],
            "rotation": int(clip.rotation),
        }
        # arrays first, the JSON last: an entry counts as present only once its JSON exists
        _atomic_save(stem.with_name(stem.name + ".frames.npy"), np.ascontiguousarray(clip.frames, dtype=np.uint8))
        _atomic_save(stem.with_name(stem.name + ".audio.npy"), np.ascontiguousarray(clip.audio, dtype=np.float32))
        write_bytes_atomic(stem.with_name(stem.name + ".json"), json.dumps(meta).encode())


    def get_array(self, key: str, sources: list, params: dict, kind: str) -> Optional[np.ndarray]:
        """A cached array of `kind` (e.g. "st") for the clip, or None; memory-mapped."""
        stem = self._stem(key, sources, {**params, "kind": kind})
        try:
            array = np.load(stem.with_name(f"{stem.name}.{kind}.npy"), mmap_mode="r")
        except (OSError, ValueError):
            self.misses += 1
            return None
        self.hits += 1
        return array

    def put_array(self, key: str, sources: list, params: dict, kind: str, array: np.ndarray) -> None:
        stem = self._stem(key, sources, {**params, "kind": kind})
        _atomic_save(stem.with_name(f"{stem.name}.{kind}.npy"), np.ascontiguousarray(array))


def _atomic_save(path: Path, array: np.ndarray) -> None:
    with atomic_file(path) as f:
        np.save(f, array)
