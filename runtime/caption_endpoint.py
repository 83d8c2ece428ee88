"""Captions for clips the cache has never seen: `caeav infer --caption-endpoint URL` asks an OpenAI-compatible endpoint.

    captioner = EndpointCaptioner(bundle, EndpointSettings("http://localhost:8000/v1"), cache_path)
    got = captioner.caption("clip.mp4", "clip", ["visual", "audio"])   # {modality: Captioned}

The requests are those of `caeav captions generate` (`caeav.captions.requests`: same media, prompts, decoding and
headers) sent with the same `ChatClient` (retries with backoff) and circuit `Breaker`. Each answer is tokenised and
encoded by the bundle's text tower (`caeav.runtime.caption_text`); with a cache, the caption and its features are
stored in one transaction (`CaptionCache.put_caption_and_features`), so a run killed at any moment leaves a cache
that opens and reads, and the next run asks only for what is missing.

Failures never stop a run: the first one (endpoint unreachable at the pre-flight, retries run out on HTTP 5xx or
answers that are not JSON, the breaker trips) becomes the run's one warning (`notes`); the clip falls back to the
empty-caption features. After `max_failures` failed requests in a row, or an unreachable endpoint, the endpoint is
not asked again in this run. Thread-safe: the pipeline's decoding threads call `caption` concurrently, so requests
for the next clips overlap with inference on the main thread.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from caeav.captions.breaker import Breaker, Cancelled
from caeav.captions.cache import EMPTY_CLIP_ID, MODALITIES, Caption, CaptionCache, text_sha256
from caeav.captions.prompts import PROMPT_VERSION, Decoding
from caeav.captions.sources import DEFAULT_FRAME_SIZE
from caeav.errors import CaeavError, CaptionError

COST = "accuracy without captions: see README 'Captions at inference'"


@dataclass(frozen=True)
class EndpointSettings:
    """How `caeav infer` talks to the caption endpoint (defaults: `caeav captions generate`'s, fewer retries)."""

    url: str
    model: Optional[str] = None  # default: the only model the endpoint serves
    timeout: float = 120.0
    retries: int = 3
    backoff: float = 1.0
    api_key: Optional[str] = None
    frame_size: int = DEFAULT_FRAME_SIZE
    max_failures: int = 2  # failed requests in a row after which the endpoint is not asked again this run
    max_connection_failures: int = 3

    @classmethod
    def of(cls, value: Union[None, str, "EndpointSettings"]) -> Optional["EndpointSettings"]:
        """None, a URL or settings -> settings (or None)."""
        if value is None or isinstance(value, EndpointSettings):
            return value
        return cls(str(value))


@dataclass
class Captioned:
    """One caption received: its text, its features (float32 [L, D], float16-exact) and what it cost."""

    text: str
    features: np.ndarray
    endpoint_s: float
    text_encoder_ms: float


@dataclass
class CaptionCosts:
    """Per-clip costs of the captions asked for in this run (for `caeav bench` and reports)."""

    endpoint_s: list = field(default_factory=list)
    text_encoder_ms: list = field(default_factory=list)


def prepare_cache(path: Union[str, os.PathLike], bundle) -> Path:
    """Create the caption cache `path` if it does not exist (the bundle's empty-caption features under its encoder
    id, as `caeav captions encode` writes them); CaptionError (one line) if it holds another text encoder's features,
    which new captions encoded by this bundle would not match."""
    encoder = bundle.manifest.get("text_encoder_id")
    if not encoder:
        raise CaptionError(f"{bundle.path}: the manifest has no text_encoder_id, so new captions cannot be stored; "
                           "re-export the bundle")
    with CaptionCache(path) as cache:
        if cache.get_meta("task") is None:
            cache.set_meta("task", bundle.task)
        others = [e for e in cache.encoders() if e != encoder]
        if others and encoder not in cache.encoders():
            raise CaptionError(f"--captions {path}: its features come from text encoder {others[0]}, this bundle's is "
                               f"{encoder}; use another cache file for on-the-fly captions")
        if cache.features(EMPTY_CLIP_ID, "visual", encoder) is None:
            empty = bundle.empty_caption()
            cache.put_features((EMPTY_CLIP_ID, m, encoder, text_sha256(""), empty) for m in MODALITIES)
    return Path(path)


class EndpointCaptioner:
    """Asks the endpoint for a clip's missing captions (module docstring)."""

    def __init__(self, bundle, settings: EndpointSettings, cache_path=None, providers: Optional[Sequence[str]] = None,
                 threads: Optional[int] = None):
        from caeav.captions.client import ChatClient

        from .caption_text import TextEncoder

        self.bundle, self.settings = bundle, settings
        self.client = ChatClient(settings.url, timeout=settings.timeout, retries=settings.retries,
                                 backoff=settings.backoff, api_key=settings.api_key)
        self.text = TextEncoder(bundle, providers, threads)  # BundleError now, not per clip
        self.encoder_id = bundle.manifest.get("text_encoder_id")
        self.cache = CaptionCache(prepare_cache(cache_path, bundle)) if cache_path is not None else None
        self.decoding = Decoding()
        self.breaker = Breaker(settings.max_connection_failures)
        self.model: Optional[str] = None
        self.notes: list = []  # the run's one warning
        self.costs = CaptionCosts()
        self.disabled = False
        self._lock = threading.Lock()
        self._started = False
        self._in_a_row = 0

    # ------------------------------------------------------------------------------------------------ state

    def _warn(self, message: str, stop: bool = False) -> None:
        with self._lock:
            if not self.notes:
                self.notes.append(f"caption endpoint {self.client.base}: {message}; clips without cached captions "
                                  f"use the empty-caption features ({COST})")
            if stop:
                self.disabled = True

    def _start(self) -> bool:
        """The pre-flight request, once per run (under the lock); False when the endpoint is not to be asked."""
        from caeav.captions.generate import resolve_model

        with self._lock:
            if not self._started:
                self._started = True
                try:
                    self.model = resolve_model(self.client, self.settings.model)
                except CaptionError as exc:  # worded for `caeav captions generate`: name infer's options
                    text = " ".join(str(exc).split()).replace("--endpoint", "--caption-endpoint")
                    self.disabled = True
                    self.notes.append(f"{text.replace('--model', '--caption-model')}; clips without cached captions "
                                      f"use the empty-caption features ({COST})")
            return not self.disabled

    def _outcome(self, ok: bool, message: str = "") -> None:
        with self._lock:
            self._in_a_row = 0 if ok else self._in_a_row + 1
            stop = not ok and self._in_a_row >= max(1, self.settings.max_failures)
        if not ok:
            self._warn(message + (" (not asked again in this run)" if stop else ""), stop)

    # ------------------------------------------------------------------------------------------------ work

    def caption(self, video, clip_id: str, missing: Sequence[str], video_sha256: Optional[str] = None) -> dict:
        """{modality: Captioned} for the `missing` modalities of `video` that the endpoint captioned (and stored)."""
        from caeav.captions.requests import caption_headers, caption_media, caption_params, caption_request

        if not missing or not self._start():
            return {}
        b = self.bundle
        try:
            raw = caption_media(video, b.segments, b.sampling, self.settings.frame_size)
        except CaeavError:
            return {}  # the clip's own decode reports what is wrong with the file
        if self.cache is not None:
            self.cache.add_clips([(clip_id, video_sha256, os.fspath(video))])
        got, spent = {}, 0.0
        for modality in missing:
            if self.disabled:
                break
            body = caption_request(modality, raw, self.model, b.segments, self.decoding)
            try:
                done = self.client.complete(body, caption_headers(clip_id, modality), guard=self.breaker)
            except Cancelled:
                self._warn(f"{self.breaker.tripped_after} connection failures in a row (last: {self.breaker.last})",
                           stop=True)
                break
            except CaptionError as exc:
                self._outcome(False, " ".join(str(exc).split()))
                continue
            self._outcome(True)
            start = time.perf_counter()
            feats = self.text.encode([done.text])[0]
            ms = 1000 * (time.perf_counter() - start)
            spent += done.latency_s
            if self.cache is not None:
                params = caption_params(self.decoding, self.settings.frame_size, b.segments, done.attempts)
                self.cache.put_caption_and_features(
                    Caption(clip_id, modality, self.model, PROMPT_VERSION, done.text, endpoint=self.client.base,
                            params=params, latency_s=round(done.latency_s, 4)), self.encoder_id, feats)
            got[modality] = Captioned(done.text, feats, done.latency_s, ms)
            with self._lock:
                self.costs.text_encoder_ms.append(ms)
        if got:
            with self._lock:
                self.costs.endpoint_s.append(spent)
        return got

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()
