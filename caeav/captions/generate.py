"""Caption generation Cap_v = Γ(π_v({I_t}); τ), Cap_a = Γ(π_a(S); τ) (P Eq. 14, App. A) against an endpoint.

`generate_captions` asks an OpenAI-compatible chat-completions endpoint (vLLM serving Qwen2.5-Omni) for every
(clip, modality) caption that the cache does not hold yet for this model and `PROMPT_VERSION`, and writes each answer
to the cache as soon as it arrives (one transaction per caption). So an interrupted run loses at most the answers in
flight, and a rerun asks only for what is missing: it never asks twice for a caption it has.

Before the run, `resolve_model` sends one quick pre-flight request (GET /v1/models): an endpoint that is unreachable or
not an OpenAI-compatible server is one `CaptionError` line before anything is asked. Up to `concurrency` clips are in
flight at once (daemon threads; each decodes its clip once and asks for its missing modalities in turn). Transient
failures are retried by `ChatClient`; a clip whose retries run out, or whose media cannot be read, is recorded as a
`Failure` and the run goes on. The run stops early (the report says why; what is cached stays) when
`max_connection_failures` connection failures come in a row (the endpoint went away: the circuit breaker of
`caeav.captions.breaker`) or `max_consecutive_failures` requests in a row fail (it refuses every request).

Stopping is prompt: on an early stop or Ctrl-C the clips not started are dropped and the requests in flight are not
waited for (their threads are daemons; an answer that arrives after the run ended is not written). Every cache write
is one transaction under the run's write lock, so the cache is consistent whenever the run ends.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

from caeav.errors import CaeavError, CaptionError

from .breaker import Breaker, Cancelled
from .cache import CaptionCache, file_sha256
from .client import ChatClient
from .prompts import PROMPT_VERSION, Decoding
from .requests import MODALITY_ORDER, caption_headers, caption_params, caption_request
from .sources import ClipJob


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
    """The model to ask: `model`, or the only model the endpoint serves. The pre-flight request of a run: one-line
    CaptionError when the endpoint is unreachable, not OpenAI-compatible, or does not serve `model`."""
    served = client.preflight(model)
    if served is None:  # an OpenAI-compatible server that lists no models: the first request will tell
        if model:
            return model
        raise CaptionError(f"{client.base} does not list its models; name the one to use with --model")
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

    def __init__(self, cache, client, model, prompt_version, decoding, system, frame_size, max_failures,
                 max_connection_failures):
        self.cache, self.client, self.model, self.prompt_version = cache, client, model, prompt_version
        self.decoding, self.system, self.max_failures = decoding, system, max_failures
        self.frame_size = frame_size
        self.breaker = Breaker(max_connection_failures)
        self.stop = self.breaker.stop
        self.lock = threading.Lock()
        self.write_lock = threading.Lock()  # held by every cache write of a worker, and by `close`
        self.closed = False
        self.in_a_row = 0
        self.generated = 0

    def _outcome(self, ok: bool) -> None:
        with self.lock:
            self.in_a_row = 0 if ok else self.in_a_row + 1
            if self.max_failures and self.in_a_row >= self.max_failures:
                self.stop.set()

    def write(self, fn, *args, caption: bool = False, **kwargs) -> bool:
        """Run one cache write unless the run has ended; False when it was not written."""
        with self.write_lock:
            if self.closed:
                return False
            fn(*args, **kwargs)
            self.generated += int(caption)
            return True

    def close(self) -> None:
        """End the run: stop every worker; a write in progress completes first, none starts after."""
        self.stop.set()
        with self.write_lock:
            self.closed = True

    def clip(self, job: ClipJob, missing: Sequence[str], need_hash: bool) -> Optional[list[Failure]]:
        """Caption the missing modalities of one clip; returns its failures, or None when the run stopped first."""
        if self.stop.is_set():
            return None
        try:
            if need_hash:
                self.write(self.cache.add_clips, [(job.clip_id, file_sha256(job.video), job.video)])
            raw = job.load() if missing else None
        except CaeavError as exc:
            self._outcome(False)
            return [Failure(job.clip_id, m, f"media: {exc}") for m in missing]
        failures, finished = [], 0
        for modality in missing:
            if self.stop.is_set():
                break
            try:
                body = caption_request(modality, raw, self.model, job.segments, self.decoding, self.system)
                done = self.client.complete(body, caption_headers(job.clip_id, modality), guard=self.breaker)
                params = caption_params(self.decoding, self.frame_size, job.segments, done.attempts)
                if not self.write(self.cache.put_caption, job.clip_id, modality, done.text, self.model,
                                  self.prompt_version, endpoint=self.client.base, params=params,
                                  latency_s=round(done.latency_s, 4), caption=True):
                    break
            except Cancelled:
                break
            except CaptionError as exc:
                failures.append(Failure(job.clip_id, modality, str(exc)))
                self._outcome(False)
            else:
                self._outcome(True)
            finished += 1
        return failures if failures or finished == len(missing) else None

    def stopped_reason(self) -> str:
        if self.breaker.tripped:
            return (f"{self.breaker.tripped_after} connection failures in a row to {self.client.base} "
                    f"(last: {self.breaker.last})")
        if self.max_failures and self.in_a_row >= self.max_failures:
            return f"{self.in_a_row} requests failed in a row; check the endpoint"
        return ""


def _worker(run: _Run, todo: "queue.SimpleQueue", results: "queue.SimpleQueue") -> None:
    while True:
        try:
            index, item = todo.get_nowait()
        except queue.Empty:
            return
        try:
            failed = run.clip(*item)
        except BaseException as exc:  # a bug in a worker: hand it to the main thread
            results.put((index, exc))
            return
        results.put((index, failed))


def _run_workers(run: _Run, todo: list, concurrency: int, report: GenerateReport, progress) -> None:
    """Caption `todo` with up to `concurrency` daemon threads; returns when all are done or the run stops."""
    pending: queue.SimpleQueue = queue.SimpleQueue()
    results: queue.SimpleQueue = queue.SimpleQueue()
    for entry in enumerate(todo):
        pending.put(entry)
    for k in range(min(max(1, int(concurrency)), len(todo))):
        threading.Thread(target=_worker, args=(run, pending, results), name=f"caeav-caption-{k}", daemon=True).start()
    done = 0
    try:
        while done < len(todo):
            try:
                index, failed = results.get(timeout=0.1)
            except queue.Empty:
                if run.stop.is_set():
                    break  # an early stop: do not wait for requests in flight
                continue
            if isinstance(failed, BaseException):
                raise failed
            done += 1
            if failed is None:  # not captioned: the run is stopping
                continue
            report.failures.extend(failed)
            if progress is not None:
                progress(done, len(todo), todo[index][0].clip_id, failed)
        run.close()
        while True:  # clips that finished while the run stopped
            try:
                _, failed = results.get_nowait()
            except queue.Empty:
                break
            if isinstance(failed, list):
                report.failures.extend(failed)
    finally:  # also on Ctrl-C: nothing is written after this, so the cache is consistent as it is
        run.close()


def generate_captions(jobs: Sequence[ClipJob], cache: CaptionCache, client: ChatClient, model: Optional[str] = None,
                      decoding: Decoding = Decoding(), concurrency: int = 4, prompt_version: str = PROMPT_VERSION,
                      frame_size: Optional[int] = None, system: Optional[str] = None,
                      progress: Optional[Callable[[int, int, str, list], None]] = None,
                      max_consecutive_failures: int = 50, max_connection_failures: int = 5,
                      preflight: bool = True) -> GenerateReport:
    """Ask for every missing caption of `jobs`; see the module docstring. Returns the run's report.

    `preflight=False` skips the pre-flight request (the caller ran `resolve_model` and passes its `model`)."""
    if preflight or not model:
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
    run = _Run(cache, client, model, prompt_version, decoding, system, frame_size, max_consecutive_failures,
               max_connection_failures)
    _run_workers(run, todo, concurrency, report, progress)
    report.generated = run.generated
    report.stopped = run.stopped_reason()
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
