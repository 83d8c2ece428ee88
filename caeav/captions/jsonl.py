"""Captions as JSON Lines, one caption per line, so captions can be made elsewhere, edited or filtered (P §III-C).

A line holds at least ``clip_id``, ``modality`` (visual / audio) and ``text``; ``model`` and ``prompt_version`` name
where the caption came from (defaults given to `import_jsonl`), and optional ``video_sha256`` registers the sha256 of
the clip's video file. Exports also carry the generation metadata (endpoint, params, created, latency_s, source).
Other keys are ignored on import. An import is all or nothing: every line is checked before one transaction writes
them, and changed texts make their cached features stale.
"""

from __future__ import annotations

import json
import os
from typing import Optional

from caeav.errors import CaptionError
from caeav.files import atomic_file

from .cache import Caption, CaptionCache, PathLike, check_clip_id, check_modality

REQUIRED = ("clip_id", "modality", "text")


def _caption_from_json(obj, where: str, model: str, prompt_version: str, source: str) -> Caption:
    if not isinstance(obj, dict):
        raise CaptionError(f"{where}: expected a JSON object per line")
    missing = [k for k in REQUIRED if k not in obj]
    if missing:
        raise CaptionError(f"{where}: missing {', '.join(missing)}")
    if not isinstance(obj["text"], str):
        raise CaptionError(f"{where}: text must be a string")
    try:
        check_clip_id(obj["clip_id"])
        check_modality(obj["modality"])
    except CaptionError as exc:
        raise CaptionError(f"{where}: {exc}") from None
    params = obj.get("params") or {}
    if not isinstance(params, dict):
        raise CaptionError(f"{where}: params must be an object")
    return Caption(obj["clip_id"], obj["modality"], str(obj.get("model") or model),
                   str(obj.get("prompt_version") or prompt_version), obj["text"], endpoint=obj.get("endpoint"),
                   params=params, created=float(obj.get("created") or 0.0), latency_s=obj.get("latency_s"),
                   source=str(obj.get("source") or source))


def import_jsonl(cache: CaptionCache, path: PathLike, model: str = "external", prompt_version: str = "external",
                 source: str = "imported") -> int:
    """Add or replace the captions of a JSONL file; returns how many lines were imported."""
    captions, hashes = [], []
    try:
        fh = open(path, encoding="utf-8")
    except OSError as exc:
        raise CaptionError(f"{os.fspath(path)}: cannot be read ({exc.strerror or exc})") from None
    with fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{os.fspath(path)}:{number}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise CaptionError(f"{where}: not valid JSON ({exc.msg})") from None
            captions.append(_caption_from_json(obj, where, model, prompt_version, source))
            if obj.get("video_sha256"):
                hashes.append((obj["clip_id"], str(obj["video_sha256"]).lower(), None))
    if hashes:
        cache.add_clips(hashes)
    return cache.put_captions(captions)


def export_jsonl(cache: CaptionCache, path: PathLike, modality: Optional[str] = None, model: Optional[str] = None,
                 prompt_version: Optional[str] = None) -> int:
    """Write the matching captions (with their metadata) to `path` atomically; returns how many lines."""
    shas = cache.video_hashes()
    count = 0
    try:
        with atomic_file(path, text=True) as fh:
            for c in cache.captions(modality=modality, model=model, prompt_version=prompt_version):
                line = {"clip_id": c.clip_id, "modality": c.modality, "text": c.text, "model": c.model,
                        "prompt_version": c.prompt_version, "source": c.source, "endpoint": c.endpoint,
                        "params": c.params, "created": c.created, "latency_s": c.latency_s}
                if c.clip_id in shas:
                    line["video_sha256"] = shas[c.clip_id]
                fh.write(json.dumps(line, ensure_ascii=False) + "\n")
                count += 1
    except OSError as exc:
        raise CaptionError(f"{os.fspath(path)}: cannot be written ({exc.strerror or exc})") from None
    return count
