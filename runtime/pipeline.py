"""Videos -> task results (AVE/AVVP events, AVS masks, AVQA answers): decode, captions, the graphs, the adapter.

    pipe = Pipeline("bundle/", InferOptions(engine="ort", captions="captions.sqlite"))
    report = pipe.run(["a.mp4", "clips/"])       # folders and .txt lists (one path per line) are expanded
    report.results[0].timeline["per_second"]     # see caeav.runtime.results for the JSON schema

The pipeline knows no task: the bundle's adapter (`caeav.runtime.tasks`) says what each video asks of the head
(`queries`, `head_feeds`), turns the outputs into a result (`finish`) and writes its files (`write_files`). Videos
are decoded on a thread pool (PyAV releases the GIL; `caeav.runtime.decoding`) while the engine runs on the main
thread, and streamed (`caeav.runtime.streaming`): each video's windows are decoded a bounded number ahead of the
engine and their frames and audio released as soon as the engine has seen them, so memory does not grow with the
video's length (except with `--plot`, which draws the whole video's frames and audio and keeps them); only each
window's head outputs (a few numbers per second) stay until the video's timeline is merged. The windows of all
videos are batched together up to the bundle's batch size, in the same order and batches as when every video was
decoded whole (`decode`), so the results are the same; the encoder runs once per window and the head once per
(window, query). A video that cannot be decoded (missing, corrupt, no video track, no
audio track unless `allow_missing_audio`) becomes a `Failure` and the run goes on.

Results are handed to `on_result` as each video finishes (the CLI appends them to a JSON Lines file), and the report
passed in as `report` holds every finished video even when `run` is interrupted: on KeyboardInterrupt (Ctrl-C, or
SIGTERM as `caeav.errors.Terminated`) the report is marked `interrupted`, decoding that has not started is
cancelled, and the exception goes on to the caller.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np

from caeav.errors import CaeavError

from .bundle import Bundle
from .captions import CaptionSource
from .decoding import Decoded, decode_video
from .engine import load_model
from .streaming import WindowFeed
from .windows import plan_windows

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".ts")
PathLike = Union[str, os.PathLike]


@dataclass
class InferOptions:
    task: Optional[str] = None  # expected task; None accepts the bundle's
    engine: str = "auto"
    precision: str = "fp32"
    captions: Optional[PathLike] = None  # caption cache, "none" or None (empty captions)
    caption_endpoint: Optional[object] = None  # URL or caption_endpoint.EndpointSettings: caption uncached clips
    window_stride: Optional[int] = None  # seconds between window starts (default T: no overlap)
    batch: Optional[int] = None  # windows per engine call (default: the bundle's optimal batch)
    workers: int = 2  # decoding threads
    allow_missing_audio: bool = False  # decode a video without an audio track as silence instead of failing
    checkpoint: Optional[PathLike] = None  # weights for --engine torch
    providers: Optional[Sequence[str]] = None  # onnxruntime providers (default: by availability)
    threads: Optional[int] = None  # intra-op threads of the engine
    plot: Optional[PathLike] = None  # keep what `caeav.runtime.plot` draws (filmstrip, spectrogram) per video
    masks: Optional[PathLike] = None  # AVS: folder of one binary PNG per sampled frame
    overlay: Optional[PathLike] = None  # AVS: video with the masks tinted over the frames
    questions: list = field(default_factory=list)  # AVQA: free-text questions asked of every video
    questions_file: Optional[PathLike] = None  # AVQA: one question per line, or JSONL {video, question}


@dataclass
class VideoResult:
    path: str
    duration: float
    seconds: int
    windows: list
    captions: dict
    timeline: dict
    warnings: list = field(default_factory=list)
    index: int = -1  # position among the run's inputs (not in the JSON)
    figure: Optional[dict] = None  # what --plot draws for this video (caeav.runtime.plot.figure_data)


@dataclass
class Failure:
    path: str
    error: str
    index: int = -1


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
    interrupted: bool = False  # the run was stopped (SIGINT / SIGTERM) before every video was done


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
        self.adapter = self.bundle.adapter
        self.adapter.check_options(self.bundle, opts)  # before the model loads: a wrong option costs nothing
        try:
            plan_windows(0, self.bundle.segments, opts.window_stride)  # validates the stride early
        except ValueError as exc:
            raise CaeavError(f"--window-stride: {exc} (at most the window length)") from None
        self.model = load_model(self.bundle, opts.engine, opts.precision, opts.providers, opts.checkpoint, opts.threads)
        self.captions = CaptionSource(self.bundle, opts.captions)
        opt_batch = int((self.bundle.manifest.get("batch") or {}).get("opt", 1))
        self.batch = max(1, min(int(opts.batch or opt_batch), self.model.max_batch))
        self._single = True
        self.peak_windows = 0  # the most windows decoded and not yet through the engine at once, in the last run

    def new_report(self) -> InferReport:
        return InferReport(self.bundle, self.model.engine, self.model.precision, self.model.describe(),
                           notes=list(self.model.notes))

    # ---------------------------------------------------------------------------------------------- running

    def decode(self, index: int, path: str) -> Decoded:
        """Every window of one video at once (`Decoded.frames`, `wave`); `run` streams them instead."""
        return decode_video(self.bundle, self.adapter, self.options, self.captions, index, path)

    def _infer(self, queue: list) -> None:
        """Run the queued (video, window, ClipMedia) triples: the encoder once for all, the head once per (window,
        query)."""
        st_clips = None
        if self.model.has_stream:  # normalised per batch: a window keeps its stream frames as uint8
            from caeav.media.st_frames import st_clip_input

            sampling, T = self.bundle.st_sampling, self.bundle.segments
            st_clips = np.stack([st_clip_input(c.st_frames, T, sampling) for _, _, c in queue])
        feats = self.model.encode(np.stack([c.frames for _, _, c in queue]), np.stack([c.audio for _, _, c in queue]),
                                  np.stack([d.vis_caption for d, _, _ in queue]),
                                  np.stack([d.aud_caption for d, _, _ in queue]), st_clips)
        pairs = [(i, q) for i, (d, _, _) in enumerate(queue) for q, feed in enumerate(d.feeds) if feed is not None]
        for s in range(0, len(pairs), self.batch):
            chunk = pairs[s:s + self.batch]
            extra = _stack_feeds([queue[i][0].feeds[q] for i, q in chunk])
            outs = self.model.head(self.model.take(feats, [i for i, _ in chunk], len(queue)), extra)
            for (i, q), out in zip(chunk, self.model.items(outs, len(chunk))):
                d, w, _ = queue[i]
                d.outputs[w][q] = out
        for d, _, _ in queue:
            d.done += 1

    def _finish(self, d: Decoded) -> VideoResult:
        b = self.bundle
        timeline = self.adapter.finish(b, d, d.outputs)
        windows = [{"start": s, "end": s + b.segments} for s in d.starts]
        result = VideoResult(d.path, d.duration, d.seconds, windows, d.captions, timeline, list(d.warnings), d.index)
        if self.options.plot:
            from .plot import figure_data

            result.figure = figure_data(d, result, self.adapter)
        result.warnings += self.adapter.write_files(result, self.options, b, single=self._single)
        return result

    def run(self, videos: Sequence[PathLike], progress: Optional[Callable[[str], None]] = None,
            report: Optional[InferReport] = None, on_result: Optional[Callable] = None) -> InferReport:
        """Process `videos` (expanded by `collect_videos`) into `report` (a new one by default), which is returned.
        `progress(path)` and `on_result(VideoResult | Failure)` are called as each video finishes (module doc)."""
        paths = collect_videos(videos)
        report = report if report is not None else self.new_report()
        self._single = len(paths) == 1
        t0, clock = time.perf_counter(), {"infer": 0.0}

        def done(item) -> None:
            (report.results if isinstance(item, VideoResult) else report.failures).append(item)
            if on_result:
                on_result(item)
            if progress:
                progress(item.path)

        try:
            self._loop(paths, done, clock)
        except KeyboardInterrupt:
            report.interrupted = True
            raise
        finally:
            report.results.sort(key=lambda r: r.index)
            report.failures.sort(key=lambda f: f.index)
            report.timings = {"total_s": round(time.perf_counter() - t0, 3), "inference_s": round(clock["infer"], 3)}
        return report

    def _loop(self, paths: list, done: Callable, clock: dict) -> None:
        """Stream the windows (`caeav.runtime.streaming`), batch them, finish each video as its last window is in."""
        queue: list = []  # (video, window index, ClipMedia) in the run's order, fewer than `batch` between calls
        waiting: dict[int, Decoded] = {}

        def infer(final: bool) -> None:
            nonlocal queue
            while len(queue) >= self.batch or (final and queue):
                t1 = time.perf_counter()
                self._infer(queue[: self.batch])
                clock["infer"] += time.perf_counter() - t1
                feed.release(min(len(queue), self.batch))
                queue = queue[self.batch:]  # the windows' arrays go with them
                finish()

        def finish() -> None:
            for k in [k for k, dv in waiting.items() if dv.complete]:
                done(self._finish(waiting.pop(k)))

        keep = bool(self.options.plot)  # --plot draws frames and audio of the whole video: keep them
        feed = WindowFeed(self, paths)
        with feed:
            for kind, i, p, item in feed:
                if kind == "video":
                    waiting[i] = item
                elif kind == "window":
                    d = waiting[i]
                    d.add(item[0], item[1], keep)
                    queue.append((d, len(d.starts) - 1, item[1]))
                    infer(final=False)
                elif kind == "end":
                    waiting[i].end_windows()
                    infer(final=feed.last(i))
                    finish()
                else:  # CaeavError, or an unexpected decoder failure: never stop a batch run
                    gone = waiting.pop(i, None)
                    feed.release(sum(1 for d, _, _ in queue if d is gone))
                    queue = [e for e in queue if e[0] is not gone]
                    done(Failure(p, _failure_text(item), i))
                    infer(final=feed.last(i))
        self.peak_windows = feed.peak


def _failure_text(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return text if isinstance(exc, CaeavError) else f"{type(exc).__name__}: {text}"


def _stack_feeds(feeds: list) -> dict:
    """Per-query extra head inputs (no batch axis) -> one batch."""
    keys = list(feeds[0]) if feeds else []
    return {k: np.stack([np.asarray(f[k]) for f in feeds]) for k in keys}
