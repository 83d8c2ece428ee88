"""Decode a window of a video file into model inputs (decisions D6), torch-free.

`decode_clip(path, segments=T, size=S, start=0.0)` returns `ClipMedia`: frames float32 [T, 3, S, S] (ImageNet
normalised) and audio float32 [T, 32000] (mono 32 kHz). `decode_raw` returns the same before normalisation
(uint8 frames), which is what the decoded-tensor cache stores.

One demux pass reads both streams from the window start (a keyframe seek when start > 0) and stops as soon as the T
frames and the T seconds of audio are known. Every frame is decoded (H.264 needs it), but only the T picked frames are
converted to RGB and resized, so a 10-s 720p clip costs little more than its decode (benchmarks/decode.py). Frames
are picked by presentation timestamp (see `sampling.py`), so variable frame rate is handled; the display rotation
(display matrix, or a legacy ``rotate`` tag) is applied before the resize.

`st=STSampling(...)` adds a second sampling of the same decode: AVVP's R(2+1)D-18 frames (`caeav.media.st_frames`,
8 per second, bilinear 112²), picked from the frames the pass decodes anyway and converted as soon as each is
picked (`ConvertingPicker`), so a 10-s window holds at most one extra decoded frame and is decoded once.
"""

from __future__ import annotations

import warnings
from typing import Optional

import av
import numpy as np

from .audio import AudioWindow
from .container import (container_duration, container_start, describe, is_still_image, media_error, open_media,
                        stream_fps)
from .gate import NonRefGate
from .preprocess import normalize_frames, resize_rgb, upright
from .sampling import DEFAULT_FPS, TIME_EPS, frame_instants
from .st_frames import STSampling, st_instants
from .types import SAMPLE_RATE, ClipMedia, MediaWarning, RawClip


class FramePicker:
    """Assigns to each instant the frame displayed at it: the last frame whose timestamp is <= the instant."""

    def __init__(self, instants: list[float]):
        self.instants = instants
        self.picked: list = [None] * len(instants)
        self.k = 0
        self.prev = None  # (time, frame) of the latest decoded frame
        self.end = 0.0  # end of the latest frame, seconds from the window start
        self.damaged = 0  # packets (of either stream) that failed to decode and were skipped
        self.damage = ""

    @property
    def done(self) -> bool:
        return self.k >= len(self.instants)

    def add(self, t: float, frame, frame_duration: float) -> None:
        while self.k < len(self.instants) and t > self.instants[self.k] + TIME_EPS:
            self.picked[self.k] = self.prev if self.prev is not None else (t, frame)
            self.k += 1
        self.prev = (t, frame)
        self.end = max(self.end, t + frame_duration)

    def finish(self) -> None:
        """End of stream: the instants left are past the last frame, which is repeated (padding)."""
        for k in range(self.k, len(self.instants)):
            self.picked[k] = self.prev
        self.k = len(self.instants)


class ConvertingPicker(FramePicker):
    """A FramePicker whose picks are converted (upright, resized) by `convert` and released right away: for many
    instants (AVVP's stream: 80 per window), where holding every picked decoded frame would cost ~1 MB each."""

    def __init__(self, instants: list[float], size: int, resample: str):
        super().__init__(instants)
        self.out = np.empty((len(instants), size, size, 3), dtype=np.uint8)
        self.size, self.resample = size, resample
        self._converted = 0
        self._last: tuple = (None, None)  # (decoded frame, its converted image): consecutive picks share a frame

    def convert(self, stream) -> None:
        """Convert the frames picked since the last call into `out`; keep only their times in `picked`."""
        for k in range(self._converted, self.k):
            t, frame = self.picked[k]
            if frame is not self._last[0]:
                rgb = upright(frame.to_ndarray(format="rgb24"), _rotation(stream, frame))
                self._last = (frame, resize_rgb(rgb, self.size, self.resample))
            self.out[k] = self._last[1]
            self.picked[k] = (t, None)
        self._converted = self.k


def _rotation(stream, frame) -> int:
    """Counter-clockwise degrees that make the frame upright: display matrix first, legacy `rotate` tag second."""
    try:
        degrees = int(frame.rotation)
    except (AttributeError, TypeError, ValueError):
        degrees = 0
    if degrees == 0:
        tag = stream.metadata.get("rotate")
        if tag and tag.lstrip("-").isdigit():
            degrees = -int(tag)  # the tag is clockwise
    return degrees


def _to_model_rgb(picked: list, size: int, rotation: int) -> np.ndarray:
    """Convert each distinct picked frame once: RGB, upright, bicubic resize -> uint8 [T, S, S, 3]."""
    cache: dict[int, np.ndarray] = {}
    out = np.empty((len(picked), size, size, 3), dtype=np.uint8)
    for k, (_, frame) in enumerate(picked):
        key = id(frame)
        if key not in cache:
            cache[key] = resize_rgb(upright(frame.to_ndarray(format="rgb24"), rotation), size)
        out[k] = cache[key]
    return out


def _decode_packet(stream, packet, picker: FramePicker) -> list:
    """Decode one packet; a damaged packet is skipped and counted (FFmpeg conceals the damage in later frames)."""
    try:
        return stream.decode(packet)
    except (av.InvalidDataError, av.error.PatchWelcomeError) as exc:
        picker.damaged += 1
        picker.damage = describe(exc)
        return []


def _decode_window(container, path, segments: int, start: float, sampling: str, drop_nonref: bool,
                   st: Optional[STSampling] = None):
    video = container.streams.video[0]
    audio_stream = container.streams.audio[0] if container.streams.audio else None
    video.thread_type = "AUTO"
    origin = container_start(container)
    duration = container_duration(container)
    if duration > 0 and start >= duration:
        raise media_error(path, f"window start {start:g} s is past the end of the file ({duration:.2f} s)")
    fps = stream_fps(video)
    frame_period = 1.0 / (fps or DEFAULT_FPS)
    picker = FramePicker(frame_instants(segments, sampling, fps))
    extra = ConvertingPicker(st_instants(segments, st), st.size, "bilinear") if st is not None else None
    pickers = [picker] + ([extra] if extra is not None else [])
    instants = sorted(set(picker.instants + (extra.instants if extra is not None else [])))
    gate = NonRefGate(video.codec_context, instants, 1.5 * frame_period) if drop_nonref else None
    window = AudioWindow(segments, origin + start) if audio_stream is not None else None
    if start > 0:
        container.seek(int((origin + start) * av.time_base), backward=True, any_frame=False)

    count, padded = 0, 0.0
    streams = [video] + ([audio_stream] if audio_stream is not None else [])
    for packet in container.demux(*streams):
        if packet.stream.index == video.index:
            if all(p.done for p in pickers):
                continue
            if gate is not None:
                gate.before_packet(None if packet.pts is None else float(packet.pts * packet.time_base) - origin - start)
            for frame in _decode_packet(video, packet, picker):
                t = frame.time if frame.pts is not None else count * frame_period
                count += 1
                for p in pickers:
                    p.add(t - origin - start, frame, frame_period)
            if extra is not None:
                extra.convert(video)
        elif not window.done:
            for frame in _decode_packet(audio_stream, packet, picker):
                window.add(frame)
        if all(p.done for p in pickers) and (window is None or window.done):
            break
    else:  # end of file before the window was full
        if window is not None:
            window.add(None)
        if picker.prev is None:
            raise media_error(path, "has no decodable video frames")
        content_end = max(picker.end, window.end_seconds if window is not None else 0.0)
        for p in pickers:
            p.finish()
        if extra is not None:
            extra.convert(video)
        padded = round(max(0.0, segments - content_end), 3)
    exact = gate is None or all(gate.exact(p.picked, p.instants) for p in pickers)
    return picker, window, duration, padded, exact, extra


def decode_raw(path, segments: int = 10, size: int = 192, start: float = 0.0, sampling: str = "centre",
               strict: bool = False, st: Optional[STSampling] = None) -> RawClip:
    """Decode T frames (uint8 [T, S, S, 3], resized) and T seconds of mono 32 kHz audio from `start` seconds.

    MediaError (naming the file) for a missing, empty, corrupt or non-video file, a file without a video track, a
    start past the end, and, with strict=True, a file without an audio track (otherwise: silence and a warning).
    A window that runs past the end of the file is padded (last frame repeated, audio zero) and reported in
    `padded_seconds` and `warnings`. `st`: also AVVP's stream frames from the same pass (`RawClip.st_frames`).
    """
    if start < 0:
        raise ValueError("start must be >= 0")
    for drop_nonref in (True, False):  # the second pass only when dropping frames could have changed the picks
        with open_media(path) as container:
            if not container.streams.video:
                raise media_error(path, "has no video track")
            if is_still_image(container):
                raise media_error(path, f"is a still image ({container.format.name}), not a video")
            if strict and not container.streams.audio:
                raise media_error(path, "has no audio track (strict decoding)")
            picker, window, duration, padded, exact, extra = _decode_window(container, path, segments, start,
                                                                            sampling, drop_nonref, st)
            if not exact:
                continue
            rotation = _rotation(container.streams.video[0], picker.picked[0][1])
            frames = _to_model_rgb(picker.picked, size, rotation)
            break
    notes = []
    if window is None:
        notes.append(f"{path}: no audio track; using silence")
    if picker.damaged:
        notes.append(f"{path}: {picker.damaged} damaged packet(s) skipped ({picker.damage})")
    if padded > 0:
        notes.append(f"{path}: the {segments}-s window from {start:g} s runs {padded:g} s past the end of the file; "
                     "last frame repeated, audio zero-padded")
    for note in notes:
        warnings.warn(note, MediaWarning, stacklevel=3)
    audio = window.samples if window is not None else np.zeros(segments * SAMPLE_RATE, dtype=np.float32)
    return RawClip(
        frames=frames,
        audio=audio.reshape(segments, SAMPLE_RATE),
        duration=duration,
        has_audio=window is not None,
        padded_seconds=padded,
        warnings=notes,
        start=start,
        frame_times=[round(start + t, 6) for t, _ in picker.picked],
        rotation=rotation,
        st_frames=extra.out if extra is not None else None,
    )


def decode_clip(path, segments: int = 10, size: int = 192, start: float = 0.0, sampling: str = "centre",
                strict: bool = False, st: Optional[STSampling] = None) -> ClipMedia:
    """Model inputs for the window [start, start + segments) s of a video file (see `decode_raw` for errors).

    `sampling` is ``centre`` (one frame at the middle of each 1-s segment: AVVP, AVS) or ``linspace`` (frames spread
    from the first to the last of the window: AVE, AVQA); `sampling_for_task` gives a task's rule.
    """
    raw = decode_raw(path, segments, size, start, sampling, strict, st)
    return to_model_inputs(raw)


def to_model_inputs(raw: RawClip) -> ClipMedia:
    """Normalise a `RawClip` into model inputs."""
    return ClipMedia(
        frames=normalize_frames(raw.frames),
        audio=np.asarray(raw.audio, dtype=np.float32),
        duration=raw.duration,
        has_audio=raw.has_audio,
        padded_seconds=raw.padded_seconds,
        warnings=list(raw.warnings),
        start=raw.start,
        frame_times=list(raw.frame_times),
        rotation=raw.rotation,
        st_frames=raw.st_frames,
    )

