"""Caption generation Cap_v = Γ(π_v({I_t}); τ), Cap_a = Γ(π_a(S); τ) (P Eq. 14, App. A) against an endpoint.

`generate_captions` asks an OpenAI-compatible chat-completions endpoint (vLLM serving Qwen2.5-Omni) for every
(clip, modality) caption that the cache does not hold yet for this model and `PROMPT_VERSION`, and writes each answer
to the cache as soon as it arrives (one transaction per caption). So an interrupted run loses at most the answers in
flight, and a rerun asks only for what is missing: it never asks twice for a caption it has.

Up to `concurrency` clips are in flight at once (threads; each decodes its clip once and asks for its missing
modalities in turn). Transient HTTP failures are retried by `ChatClient`; a clip whose retries run out, or whose media
cannot be read, is recorded as a `Failure` and the run goes on. After `max_consecutive_failures` failed requests in a
row (the endpoint is down, or refuses every request) the run stops early; the report says so.
"""

from __future__ import annotations

import threading
import urllib.parse
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

from caeav.errors import CaeavError, CaptionError

from .cache import CaptionCache, file_sha256
from .client import ChatClient
from .prompts import PROMPT_VERSION, Decoding, audio_request, prompt_sha256, visual_request
from .sources import ClipJob

MODALITY_ORDER = ("visual", "audio")


@dataclass(frozen=True)
class Failure:
    clip_id: str
    modality: str
    message: str


@dataclass
class GenerateReport:
    model: str
    prompt_version: str
    clips: int = 0
    cached: int = 0  # captions already in the cache (not asked again)
    requested: int = 0  # captions asked for in this run
    generated: int = 0  # captions received and stored
    failures: list = field(default_factory=list)
    stopped: str = ""  # non-empty when the run stopped early

    @property
    def ok(self) -> bool:
        return not self.failures and not self.stopped

    def summary(self, show: int = 5) -> str:
        lines = [f"{self.clips} clips; {self.cached} captions already cached, {self.generated} of {self.requested} "
                 f"asked for generated ({self.model}, prompt {self.prompt_version})"]
        if self.failures:
            lines.append(f"{len(self.failures)} caption(s) failed (a rerun asks for them again):")
            lines += [f"  {f.clip_id} [{f.modality}]: {f.message}" for f in self.failures[:show]]
            if len(self.failures) > show:
                lines.append(f"  ... and {len(self.failures) - show} more")
        if self.stopped:
            lines.append(f"stopped early: {self.stopped}")
        return "\n".join(lines)


def resolve_model(client: ChatClient, model: Optional[str]) -> str:
    """The model to ask: `model`, or the only model the endpoint serves. Also checks that the endpoint answers."""
    try:
        served = client.models()
    except CaptionError:
        if model:  # some OpenAI-compatible servers do not list models; the first request will tell
            return model
        raise
    if model:
        if served and model not in served:
            raise CaptionError(f"{client.base} serves {', '.join(served)}, not {model!r}")
        return model
    if len(served) != 1:
        raise CaptionError(f"{client.base} serves {len(served)} models ({', '.join(served) or 'none'}); "
                           "choose one with --model")
    return served[0]


class _Run:
    """State shared by the worker threads of one run."""

    def __init__(self, cache, client, model, prompt_version, decoding, system, frame_size, max_failures):
        self.cache, self.client, self.model, self.prompt_version = cache, client, model, prompt_version
        self.decoding, self.system, self.max_failures = decoding, system, max_failures
        self.params = {"decoding": decoding.params(), "prompt_sha256": prompt_sha256(), "frame_size": frame_size}
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.in_a_row = 0
        self.generated = 0

    def _outcome(self, ok: bool) -> None:
        with self.lock:
            self.in_a_row = 0 if ok else self.in_a_row + 1
            self.generated += int(ok)
            if self.max_failures and self.in_a_row >= self.max_failures:
                self.stop.set()

    def request(self, job: ClipJob, modality: str, raw) -> dict:
        if modality == "visual":
            return visual_request(raw.frames, self.model, self.decoding, job.segments, self.system)
        return audio_request(raw.audio, self.model, self.decoding, job.segments, system=self.system)

    def clip(self, job: ClipJob, missing: Sequence[str], need_hash: bool) -> list[Failure]:
        """Caption the missing modalities of one clip; returns its failures."""
        if self.stop.is_set():
            return []
        try:
            if need_hash:
                self.cache.add_clips([(job.clip_id, file_sha256(job.video), job.video)])
            raw = job.load() if missing else None
        except CaeavError as exc:
            self._outcome(False)
            return [Failure(job.clip_id, m, f"media: {exc}") for m in missing]
        failures = []
        headers = {"X-Caeav-Clip": urllib.parse.quote(job.clip_id, safe="")}
        for modality in missing:
            if self.stop.is_set():
                break
            try:
                body = self.request(job, modality, raw)
                done = self.client.complete(body, {**headers, "X-Caeav-Modality": modality})
                params = {**self.params, "frames": job.segments, "attempts": done.attempts}
                self.cache.put_caption(job.clip_id, modality, done.text, self.model, self.prompt_version,
                                       endpoint=self.client.base, params=params, latency_s=round(done.latency_s, 4))
            except CaptionError as exc:
                failures.append(Failure(job.clip_id, modality, str(exc)))
                self._outcome(False)
                continue
            self._outcome(True)
        return failures


def generate_captions(jobs: Sequence[ClipJob], cache: CaptionCache, client: ChatClient, model: Optional[str] = None,
                      decoding: Decoding = Decoding(), concurrency: int = 4, prompt_version: str = PROMPT_VERSION,
                      frame_size: Optional[int] = None, system: Optional[str] = None,
                      progress: Optional[Callable[[int, int, str, list], None]] = None,
                      max_consecutive_failures: int = 50) -> GenerateReport:
    """Ask for every missing caption of `jobs`; see the module docstring. Returns the run's report."""
    model = resolve_model(client, model)
    report = GenerateReport(model, prompt_version, clips=len(jobs))
    have = cache.caption_keys(model, prompt_version)
    hashed = cache.video_hashes()
    cache.add_clips((j.clip_id, None, None) for j in jobs)
    todo = []
    for job in jobs:
        missing = [m for m in MODALITY_ORDER if (job.clip_id, m) not in have]
        report.cached += 2 - len(missing)
        need_hash = job.video is not None and job.clip_id not in hashed
        if missing or need_hash:
            todo.append((job, missing, need_hash))
        report.requested += len(missing)
    run = _Run(cache, client, model, prompt_version, decoding, system, frame_size, max_consecutive_failures)
    pool = ThreadPoolExecutor(max_workers=max(1, int(concurrency)), thread_name_prefix="caeav-caption")
    try:
        futures = {pool.submit(run.clip, *item): item[0] for item in todo}
        for done, future in enumerate(as_completed(futures), 1):
            failed = future.result()
            report.failures.extend(failed)
            if progress is not None:
                progress(done, len(futures), futures[future].clip_id, failed)
    except BaseException:  # Ctrl-C: finish the requests in flight (their answers are stored), start no more
        run.stop.set()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    report.generated = run.generated
    if run.stop.is_set():
        report.stopped = f"{run.in_a_row} requests failed in a row; check the endpoint and rerun"
    return report


def open_dataset_cache(path, task: str) -> CaptionCache:
    """Open (or create) the caption cache of one dataset; CaptionError if the file belongs to another task."""
    cache = CaptionCache(path)
    owner = cache.get_meta("task")
    if owner is None:
        cache.set_meta("task", task)
    elif owner != task:
        cache.close()
        raise CaptionError(f"caption cache {path} belongs to task {owner!r}, not {task!r} (one cache per dataset)")
    return cache
