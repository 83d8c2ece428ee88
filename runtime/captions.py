"""Caption features for the videos `caeav infer` runs on (P §III-C: S_ori from MLLM captions).

`CaptionSource(bundle, cache, endpoint)`: cache = a caption cache file (`caeav captions encode`, or one `caeav infer
--caption-endpoint` filled), ``"none"`` or None (no cache); endpoint = None, a URL or
`caeav.runtime.caption_endpoint.EndpointSettings` (also taken from `InferOptions.caption_endpoint` when `features`
gets the options). A video is looked up by clip id = its file stem, then by the sha256 of its bytes. A modality the
cache lacks is asked of the endpoint when there is one (and stored in the cache); otherwise, or when the endpoint
fails, it gets the bundle's empty-caption features. Never fatal: the video's `captions` status says what happened —

    {"source": "cache" | "endpoint" | "none" | "unused",   # endpoint: a modality came from it; cache: one was given;
                                                          # unused: an AVMoE-baseline bundle (no caption branch)
     "sources": {"visual": "cache" | "endpoint" | "none", "audio": ...},   # none = the empty-caption features
     "clip_id": str | None, "missing": [modalities on the empty-caption features]}   # [] when nothing was asked
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Optional, Union

import numpy as np

from caeav.errors import CaptionError

from .bundle import Bundle

MODALITIES = ("visual", "audio")


def _reader(bundle: Bundle, cache) -> "object":
    """The cache's feature reader, for the bundle's text encoder when the cache has its features."""
    from caeav.captions.cache import CaptionCache
    from caeav.captions.reader import CaptionFeatureReader

    with CaptionCache(cache, readonly=True) as store:
        encoders = store.encoders()
    mine = bundle.manifest.get("text_encoder_id")
    return CaptionFeatureReader(cache, encoder=mine if mine in encoders else None)


class CaptionSource:
    def __init__(self, bundle: Bundle, cache: Optional[Union[str, os.PathLike]] = None, endpoint=None,
                 providers=None, threads: Optional[int] = None):
        self.bundle = bundle
        self.empty = bundle.empty_caption()
        self.reader = None
        self.cache = None if cache is None or str(cache) == "none" else Path(cache)
        self._endpoint = endpoint
        self._engine = (providers, threads)
        self._captioner = None
        self._lock = threading.Lock()
        if self.cache is not None:
            if not self.cache.is_file():
                raise CaptionError(f"{cache}: no such caption cache (pass a file from `caeav captions encode`, "
                                   "--captions none, or add --caption-endpoint URL to create it)")
            self.reader = _reader(bundle, self.cache)
            probe = self.reader.lookup("__caeav_probe__").visual
            if probe.shape[-1] != self.empty.shape[-1]:
                raise CaptionError(f"{cache}: caption features have {probe.shape[-1]} dims, the bundle's model "
                                   f"expects {self.empty.shape[-1]} (encoded with another text encoder?)")

    def captioner(self, options=None):
        """The run's `EndpointCaptioner` (made on first use; None without an endpoint). BundleError / CaptionError
        (one line) when the bundle cannot encode captions or the cache cannot take them: call it before a run."""
        from .caption_endpoint import EndpointCaptioner, EndpointSettings

        settings = EndpointSettings.of(self._endpoint or getattr(options, "caption_endpoint", None))
        if settings is None:
            return None
        with self._lock:
            if self._captioner is None:
                self._captioner = EndpointCaptioner(self.bundle, settings, self.cache, *self._engine)
            return self._captioner

    @property
    def notes(self) -> list:
        """Run-level warnings (the caption endpoint's one warning)."""
        return list(self._captioner.notes) if self._captioner is not None else []

    def features(self, video: Union[str, os.PathLike], options=None) -> tuple[np.ndarray, np.ndarray, dict]:
        """(visual [L, D], audio [L, D] float32, status): see the module docstring. A bundle of the AVMoE baseline
        reads no captions: nothing is looked up or asked, and every source is "unused"."""
        if not self.bundle.uses_captions:
            unused = {m: "unused" for m in MODALITIES}
            return self.empty, self.empty, {"source": "unused", "clip_id": None, "missing": [], "sources": unused}
        captioner = self.captioner(options)
        feats = {m: self.empty for m in MODALITIES}
        sources = {m: "none" for m in MODALITIES}
        clip_id, sha = None, None
        if self.reader is not None:
            item = self.reader.lookup(Path(video).stem)
            if item.clip_id is None:
                from caeav.captions.cache import file_sha256

                sha = file_sha256(video)
                item = self.reader.lookup(sha)
            clip_id = item.clip_id
            for m, arr, fallback in zip(MODALITIES, (item.visual, item.audio), item.fallback):
                if not fallback:
                    feats[m], sources[m] = arr.astype(np.float32), "cache"
        wanted = [m for m in MODALITIES if sources[m] == "none"]
        if captioner is not None and wanted:
            new_id = clip_id or _new_clip_id(video)
            got = captioner.caption(video, new_id, wanted, sha)
            for m, answer in got.items():
                feats[m], sources[m] = answer.features, "endpoint"
            clip_id = clip_id or (new_id if got else None)
        asked = self.reader is not None or captioner is not None
        overall = "endpoint" if "endpoint" in sources.values() else "cache" if self.reader is not None else "none"
        status = {"source": overall, "clip_id": clip_id,
                  "missing": [m for m in MODALITIES if sources[m] == "none"] if asked else [], "sources": sources}
        return feats["visual"], feats["audio"], status

    def close(self) -> None:
        if self._captioner is not None:
            self._captioner.close()


def _new_clip_id(video) -> str:
    """The clip id a video new to the cache is stored under: its file stem (the first key lookups try), or the
    sha256 of its bytes when the stem is not a usable id."""
    stem = Path(video).stem
    if stem.strip() and not stem.startswith("__"):
        return stem
    from caeav.captions.cache import file_sha256

    return file_sha256(video)
