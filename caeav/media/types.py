"""Result types and constants of media decoding (torch-free)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

SAMPLE_RATE = 32000  # Hz: every model input waveform is mono at this rate (decisions D6)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class MediaWarning(UserWarning):
    """A clip decoded, but not completely: no audio track (silence used) or shorter than the window (padded)."""


@dataclass
class RawClip:
    """A decoded clip before normalisation: what the decoded-tensor cache stores.

    frames: uint8 [T, S, S, 3] RGB, already resized; audio: float32 [T, 32000] mono at 32 kHz.
    """

    frames: np.ndarray
    audio: np.ndarray
    duration: float  # seconds of the whole file
    has_audio: bool
    padded_seconds: float = 0.0  # how much of the window lay past the end of the file
    warnings: list = field(default_factory=list)
    start: float = 0.0
    frame_times: list = field(default_factory=list)  # seconds (from the window start's file origin) of each picked frame
    rotation: int = 0  # degrees counter-clockwise applied to show the frames upright
    st_frames: Optional[np.ndarray] = None  # AVVP's stream frames uint8 [T·F, S', S', 3] when asked for (decode_raw)


@dataclass
class ClipMedia:
    """Model inputs for one window of a clip (decisions D6).

    frames: float32 [T, 3, S, S], ImageNet-normalised RGB; audio: float32 [T, 32000], mono 32 kHz, one row per
    1-s segment.
    """

    frames: np.ndarray
    audio: np.ndarray
    duration: float
    has_audio: bool
    padded_seconds: float = 0.0
    warnings: list = field(default_factory=list)
    start: float = 0.0
    frame_times: list = field(default_factory=list)
    rotation: int = 0
    st_frames: Optional[np.ndarray] = None  # uint8 [T·F, S', S', 3], not normalised (`caeav.media.st_frames`)


@dataclass
class VideoInfo:
    width: int
    height: int
    fps: Optional[float]
    codec: str
    frames: int  # 0 when the container does not say


@dataclass
class AudioInfo:
    sample_rate: int
    channels: int
    codec: str


@dataclass
class MediaInfo:
    """What `probe` learns from the container headers, without decoding a frame."""

    path: str
    duration: float  # seconds
    format: str
    video: Optional[VideoInfo] = None
    audio: Optional[AudioInfo] = None
