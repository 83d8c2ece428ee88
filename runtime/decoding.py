"""One video -> the model windows of a bundle (the pipeline's decoding threads), torch-free.

    video = decode_video(bundle, adapter, options, captions, index, path)   # Decoded, or CaeavError naming the file

What is decoded: the windows of `caeav.runtime.windows.plan_windows` (T seconds each, the bundle's frame sampling
rule, so every task sees the frames it was trained on), the caption features, and the adapter's queries (AVQA: its
questions) with their extra head inputs. An AVVP bundle with the R(2+1)D-18 stream also gets the stream's frames
(`Bundle.st_sampling`: LLP's 8 per second, 112²) from the same pass over the file, kept as uint8 until inference.

Duration: the container header's, unless the file holds less than it says. A file cut short (a download or a copy
that stopped, an mp4 whose index at the front still claims the full length) decodes only up to where its data ends:
the first window that runs past that point comes back padded (`caeav.media.decode_clip`'s `padded_seconds`: last
frame repeated, silence), and its start + T - padding is where the content really ends. When that is more than half
a second before the header's duration, the windows are planned again on the decoded duration (windows already
decoded are kept), the video reports that duration and timeline, and a note says the file is truncated.
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
    frames: np.ndarray  # [W, T, 3, S, S] model frames
    wave: np.ndarray  # [W, T, 32000]
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

    def __post_init__(self):
        if not self.outputs:
            self.outputs = [[None] * len(self.queries) for _ in self.starts]

    @property
    def complete(self) -> bool:
        return self.done >= len(self.starts)


def _window(bundle, options, path: str, start: float):
    from caeav.media import decode_clip

    return decode_clip(path, segments=bundle.segments, size=bundle.image_size, start=float(start),
                       sampling=bundle.sampling, strict=not options.allow_missing_audio, st=bundle.st_sampling)


def decode_windows(bundle, options, path: str, duration: float) -> tuple[list, int, list, float, bool]:
    """(starts, N seconds, one ClipMedia per window, content duration, truncated?) (module docstring)."""
    T = bundle.segments
    starts, seconds = plan_windows(duration, T, options.window_stride)
    clips: dict = {}
    real: Optional[float] = None
    for start in starts:
        try:
            clip = _window(bundle, options, path, start)
        except MediaError:
            if not clips:
                raise
            real = float(start)  # nothing decodes from here on: the data ended at (or just before) this window
            break
        clips[start] = clip
        end = start + T - clip.padded_seconds
        if clip.padded_seconds > 0 and end < duration - TRUNCATION_SLACK:
            real = round(end, 3)
            break
    if real is None:
        return starts, seconds, [clips[s] for s in starts], duration, False
    starts, seconds = plan_windows(real, T, options.window_stride)
    for start in starts:
        if start not in clips:
            clips[start] = _window(bundle, options, path, start)
    return starts, seconds, [clips[s] for s in starts], real, True


def _upright_size(info, rotation: int) -> tuple[int, int]:
    w, h = int(info.video.width), int(info.video.height)
    return (h, w) if int(round(rotation / 90.0)) % 2 else (w, h)


def decode_video(bundle, adapter, options, captions, index: int, path: str) -> Decoded:
    """Decode `path` for the pipeline (module docstring); CaeavError (naming the file) when it cannot be used."""
    from caeav.media import MediaWarning, probe

    info = probe(path)
    if info.video is None:
        raise CaeavError(f"{path}: has no video track")
    if info.audio is None and not options.allow_missing_audio:
        raise CaeavError(f"{path}: has no audio track (the model needs sound; --allow-missing-audio decodes it "
                         "as silence)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MediaWarning)
        starts, seconds, clips, duration, truncated = decode_windows(bundle, options, path, info.duration)
    notes = [w for clip in clips for w in clip.warnings if "past the end" not in w]
    if truncated:
        notes.append(f"{path}: the file is truncated: its header says {info.duration:.2f} s but only "
                     f"{duration:.2f} s decode; {seconds} s reported")
    if duration < bundle.segments:
        notes.append(f"{path}: {duration:.2f} s is shorter than the model's {bundle.segments}-s window; padded "
                     f"(last frame repeated, silent audio), {seconds} s reported")
    vis, aud, status = captions.features(path)
    if status["missing"]:
        notes.append(f"{path}: no {' or '.join(status['missing'])} caption in the cache; using the empty caption")
    queries, query_notes = adapter.queries(bundle, options, path)
    feeds = [adapter.head_feeds(bundle, q) for q in queries]
    return Decoded(index, path, round(duration, 3), starts, seconds, np.stack([c.frames for c in clips]),
                   np.stack([c.audio for c in clips]), [list(c.frame_times) for c in clips],
                   _upright_size(info, clips[0].rotation), vis, aud, status,
                   list(dict.fromkeys(notes + list(query_notes))), list(queries), feeds,
                   st_frames=np.stack([c.st_frames for c in clips]) if clips[0].st_frames is not None else None)
