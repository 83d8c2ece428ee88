"""Synthetic audio-visual scenes: coloured moving shapes and the tones or noises they make (numpy only).

A class index decides how a source looks and sounds: its shape (circle, square, triangle, diamond, ring), its colour
(hues spread by the golden ratio) and its sound (a harmonic tone, or for every third class a band of noise, at a
class-specific frequency). A `Source` is visible during some intervals and audible during others, which is how the
generators build aligned events and deliberately misaligned ones (an audible source off-screen, a visible source
that is silent). Everything is a function of (seed, time), so a scene renders to the same arrays every time.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass, field

import numpy as np

SHAPES = ("circle", "square", "triangle", "diamond", "ring")
FRAME_SIZE = 128
FPS = 8
AUDIO_RATE = 32000


def class_colour(c: int) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb((c * 0.6180339887) % 1.0, 0.85, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def class_frequency(c: int) -> float:
    """Hz: a class-specific pitch between 220 and ~1750 Hz (three classes per octave step pattern)."""
    return 220.0 * 2.0 ** ((c % 18) / 6.0)


def class_is_noise(c: int) -> bool:
    return c % 3 == 2


@dataclass
class Source:
    """One sounding/visible object of class `cls` (an index into the task's category list)."""

    cls: int
    visible: list = field(default_factory=list)  # [(on, off)] seconds
    audible: list = field(default_factory=list)
    anchor: tuple = (0.5, 0.5)  # centre of its motion, as fractions of width and height
    radius: float = 0.14  # fraction of the frame size
    loudness: float = 0.3
    phase: float = 0.0

    def is_visible(self, t: float) -> bool:
        return any(on <= t < off for on, off in self.visible)

    def centre(self, t: float) -> tuple[float, float]:
        """Centre (fractions of width, height) at time t: a small loop around the anchor."""
        ax, ay = self.anchor
        return ax + 0.08 * np.sin(0.9 * t + self.phase), ay + 0.06 * np.cos(0.7 * t + self.phase)


def shape_mask(shape: str, cx: float, cy: float, r: float, size: int) -> np.ndarray:
    """Boolean [size, size] mask of a shape centred at (cx, cy) with radius r, all in pixels."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    dx, dy = xx - cx, yy - cy
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        return (np.abs(dx) <= r * 0.85) & (np.abs(dy) <= r * 0.85)
    if shape == "triangle":
        return (dy <= r * 0.8) & (dy >= -r) & (np.abs(dx) <= (dy + r) * 0.6)
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= r
    d2 = dx * dx + dy * dy
    return (d2 <= r * r) & (d2 >= (0.55 * r) ** 2)


def source_mask(src: Source, t: float, size: int) -> np.ndarray:
    """Where `src` is drawn at time t in a size x size frame (all False when it is not visible)."""
    if not src.is_visible(t):
        return np.zeros((size, size), dtype=bool)
    cx, cy = src.centre(t)
    return shape_mask(SHAPES[src.cls % len(SHAPES)], cx * size, cy * size, src.radius * size, size)


def render_frame(sources: list, t: float, seed: int, size: int = FRAME_SIZE) -> np.ndarray:
    """uint8 [size, size, 3]: a dim, slowly drifting gradient background with the visible sources drawn on it."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    shade = 40 + 30 * np.sin(2 * np.pi * (xx + 0.05 * t) + seed % 7) * np.cos(2 * np.pi * yy)
    img = np.stack([shade, shade * 0.9 + 10, shade * 0.8 + 20], axis=-1)
    for src in sources:
        img[source_mask(src, t, size)] = class_colour(src.cls)
    return np.clip(img, 0, 255).astype(np.uint8)


def _envelope(intervals: list, n: int, rate: int) -> np.ndarray:
    env = np.zeros(n, dtype=np.float32)
    ramp = int(0.01 * rate)
    for on, off in intervals:
        a, b = int(round(on * rate)), min(int(round(off * rate)), n)
        if b > a:
            env[a:b] = 1.0
            k = min(ramp, (b - a) // 2)
            if k:
                env[a: a + k] *= np.linspace(0, 1, k, dtype=np.float32)
                env[b - k: b] *= np.linspace(1, 0, k, dtype=np.float32)
    return env


def render_audio(sources: list, seconds: float, seed: int, rate: int = AUDIO_RATE) -> np.ndarray:
    """float32 [n] mono mix of the audible sources (tones / noise bands) over a faint noise floor."""
    n = int(round(seconds * rate))
    t = np.arange(n, dtype=np.float64) / rate
    rng = np.random.default_rng(seed)
    mix = (0.002 * rng.standard_normal(n)).astype(np.float32)
    for src in sources:
        if not src.audible:
            continue
        f = class_frequency(src.cls)
        if class_is_noise(src.cls):
            spec = np.fft.rfft(rng.standard_normal(n))
            freqs = np.fft.rfftfreq(n, 1.0 / rate)
            spec[(freqs < 0.7 * f) | (freqs > 1.4 * f)] = 0
            sound = np.fft.irfft(spec, n)
            sound /= np.abs(sound).max() + 1e-9
        else:
            sound = np.sin(2 * np.pi * f * t) + 0.4 * np.sin(4 * np.pi * f * t) + 0.2 * np.sin(6 * np.pi * f * t)
            sound /= 1.6
        mix += (src.loudness * sound).astype(np.float32) * _envelope(src.audible, n, rate)
    return np.clip(mix, -1.0, 1.0).astype(np.float32)


def render_video_frames(sources: list, seconds: float, seed: int, fps: int = FPS, size: int = FRAME_SIZE) -> list:
    """Every frame of the clip: frame i shows time i / fps."""
    return [render_frame(sources, i / fps, seed, size) for i in range(int(round(seconds * fps)))]
