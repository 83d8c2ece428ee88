"""One video -> the model windows of a bundle (the pipeline's decoding threads), torch-free.

    video = decode_video(bundle, adapter, options, captions, index, path)   # Decoded, or CaeavError naming the file
    video = decode_video(..., stream=True)          # no window decoded yet: the pipeline streams them (WindowStream)
    for start, clip in video.windows:               # one ClipMedia at a time; MediaError if the first cannot decode
        video.add(start, clip, keep=False)          # its frame times and output slot; the caller holds the arrays
    video.end_windows()                             # final starts, duration, notes (truncation, padding)

What is decoded: the windows of `caeav.runtime.windows.plan_windows` (T seconds each, the bundle's frame sampling
rule, so every task sees the frames it was trained on), the caption features (`caeav.runtime.captions`: from the
cache, or asked of the caption endpoint while the main thread runs inference on earlier videos), and the adapter's
queries (AVQA: its questions) with their extra head inputs. An AVVP bundle with the R(2+1)D-18 stream also gets the stream's frames
(`Bundle.st_sampling`: LLP's 8 per second, 112²) from the same pass over the file, kept as uint8 until inference.

Duration: the container header's, unless the file holds less than it says. A file cut short (a download or a copy
that stopped, an mp4 whose index at the front still claims the full length) decodes only up to where its data ends:
the first window that runs past that point comes back padded (`caeav.media.decode_clip`'s `padded_seconds`: last
frame repeated, silence), and its start + T - padding is where the content really ends. When that is more than half
a second before the header's duration, the windows are planned again on the decoded duration (windows already
decoded are kept), the video reports that duration and timeline, and a note says the file is truncated. Streamed,
the same rule holds: `WindowStream` hands a window out only once no later truncation can drop it from the plan.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from caeav.errors import CaeavError, MediaError

from .windows import plan_windows

TRUNCATION_SLACK = 0.5  # seconds: less content than the header says by more than this is reported as truncated


@dataclass
class Decoded:
    """A decoded video waiting for (and then holding) its head outputs."""

    index: int
    path: str
    duration: float  # seconds of content (the decoded duration of a truncated file)
    starts: list  # window start seconds
    seconds: int  # timeline length N
    frames: Optional[np.ndarray]  # [W, T, 3, S, S] model frames (None: streamed, not kept)
    wave: Optional[np.ndarray]  # [W, T, 32000]
    frame_times: list  # [W][T] seconds (file time) of the frame each model frame shows
    size: tuple  # (width, height) of the upright video
    vis_caption: np.ndarray
    aud_caption: np.ndarray
    captions: dict
    warnings: list
    queries: list = field(default_factory=lambda: [None])
    feeds: list = field(default_factory=lambda: [{}])  # extra head inputs per query (None: not run)
    st_frames: Optional[np.ndarray] = None  # AVVP stream bundles: [W, T·F, S', S', 3] uint8, same decode as `frames`
    outputs: list = field(default_factory=list)  # outputs[w][q]: head outputs without the batch axis, or None
    done: int = 0  # windows whose head outputs are in
    windows: Optional[WindowStream] = None  # the windows still to come (None once `end_windows` ran)
    info: Optional[object] = None  # caeav.media.probe's answer (the frame size once the first window is in)
    _kept: list = field(default_factory=list)  # ClipMedia kept by `add(keep=True)` until `end_windows` stacks them
    _clip_warnings: list = field(default_factory=list)

    def __post_init__(self):
        if not self.outputs:
            self.outputs = [[None] * len(self.queries) for _ in self.starts]

    @property
    def complete(self) -> bool:
        return self.windows is None and self.done >= len(self.starts)

    def add(self, start: int, clip, keep: bool) -> None:
        """Window `start` (the next one `windows` handed out): its start, frame times and slot for outputs; its
        arrays too when `keep` (`frames`, `wave`, `st_frames` after `end_windows`), else the caller holds them."""
        if not self.starts:
            self.size = _upright_size(self.info, clip.rotation)
        self.starts.append(int(start))
        self.frame_times.append(list(clip.frame_times))
        self.outputs.append([None] * len(self.queries))
        self._clip_warnings += list(clip.warnings)
        if keep:
            self._kept.append(clip)

    def end_windows(self) -> None:
        """After the last window: the final timeline, duration and notes; the kept windows stacked."""
        stream, self.windows = self.windows, None
        self.seconds, self.duration = stream.seconds, round(stream.duration, 3)
        assert self.starts == list(stream.starts), "a window was handed out that the final plan does not hold"
        self.warnings = list(dict.fromkeys(stream.notes(self._clip_warnings) + self.warnings))
        kept, self._kept, self._clip_warnings = self._kept, [], []
        if kept:
            self.frames = np.stack([c.frames for c in kept])
            self.wave = np.stack([c.audio for c in kept])
            self.st_frames = np.stack([c.st_frames for c in kept]) if kept[0].st_frames is not None else None


def _window(bundle, options, path: str, start: float):
    from caeav.media import MediaWarning, decode_clip

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MediaWarning)
        return decode_clip(path, segments=bundle.segments, size=bundle.image_size, start=float(start),
                           sampling=bundle.sampling, strict=not options.allow_missing_audio, st=bundle.st_sampling)


class WindowStream:
    """The windows of one video decoded one at a time, in start order: `for start, clip in stream` (ClipMedia).

    The truncation rule of the module docstring, applied as the windows decode: `starts`, `seconds`, `duration` and
    `truncated` are final once the iteration ends. A window is handed out only when no truncation found later can
    drop it from the plan (a window starting T seconds after it decoded in full, or the end of the video), so every
    window handed out is one of the final `starts` and at most ceil(T / stride) + 1 decoded windows wait here."""

    def __init__(self, bundle, options, path: str, duration: float):
        self.bundle, self.options, self.path = bundle, options, path
        self.header_duration = self.duration = duration
        self.starts, self.seconds = plan_windows(duration, bundle.segments, options.window_stride)
        self.truncated = False

    def __iter__(self):
        T, held, last = self.bundle.segments, {}, -1
        real: Optional[float] = None
        for start in self.starts:
            try:
                clip = _window(self.bundle, self.options, self.path, start)
            except MediaError:
                if last < 0 and not held:
                    raise
                real = float(start)  # nothing decodes from here on: the data ended at (or just before) this window
                break
            held[start] = clip
            end = start + T - clip.padded_seconds
            if clip.padded_seconds > 0 and end < self.duration - TRUNCATION_SLACK:
                real = round(end, 3)
                break
            while held and next(iter(held)) + T <= start:  # a window T s later decoded in full: this one stays
                last = next(iter(held))
                yield last, held.pop(last)
        if real is not None:
            self.starts, self.seconds = plan_windows(real, T, self.options.window_stride)
            self.duration, self.truncated = real, True
        for start in (s for s in self.starts if s > last):
            clip = held.pop(start) if start in held else _window(self.bundle, self.options, self.path, start)
            yield start, clip

    def notes(self, clip_warnings: list) -> list:
        """The video's notes about its windows (after the iteration): the decoder's, truncation, padding."""
        path, duration, seconds = self.path, self.duration, self.seconds
        notes = [w for w in clip_warnings if "past the end" not in w]
        if self.truncated:
            notes.append(f"{path}: the file is truncated: its header says {self.header_duration:.2f} s but only "
                         f"{duration:.2f} s decode; {seconds} s reported")
        if duration < self.bundle.segments:
            notes.append(f"{path}: {duration:.2f} s is shorter than the model's {self.bundle.segments}-s window; "
                         f"padded (last frame repeated, silent audio), {seconds} s reported")
        return notes


def decode_windows(bundle, options, path: str, duration: float) -> tuple[list, int, list, float, bool]:
    """(starts, N seconds, one ClipMedia per window, content duration, truncated?) (module docstring)."""
    stream = WindowStream(bundle, options, path, duration)
    clips = [clip for _, clip in stream]
    return stream.starts, stream.seconds, clips, stream.duration, stream.truncated


def _upright_size(info, rotation: int) -> tuple[int, int]:
    w, h = int(info.video.width), int(info.video.height)
    return (h, w) if int(round(rotation / 90.0)) % 2 else (w, h)


def decode_video(bundle, adapter, options, captions, index: int, path: str, stream: bool = False) -> Decoded:
    """Decode `path` for the pipeline (module docstring); CaeavError (naming the file) when it cannot be used.
    `stream`: decode no window yet; the caller iterates `Decoded.windows` (`Decoded.add`, `Decoded.end_windows`)."""
    from caeav.media import probe

    info = probe(path)
    if info.video is None:
        raise CaeavError(f"{path}: has no video track")
    if info.audio is None and not options.allow_missing_audio:
        raise CaeavError(f"{path}: has no audio track (the model needs sound; --allow-missing-audio decodes it "
                         "as silence)")
    windows = WindowStream(bundle, options, path, info.duration)
    notes: list = []  # the windows' own notes come first, once they are decoded (Decoded.end_windows)
    vis, aud, status = captions.features(path, options)  # may ask the caption endpoint: overlaps with inference
    if status["missing"] and not getattr(options, "caption_endpoint", None):  # endpoint trouble: one run note
        notes.append(f"{path}: no {' or '.join(status['missing'])} caption in the cache; using the empty caption")
    queries, query_notes = adapter.queries(bundle, options, path)
    feeds = [adapter.head_feeds(bundle, q) for q in queries]
    video = Decoded(index, path, round(info.duration, 3), [], windows.seconds, None, None, [], (0, 0), vis, aud,
                    status, notes + list(query_notes), list(queries), feeds, windows=windows, info=info)
    if not stream:
        for start, clip in windows:
            video.add(start, clip, keep=True)
        video.end_windows()
    return video
