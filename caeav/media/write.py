"""Writing small video files with PyAV (synthetic datasets, benchmarks and tests); torch-free.

Output is deterministic for the same inputs (single-threaded encoders, fixed timestamps), so a synthetic dataset
decodes to the same arrays every time it is generated.
"""

from __future__ import annotations

import os
from fractions import Fraction
from typing import Iterable, Optional, Sequence

import av
import numpy as np

from caeav.errors import MediaError


def write_video(
    path,
    frames: Iterable[np.ndarray],
    fps: float = 8.0,
    audio: Optional[np.ndarray] = None,
    sample_rate: int = 32000,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    audio_codec: str = "aac",
    frame_times: Optional[Sequence[float]] = None,
    rotation: Optional[int] = None,
    options: Optional[dict] = None,
    audio_options: Optional[dict] = None,
) -> None:
    """Encode uint8 [H, W, 3] RGB `frames` (and optional float32 `audio` [C, n] in [-1, 1]) into `path`.

    `frame_times` (seconds, increasing) gives each frame its own timestamp (variable frame rate); otherwise frame i
    shows at i / fps. `rotation` writes a display matrix (degrees counter-clockwise, as `VideoFrame.rotation` reads it
    back). The container is chosen from the file extension (.mp4, .mkv, .webm, .avi, ...). `options` / `audio_options`
    are the encoders' private options (e.g. {"preset": "veryfast"}, {"aac_coder": "fast"}).
    """
    fps_q = Fraction(fps).limit_denominator(1001)
    time_base = Fraction(1, 1000) if frame_times is not None else 1 / fps_q
    try:
        container = av.open(os.fspath(path), mode="w")
    except av.FFmpegError as exc:
        raise MediaError(f"{os.fspath(path)}: cannot be created ({exc})") from None
    stream = astream = None
    try:
        for i, rgb in enumerate(frames):
            if stream is None:
                stream = container.add_stream(codec, rate=fps_q, options=dict(options or {}))
                stream.height, stream.width = rgb.shape[:2]
                stream.pix_fmt = pix_fmt
                stream.codec_context.time_base = time_base
                stream.thread_count = 1
                if rotation is not None:
                    stream.set_display_rotation(rotation)
                astream = _add_audio(container, audio, sample_rate, audio_codec, audio_options)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb, dtype=np.uint8), format="rgb24")
            frame.pts = round(frame_times[i] * 1000) if frame_times is not None else i
            frame.time_base = time_base
            container.mux(stream.encode(frame))
        if stream is None:
            raise ValueError("write_video needs at least one frame")
        container.mux(stream.encode(None))
        if astream is not None:
            _encode_audio(container, astream, audio, sample_rate)
    except av.FFmpegError as exc:  # e.g. libx264 with yuv420p and an odd frame size
        raise MediaError(f"{os.fspath(path)}: cannot be encoded with {codec}/{pix_fmt} ({exc})") from None
    finally:
        container.close()


def _add_audio(container, audio, sample_rate: int, codec: str, options: Optional[dict]):
    if audio is None:
        return None
    channels = np.atleast_2d(audio).shape[0]
    stream = container.add_stream(codec, rate=sample_rate, options=dict(options or {}))
    stream.layout = {1: "mono", 2: "stereo"}.get(channels, f"{channels}c")
    return stream


def _encode_audio(container, stream, audio: np.ndarray, sample_rate: int) -> None:
    """PyAV converts each frame to the encoder's sample format and frame size itself."""
    data = np.ascontiguousarray(np.atleast_2d(audio), dtype=np.float32)
    layout = stream.layout.name
    for s in range(0, data.shape[1], 1024):
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data[:, s: s + 1024]), format="fltp", layout=layout)
        frame.sample_rate = sample_rate
        frame.pts = s
        frame.time_base = Fraction(1, sample_rate)
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))
