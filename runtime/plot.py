"""`caeav infer --plot OUT.png`: the figure of a run, drawn with Pillow (no matplotlib), 1400 px wide.

A header names the bundle, its task, the engine and the precision. Then one panel per video, top to bottom: the
clip's name and length; a filmstrip of the frames the model sampled (up to 12, evenly chosen over the timeline,
each with its time; AVS: the predicted mask tinted over it, `TaskAdapter.tint`); the log-mel spectrogram of the
audio the model heard (64 mel bands 50 Hz-14 kHz as the model's front end, in dB, computed in numpy: `log_mel`);
then the task's rows (`TaskAdapter.figure_rows`, see `caeav.runtime.rows`: AVE labels and confidences per second,
AVVP audio and visual lanes, AVQA questions, answers and top 5) on the spectrogram's seconds axis. A legend lists the
classes whose colours appear.

What a panel needs is taken from the decoded video while it is finished (`figure_data`: thumbnails and a
spectrogram already reduced to the figure's width), so a run over many videos keeps no frames or audio around.
"""

from __future__ import annotations

import colorsys
import os
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .rows import Bars, Lane, Ranking, Text
from .windows import covering_window

WIDTH, LEFT, RIGHT, GAP = 1400, 190, 20, 8
LANE, THUMB_H, SPEC_H, MAX_THUMBS = 22, 110, 96, 12
PLOT_W = WIDTH - LEFT - RIGHT
BACKGROUND_RGB, BAR_RGB = (225, 225, 225), (90, 90, 160)
MAGMA = np.array([(0, 0, 4), (59, 15, 112), (140, 41, 129), (222, 73, 104), (254, 159, 109), (252, 253, 191)], float)


def class_colour(index: int) -> tuple[int, int, int]:
    """A stable, well separated colour per class index (golden-ratio hue steps); -1: the bars' colour."""
    if index < 0:
        return BAR_RGB
    h = (index * 0.61803398875) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, 0.65, 0.85)
    return int(r * 255), int(g * 255), int(b * 255)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size
        return ImageFont.load_default()


# ---------------------------------------------------------------------------------------------- what a panel holds

def log_mel(wave: np.ndarray, sr: int = 32000, n_fft: int = 1024, n_mels: int = 64, fmin: float = 50.0,
            fmax: float = 14000.0, columns: int = PLOT_W) -> np.ndarray:
    """dB log-mel power [n_mels, ≤ columns] of a mono waveform (Hann window, hop chosen to give ~`columns` frames,
    at least the model's 320 samples), low frequencies in row 0."""
    from caeav.model.frontend_tables import hann_window, mel_filterbank  # numpy tables, torch-free

    wave = np.asarray(wave, dtype=np.float32).reshape(-1)
    hop = max(320, len(wave) // max(1, columns))
    padded = np.pad(wave, (n_fft // 2, n_fft // 2))
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop]
    power = np.abs(np.fft.rfft(frames * hann_window(n_fft).astype(np.float32), axis=-1)) ** 2
    mel = power @ mel_filterbank(sr, n_fft, n_mels, fmin, fmax).T.astype(np.float32)
    return (10.0 * np.log10(np.maximum(mel, 1e-10))).T.astype(np.float32)


def _timeline_audio(d) -> np.ndarray:
    """The waveform of the timeline's N seconds, each second from the first window covering it."""
    parts = []
    for t in range(d.seconds):
        w = covering_window(d.starts, d.wave.shape[1], t)
        parts.append(d.wave[w][t - d.starts[w]])
    return np.concatenate(parts)


def _model_rgb(frame: np.ndarray) -> np.ndarray:
    """A model frame [3, S, S] (ImageNet-normalised) back to uint8 [S, S, 3]."""
    from caeav.media import IMAGENET_MEAN, IMAGENET_STD

    rgb = frame.transpose(1, 2, 0) * np.asarray(IMAGENET_STD, np.float32) + np.asarray(IMAGENET_MEAN, np.float32)
    return np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)


def figure_data(d, result, adapter) -> dict:
    """{"thumbs": [(time, uint8 [h, w, 3])], "mel": dB [64, cols]} for one decoded video (module docstring)."""
    sampled = {}
    for w, times in enumerate(d.frame_times):
        for k, t in enumerate(times):
            if t < max(d.duration, 1e-3) and t not in sampled:
                sampled[t] = (w, k)
    times = sorted(sampled) or [d.frame_times[0][0]]
    sampled.setdefault(times[0], (0, 0))
    pick = [times[int(i)] for i in np.unique(np.linspace(0, len(times) - 1, min(MAX_THUMBS, len(times))).round())]
    width, height = d.size
    thumb_w = max(16, min(int(round(THUMB_H * width / max(1, height))), PLOT_W // len(pick) - GAP))
    thumbs = []
    for t in pick:
        w, k = sampled[t]
        rgb = np.asarray(Image.fromarray(_model_rgb(d.frames[w][k])).resize((thumb_w, THUMB_H),
                                                                             Image.Resampling.BICUBIC))
        thumbs.append((t, adapter.tint(result, t, rgb)))
    return {"thumbs": thumbs, "mel": log_mel(_timeline_audio(d))}


# ---------------------------------------------------------------------------------------------- drawing

class _Canvas:
    """Rows stacked top to bottom on one seconds axis per panel."""

    def __init__(self, height: int):
        self.img = Image.new("RGB", (WIDTH, height), "white")
        self.draw = ImageDraw.Draw(self.img)
        self.font, self.small, self.big = _font(13), _font(11), _font(16)
        self.y = GAP
        self.seconds = 1
        self.legend: dict = {}

    def x(self, t: float) -> int:
        return LEFT + int(round(t * PLOT_W / self.seconds))

    def title(self, text: str, big: bool = False) -> None:
        self.draw.text((GAP, self.y), text, fill="black", font=self.big if big else self.font)
        self.y += LANE + (4 if big else 0)

    def label(self, text: str) -> None:
        self.draw.text((GAP, self.y + 4), text[:30], fill="black", font=self.small)

    def filmstrip(self, thumbs: list) -> None:
        self.label("sampled frames")
        x = LEFT
        for t, rgb in thumbs:
            self.img.paste(Image.fromarray(rgb), (x, self.y))
            self.draw.text((x + 2, self.y + THUMB_H + 1), f"{t:.2f} s", fill="black", font=self.small)
            x += rgb.shape[1] + GAP
        self.y += THUMB_H + LANE

    def spectrogram(self, mel: np.ndarray) -> None:
        self.label("log-mel spectrogram")
        lo, hi = np.percentile(mel, 2), mel.max()
        scaled = np.clip((mel[::-1] - lo) / max(1e-6, hi - lo), 0, 1) * (len(MAGMA) - 1)
        i = np.minimum(scaled.astype(int), len(MAGMA) - 2)
        rgb = MAGMA[i] + (MAGMA[i + 1] - MAGMA[i]) * (scaled - i)[..., None]
        image = Image.fromarray(rgb.astype(np.uint8)).resize((self.x(self.seconds) - LEFT, SPEC_H))
        self.img.paste(image, (LEFT, self.y))
        self.y += SPEC_H + 4

    def lane(self, row: Lane) -> None:
        self.label(row.title)
        self.draw.rectangle([LEFT, self.y, self.x(self.seconds) - 1, self.y + LANE - 1], fill=(245, 245, 245))
        for start, stop, key, text in row.cells:
            x0, x1 = self.x(start), self.x(stop) - 1
            fill = BACKGROUND_RGB if key is None else class_colour(key)
            self.draw.rectangle([x0, self.y, x1, self.y + LANE - 1], fill=fill, outline="white")
            if text and self.draw.textlength(text, font=self.small) < x1 - x0 - 4:
                self.draw.text((x0 + 3, self.y + 5), text, fill="black", font=self.small)
            if row.legend and key is not None and key >= 0:
                self.legend[key] = text
        self.y += LANE + 2

    def bars(self, row: Bars) -> None:
        self.label(row.title)
        colour = class_colour(row.colour if row.colour is not None else -1)
        for t, value in enumerate(row.values):
            x0, x1 = self.x(t), self.x(t + 1) - 1
            top = self.y + int(round((1.0 - float(np.clip(value, 0, 1))) * (LANE * 2 - 2)))
            self.draw.rectangle([x0 + 1, top, x1 - 1, self.y + 2 * LANE - 1], fill=colour)
            text = f"{value:.2f}"
            if row.labels and self.draw.textlength(text, font=self.small) < x1 - x0 - 2:
                self.draw.text((x0 + 2, self.y + 1), text, fill="black", font=self.small)
        self.y += 2 * LANE + 2

    def ranking(self, row: Ranking) -> None:
        self.label(row.title)
        for name, p in row.items:
            w = int(round(float(p) * (PLOT_W - 260)))
            fill = (200, 70, 60) if name == row.mark else BAR_RGB
            self.draw.rectangle([LEFT + 250, self.y + 3, LEFT + 250 + max(1, w), self.y + LANE - 4], fill=fill)
            self.draw.text((LEFT, self.y + 4), f"{str(name)[:34]}  {float(p):.2f}", fill="black", font=self.small)
            self.y += LANE
        self.y += 2

    def text(self, row: Text) -> None:
        for line in row.lines:
            self.draw.text((LEFT, self.y + 3), str(line), fill="black", font=self.big if row.bold else self.font)
            self.y += LANE

    def axis(self) -> None:
        step = next(s for s in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800) if self.seconds / s <= 20)
        for t in range(0, self.seconds + 1, step):
            x = self.x(t)
            self.draw.line([x, self.y, x, self.y + 4], fill="black")
            self.draw.text((x + 1, self.y + 4), f"{t} s" if t == 0 else str(t), fill="black", font=self.small)
        self.y += LANE + GAP

    def legend_rows(self) -> None:
        x = GAP
        for key, name in sorted(self.legend.items()):
            if x > WIDTH - 220:
                x, self.y = GAP, self.y + LANE
            self.draw.rectangle([x, self.y + 4, x + 12, self.y + 16], fill=class_colour(key))
            self.draw.text((x + 16, self.y + 3), str(name)[:30], fill="black", font=self.small)
            x += 230
        self.y += LANE


DRAW = {Lane: _Canvas.lane, Bars: _Canvas.bars, Ranking: _Canvas.ranking, Text: _Canvas.text}


def _row_height(row) -> int:
    if isinstance(row, Bars):
        return 2 * LANE + 2
    if isinstance(row, Ranking):
        return LANE * len(row.items) + 2
    if isinstance(row, Text):
        return LANE * len(row.lines)
    return LANE + 2


def draw_figure(report, path: Union[str, os.PathLike]) -> Path:
    """Write the PNG of `report`'s videos (those run with `InferOptions.plot`) to `path` and return it."""
    adapter = report.bundle.adapter
    panels = [(r, adapter.figure_rows(r, report.bundle)) for r in report.results if r.figure is not None]
    height = 2 * LANE + 6 * LANE
    for result, rows in panels:
        height += LANE + THUMB_H + LANE + SPEC_H + 4 + sum(_row_height(r) for r in rows) + LANE + 2 * GAP
    canvas = _Canvas(height)
    b = report.bundle
    name = f"{b.path.parent.name}/{b.path.name}" if b.path.parent.name else b.path.name
    canvas.title(f"caeav infer: bundle {name} ({b.task}), engine {report.engine} {report.precision}", big=True)
    for result, rows in panels:
        canvas.seconds = max(1, result.seconds)
        canvas.title(f"{Path(result.path).name}: {result.duration:.1f} s, {len(result.windows)} window(s)")
        canvas.filmstrip(result.figure["thumbs"])
        canvas.spectrogram(result.figure["mel"])
        for row in rows:
            DRAW[type(row)](canvas, row)
        canvas.axis()
    canvas.legend_rows()
    img = canvas.img.crop((0, 0, WIDTH, min(height, canvas.y + GAP)))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    from caeav.files import atomic_file

    with atomic_file(path) as fh:
        img.save(fh, format="PNG")
    return path
