"""Which instants of a clip become the T frames (architecture.md §1).

Two rules, both defined on the time line (presentation timestamps), so variable frame rate and dropped frames do not
shift them; the frame chosen for an instant t is the one *displayed* at t (the last frame whose timestamp is <= t).

* ``linspace`` (AVE, MUSIC-AVQA): the authors extract every frame of the 10-s clip and take frame indices
  ``int(linspace(1, N, T))`` (AVE dataloader.py:163-171). For a clip of T seconds at f frames/s, frame index i shows at
  i/f, so the same frames are the ones displayed at ``t_k = k (T - 1/f) / (T - 1)``, k = 0..T-1: from the first frame
  to the last one. We use that time form with f = the stream's average rate.
* ``centre`` (LLP/AVVP, AVSBench): one frame per 1-s segment. The community extracts at 1 frame/s (frames
  00000001..00000010.jpg), which shows approximately the start of each second; we take the frame at the *centre* of
  each segment, t_k = k + 0.5, the frame most representative of the segment's audio, as the task brief decided.

All instants are offsets from the window start (seconds from the file's time origin).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

SAMPLINGS = ("linspace", "centre")
TASK_SAMPLING = {"ave": "linspace", "avqa": "linspace", "avvp": "centre", "avs_s4": "centre", "avs_ms3": "centre"}
TASK_SEGMENTS = {"ave": 10, "avqa": 10, "avvp": 10, "avs_s4": 5, "avs_ms3": 5}
DEFAULT_FPS = 25.0
TIME_EPS = 1e-6  # seconds of float slack when comparing a frame timestamp with an instant


def sampling_for_task(task: str) -> str:
    """The frame sampling rule a task uses (``linspace`` or ``centre``)."""
    try:
        return TASK_SAMPLING[task]
    except KeyError:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASK_SAMPLING)}") from None


def frame_instants(segments: int, sampling: str = "centre", fps: Optional[float] = None) -> list[float]:
    """The T instants (seconds from the window start) whose displayed frames become the model's frames."""
    if segments < 1:
        raise ValueError("segments must be >= 1")
    if sampling == "centre":
        return [k + 0.5 for k in range(segments)]
    if sampling == "linspace":
        if segments == 1:
            return [0.0]
        span = segments - 1.0 / (fps or DEFAULT_FPS)
        return [k * span / (segments - 1) for k in range(segments)]
    raise ValueError(f"unknown sampling {sampling!r}; choose one of {', '.join(SAMPLINGS)}")


def linspace_indices(num_frames: int, segments: int) -> list[int]:
    """0-based indices of the frames the authors pick from N extracted frames: ``int(linspace(1, N, T)) - 1``.

    Used for pre-extracted frame folders (AVE, MUSIC-AVQA); numpy's linspace and truncation, as the authors' loader.
    """
    if num_frames < 1:
        raise ValueError("no frames to pick from")
    return [int(i) - 1 for i in np.linspace(1, num_frames, segments).astype(np.int64)]
