"""Videos -> per-second audio-visual events: decode, captions, the three graphs, post-processing.

    pipe = Pipeline("bundle/", InferOptions(engine="ort", captions="captions.sqlite"))
    report = pipe.run(["a.mp4", "clips/"])       # folders and .txt lists (one path per line) are expanded
    report.results[0].timeline["per_second"]     # see caeav.runtime.results for the JSON schema

Videos are decoded on a thread pool (PyAV releases the GIL) while the engine runs on the main thread; the windows of
all videos are batched together up to the bundle's batch size. A video that cannot be decoded (missing, corrupt, no
video track, no audio track unless `allow_missing_audio`) becomes a `Failure` and the run goes on.
"""

from __future__ import annotations

import os
import time
import warnings
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np

from caeav.errors import CaeavError

from .bundle import Bundle
from .captions import CaptionSource
from .engine import load_model
from .events import avvp_timeline, ave_timeline
from .windows import plan_windows

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".ts")
PathLike = Union[str, os.PathLike]


@dataclass
class InferOptions:
    task: Optional[str] = None  # expected task; None accepts the bundle's
    engine: str = "auto"
    precision: str = "fp32"
    captions: Optional[PathLike] = None  # caption cache, "none" or None (empty captions)
    window_stride: Optional[int] = None  # seconds between window starts (default T: no overlap)
    batch: Optional[int] = None  # windows per engine call (default: the bundle's optimal batch)
    workers: int = 2  # decoding threads
    allow_missing_audio: bool = False  # decode a video without an audio track as silence instead of failing
    checkpoint: Optional[PathLike] = None  # weights for --engine torch
    providers: Optional[Sequence[str]] = None  # onnxruntime providers (default: by availability)
    threads: Optional[int] = None  # intra-op threads of the engine


@dataclass
class VideoResult:
    path: str
    duration: float
    seconds: int
    windows: list
    captions: dict
    timeline: dict
    warnings: list = field(default_factory=list)


@dataclass
class Failure:
    path: str
    error: str


@dataclass
class InferReport:
    bundle: Bundle
    engine: str
    precision: str
    engine_detail: str
    results: list = field(default_factory=list)
    failures: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    timings: dict = field(default_factory=dict)


@dataclass
class _Decoded:
    index: int
    path: str
    duration: float
    starts: list
    seconds: int
    frames: np.ndarray  # [W, T, 3, S, S]
    wave: np.ndarray  # [W, T, 32000]
    vis_caption: np.ndarray
    aud_caption: np.ndarray
    captions: dict
    warnings: list
    outputs: list = field(default_factory=list)  # per window: head outputs without the batch axis


def collect_videos(inputs: Sequence[PathLike]) -> list[str]:
    """Expand folders (their video files, sorted) and .txt lists; other paths are kept as given (bad ones fail
    later, one by one)."""
    out: list[str] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            out += [str(f) for f in sorted(p.iterdir()) if f.is_file() and f.suffix.lower() in VIDEO_EXTENSIONS]
        elif p.suffix.lower() == ".txt" and p.is_file():
            base = p.parent
            for line in p.read_text().splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    out.append(str(Path(line) if Path(line).is_absolute() else base / line))
        else:
            out.append(str(p))
    return out


class Pipeline:
    def __init__(self, bundle: Union[PathLike, Bundle], options: Optional[InferOptions] = None):
        self.options = opts = options or InferOptions()
        self.bundle = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle, opts.task)
        self.bundle.check_task(opts.task)
        self.model = load_model(self.bundle, opts.engine, opts.precision, opts.providers, opts.checkpoint, opts.threads)
        self.captions = CaptionSource(self.bundle, opts.captions)
        opt_batch = int((self.bundle.manifest.get("batch") or {}).get("opt", 1))
        self.batch = max(1, min(int(opts.batch or opt_batch), self.model.max_batch))
        try:
            plan_windows(0, self.bundle.segments, opts.window_stride)  # validates the stride early
        except ValueError as exc:
            raise CaeavError(f"--window-stride: {exc} (at most the window length)") from None

    # ---------------------------------------------------------------------------------------------- decoding

    def decode(self, index: int, path: str) -> _Decoded:
        from caeav.media import MediaWarning, decode_clip, probe

        b, opts = self.bundle, self.options
        info = probe(path)
        if info.video is None:
            raise CaeavError(f"{path}: has no video track")
        if info.audio is None and not opts.allow_missing_audio:
            raise CaeavError(f"{path}: has no audio track (the model needs sound; --allow-missing-audio decodes it "
                             "as silence)")
        starts, seconds = plan_windows(info.duration, b.segments, opts.window_stride)
        frames, wave, notes = [], [], []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MediaWarning)
            for start in starts:
                clip = decode_clip(path, segments=b.segments, size=b.image_size, start=float(start),
                                   sampling=b.sampling, strict=not opts.allow_missing_audio)
                frames.append(clip.frames)
                wave.append(clip.audio)
                notes += [w for w in clip.warnings if "past the end" not in w]
        if info.duration < b.segments:
            notes.append(f"{path}: {info.duration:.2f} s is shorter than the model's {b.segments}-s window; padded "
                         f"(last frame repeated, silent audio), {seconds} s reported")
        vis, aud, status = self.captions.features(path)
        if status["missing"]:
            notes.append(f"{path}: no {' or '.join(status['missing'])} caption in the cache; using the empty caption")
        return _Decoded(index, path, info.duration, starts, seconds, np.stack(frames), np.stack(wave), vis, aud,
                        status, list(dict.fromkeys(notes)))

    # ---------------------------------------------------------------------------------------------- running

    def _infer(self, queue: list) -> None:
        """Run the queued (video, window) pairs as one batch and hand each window its outputs."""
        frames = np.stack([d.frames[w] for d, w in queue])
        wave = np.stack([d.wave[w] for d, w in queue])
        vis = np.stack([d.vis_caption for d, _ in queue])
        aud = np.stack([d.aud_caption for d, _ in queue])
        outs = self.model.run(frames, wave, vis, aud)
        for i, (d, _) in enumerate(queue):
            d.outputs.append({k: v[i] for k, v in outs.items()})

    def _finish(self, d: _Decoded) -> VideoResult:
        b = self.bundle
        if b.task == "ave":
            count = d.outputs[0]["event"].shape[-1] if "event" in d.outputs[0] else \
                d.outputs[0]["segment_logits"].shape[-1] - 1
            timeline = ave_timeline(d.outputs, d.starts, d.seconds, b.segments, b.class_names(count))
        else:
            count = d.outputs[0]["global_prob"].shape[-1]
            threshold = float(b.postprocess.get("threshold", 0.5))
            timeline = avvp_timeline(d.outputs, d.starts, d.seconds, b.segments, b.class_names(count), threshold)
        windows = [{"start": s, "end": s + b.segments} for s in d.starts]
        return VideoResult(d.path, round(d.duration, 3), d.seconds, windows, d.captions, timeline, d.warnings)

    def run(self, videos: Sequence[PathLike], progress: Optional[Callable[[str], None]] = None) -> InferReport:
        """Process `videos` (expanded by `collect_videos`); `progress(path)` is called as each video finishes."""
        paths = collect_videos(videos)
        report = InferReport(self.bundle, self.model.engine, self.model.precision, self.model.describe(),
                             notes=list(self.model.notes))
        results: dict[int, VideoResult] = {}
        t_infer, t0 = 0.0, time.perf_counter()
        queue: list = []
        waiting: dict[int, _Decoded] = {}
        with ThreadPoolExecutor(max_workers=max(1, self.options.workers), thread_name_prefix="caeav-decode") as pool:
            ahead = max(2, 2 * self.options.workers)
            pending: deque = deque()
            todo = deque(enumerate(paths))
            while todo or pending:
                while todo and len(pending) < ahead:
                    i, p = todo.popleft()
                    pending.append((i, p, pool.submit(self.decode, i, p)))
                i, p, fut = pending.popleft()
                try:
                    d = fut.result()
                    waiting[i] = d
                    queue += [(d, w) for w in range(len(d.starts))]
                except Exception as exc:  # CaeavError, or an unexpected decoder failure: never stop a batch run
                    text = " ".join(str(exc).split())
                    report.failures.append(Failure(p, text if isinstance(exc, CaeavError)
                                                   else f"{type(exc).__name__}: {text}"))
                    if progress:
                        progress(p)
                while len(queue) >= self.batch or (queue and not todo and not pending):
                    t1 = time.perf_counter()
                    self._infer(queue[: self.batch])
                    t_infer += time.perf_counter() - t1
                    queue = queue[self.batch:]
                    for k in [k for k, dv in waiting.items() if len(dv.outputs) == len(dv.starts)]:
                        results[k] = self._finish(waiting.pop(k))
                        if progress:
                            progress(results[k].path)
        report.results = [results[k] for k in sorted(results)]
        report.timings = {"total_s": round(time.perf_counter() - t0, 3), "inference_s": round(t_infer, 3)}
        return report
