"""Writing synthetic clips to disk in both media forms, deterministically (helpers of `caeav.data.synth`)."""

from __future__ import annotations

import string
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image

from caeav.media.preprocess import resize_rgb
from caeav.media.write import write_video

from .synth_scene import AUDIO_RATE, FPS, render_audio, render_video_frames

_ID_CHARS = string.ascii_letters + string.digits + "-_"
MEDIA_FORMS = ("video", "frames")


def youtube_id(rng: np.random.Generator) -> str:
    """An 11-character id in the alphabet of YouTube ids (the key the real datasets use)."""
    return "".join(_ID_CHARS[i] for i in rng.integers(0, len(_ID_CHARS), size=11))


def write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8"))


class ClipMedia:
    """The rendered frames and audio of one synthetic clip, written on demand in either form."""

    def __init__(self, sources: list, seconds: int, seed: int):
        self.seconds = seconds
        self.sources = sources  # what `caeav.data.synth_captions` describes
        self.frames = render_video_frames(sources, seconds, seed)
        self.audio = render_audio(sources, seconds, seed)

    def centre_frame(self, k: int) -> np.ndarray:
        """The frame displayed at the centre of segment k (what `sampling="centre"` decodes)."""
        return self.frames[int((k + 0.5) * FPS)]

    def write_video(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_video(path, self.frames, fps=FPS, audio=self.audio[None], sample_rate=AUDIO_RATE,
                    options={"preset": "veryfast", "threads": "1"}, audio_options={"aac_coder": "fast"})

    def write_all_frames(self, folder: Path) -> None:
        """Every frame as %08d.jpg from 1 (AVE / MUSIC-AVQA extraction)."""
        folder.mkdir(parents=True, exist_ok=True)
        for i, rgb in enumerate(self.frames, start=1):
            Image.fromarray(rgb).save(folder / f"{i:08d}.jpg", quality=95)

    def write_segment_frames(self, paths: list, size: Optional[int] = None) -> None:
        """One frame per segment (the centre frame) to each of `paths` (jpg or png), resized to `size` if given."""
        for k, path in enumerate(paths):
            rgb = self.centre_frame(k)
            if size is not None:
                rgb = resize_rgb(rgb, size)
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rgb).save(path, **({"quality": 95} if str(path).endswith(".jpg") else {}))

    def write_wave(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, self.audio.astype(np.float32))


def save_avs_wave_dict(path: Path, table: dict) -> None:
    """The AVSBench waveform file: a pickled dict "<name>.wav" -> samples, stored with np.save."""
    path.parent.mkdir(parents=True, exist_ok=True)
    holder = np.empty((), dtype=object)
    holder[()] = dict(sorted(table.items()))
    np.save(path, holder, allow_pickle=True)


def save_mask(path: Path, mask: np.ndarray, mode: str) -> None:
    """A 0/1 mask as PNG: mode '1' (S4) or 'P' with indices 0/1 and a black/white palette (MS3)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "1":
        Image.fromarray(mask.astype(bool)).save(path)
        return
    height, width = mask.shape
    image = Image.frombytes("P", (width, height), np.ascontiguousarray(mask, dtype=np.uint8).tobytes())
    image.putpalette([0, 0, 0, 255, 255, 255] + [0, 0, 0] * 254)
    image.save(path)
