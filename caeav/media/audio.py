"""Audio of one window: any codec, rate or channel count -> mono float32 at 32 kHz, placed by timestamp."""

from __future__ import annotations

import av
import numpy as np

from .types import SAMPLE_RATE


class AudioWindow:
    """Collects the samples of [start, start + segments) seconds from decoded audio frames.

    Frames are resampled to 32 kHz float (keeping the source channels) by FFmpeg's resampler, then averaged over
    channels (the mono down-mix librosa's ``load(mono=True)`` does, which produced the community's .npy files). The
    first resampled frame is placed by its timestamp; later ones follow it contiguously, so a stream that starts late
    gets leading silence and timestamp jitter does not tear the waveform.
    """

    def __init__(self, segments: int, window_start: float):
        self.need = segments * SAMPLE_RATE
        self.samples = np.zeros(self.need, dtype=np.float32)
        self.window_start = window_start  # seconds on the stream time line (file origin + start)
        self.pos = None  # index in `samples` of the next resampled sample (negative before the window)
        self.resampler = None

    @property
    def done(self) -> bool:
        return self.pos is not None and self.pos >= self.need

    @property
    def end_seconds(self) -> float:
        """Seconds of audio seen from the window start (meaningful once the stream is exhausted)."""
        return 0.0 if self.pos is None else max(self.pos, 0) / SAMPLE_RATE

    def add(self, frame) -> None:
        """Feed one decoded `av.AudioFrame` (None flushes the resampler at the end of the stream)."""
        if self.resampler is None:
            if frame is None:
                return
            self.resampler = av.AudioResampler(format="fltp", layout=frame.layout, rate=SAMPLE_RATE)
        for out in self.resampler.resample(frame):
            self._write(out)

    def _write(self, out) -> None:
        data = out.to_ndarray()
        mono = data.mean(axis=0, dtype=np.float32) if data.shape[0] > 1 else data[0].astype(np.float32, copy=False)
        if self.pos is None:
            t = float(out.pts * out.time_base) if out.pts is not None and out.time_base else self.window_start
            self.pos = int(round((t - self.window_start) * SAMPLE_RATE))
        lo, hi = self.pos, self.pos + mono.shape[0]
        a, b = max(lo, 0), min(hi, self.need)
        if b > a:
            self.samples[a:b] = mono[a - lo: b - lo]
        self.pos = hi
