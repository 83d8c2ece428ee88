"""Opening media files with PyAV, with every failure turned into `MediaError` naming the file; `probe`."""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator, Optional

import av

from caeav.errors import MediaError

from .types import AudioInfo, MediaInfo, VideoInfo

# What PyAV/FFmpeg raise for unreadable input. av.FFmpegError covers InvalidDataError, EOFError, etc.
DECODE_ERRORS = (av.FFmpegError, OSError, ValueError, EOFError, UnicodeDecodeError, OverflowError, IndexError)


def media_error(path, reason: str) -> MediaError:
    return MediaError(f"{os.fspath(path)}: {reason}")


def describe(exc: BaseException) -> str:
    """A short reason from a PyAV/OS exception, without the file name FFmpeg repeats."""
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())


@contextmanager
def open_media(path) -> Iterator["av.container.InputContainer"]:
    """Open `path` for reading; MediaError (naming the file) if it is missing, empty or not a media file."""
    spath = os.fspath(path)
    if not os.path.exists(spath):
        raise media_error(spath, "no such file")
    if os.path.isdir(spath):
        raise media_error(spath, "is a directory, not a media file")
    if os.path.getsize(spath) == 0:
        raise media_error(spath, "is empty (0 bytes)")
    try:
        container = av.open(spath, mode="r")
    except DECODE_ERRORS as exc:
        raise media_error(spath, f"cannot be opened as audio/video ({describe(exc)})") from None
    try:
        yield container
    except DECODE_ERRORS as exc:
        raise media_error(spath, f"cannot be decoded ({describe(exc)})") from None
    finally:
        container.close()


def container_start(container) -> float:
    """Seconds of the file's time origin (the earliest stream start); timestamps are reported relative to it."""
    if container.start_time is not None:
        return container.start_time / av.time_base
    starts = [float(s.start_time * s.time_base) for s in container.streams if s.start_time is not None and s.time_base]
    return min(starts) if starts else 0.0


def is_still_image(container) -> bool:
    """True for FFmpeg's picture demuxers (png_pipe, jpeg_pipe, image2, ...): a picture renamed .mp4 is not a video."""
    return container.format.name in ("image2", "image2pipe") or container.format.name.endswith("_pipe")


def stream_fps(stream) -> Optional[float]:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            value = float(rate)
            if 0.1 < value < 1000:
                return value
    return None


def container_duration(container) -> float:
    """Seconds from the file origin to its end, from the headers; a packet scan when the headers do not say."""
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    ends = []
    for s in container.streams:
        if s.duration and s.time_base:
            start = s.start_time or 0
            ends.append(float((start + s.duration) * s.time_base))
    origin = container_start(container)
    if ends:
        return max(ends) - origin
    last = 0.0
    for packet in container.demux():
        if packet.pts is not None and packet.time_base:
            last = max(last, float((packet.pts + (packet.duration or 0)) * packet.time_base))
    container.seek(0)
    return max(0.0, last - origin)


def probe(path) -> MediaInfo:
    """Duration and streams of a media file, read from its headers (no frame is decoded)."""
    with open_media(path) as c:
        video = audio = None
        if c.streams.video:
            v = c.streams.video[0]
            video = VideoInfo(v.codec_context.width, v.codec_context.height, stream_fps(v), v.codec_context.name,
                              int(v.frames or 0))
        if c.streams.audio:
            a = c.streams.audio[0]
            audio = AudioInfo(int(a.codec_context.sample_rate or 0), int(a.codec_context.channels or 0),
                              a.codec_context.name)
        return MediaInfo(os.fspath(path), container_duration(c), c.format.name, video, audio)
