"""Covering a video of any length with model windows of T one-second segments, and merging them back.

A video of duration d seconds has N = max(1, round-half-down(d)) seconds on its timeline (a trailing piece shorter
than half a second is dropped; a 1-s clip has 1). Windows start at 0, S, 2S, ... (S = the stride, default T: no
overlap) while they begin before N - T; the last one is moved back to end exactly at N (so it overlaps its
predecessor rather than running past the end), unless the video is shorter than T, in which case the single window
starting at 0 is padded by the decoder (last frame repeated, audio zero) and only its first N seconds are reported.

Merging (`merge_per_second`): every per-second quantity of every window is added to the seconds it covers and divided
by the number of windows covering each second, i.e. overlapping windows are averaged. A second covered by one window
keeps that window's value exactly, so a video of exactly T seconds gives the same numbers as a single model call.
Video-level quantities (AVE `event` logits, AVVP `global_prob`) are spread over the seconds of their window first.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np


def timeline_seconds(duration: float) -> int:
    return max(1, int(math.ceil(duration - 0.5)))


def plan_windows(duration: float, segments: int, stride: Optional[int] = None) -> tuple[list[int], int]:
    """(window start seconds, N timeline seconds) for a video of `duration` seconds (module docstring)."""
    stride = int(stride or segments)
    if stride < 1 or stride > segments:
        raise ValueError(f"window stride must be between 1 and {segments} seconds, got {stride}")
    n = timeline_seconds(duration)
    if n <= segments:
        return [0], n
    starts = list(range(0, n - segments, stride))
    starts.append(n - segments)
    return sorted(set(starts)), n


def merge_per_second(values: Sequence[np.ndarray], starts: Sequence[int], n: int) -> np.ndarray:
    """Average per-second arrays `values[w]` of shape [T, ...] placed at `starts[w]` onto an [n, ...] timeline."""
    first = np.asarray(values[0])
    total = np.zeros((n,) + first.shape[1:], dtype=np.float64)
    count = np.zeros(n, dtype=np.int64)
    for value, start in zip(values, starts):
        value = np.asarray(value, dtype=np.float64)
        stop = min(n, start + value.shape[0])
        total[start:stop] += value[: stop - start]
        count[start:stop] += 1
    if (count == 0).any():
        raise ValueError("the windows do not cover the timeline")
    out = total / count.reshape((n,) + (1,) * (total.ndim - 1))
    exact = count == 1  # keep single-window seconds bit-exact (float32 in, float32 out)
    for value, start in zip(values, starts):
        stop = min(n, start + np.asarray(value).shape[0])
        sel = np.flatnonzero(exact[start:stop])
        out[start + sel] = np.asarray(value)[sel]
    return out.astype(np.float32)


def spread(video_level: np.ndarray, segments: int) -> np.ndarray:
    """A window's video-level vector [C] as a per-second array [T, C] (to merge like the per-second ones)."""
    return np.broadcast_to(np.asarray(video_level)[None], (segments,) + np.asarray(video_level).shape)


def covering_window(starts: Sequence[int], segments: int, second: int) -> int:
    """Index of the first window (of `segments` seconds, starting at `starts`) that covers timeline second `second`."""
    for i, start in enumerate(starts):
        if start <= second < start + segments:
            return i
    raise ValueError(f"no window covers second {second}")
