"""Frame and waveform preprocessing shared by video decoding and pre-extracted media (torch-free).

One path for every source, so training, calibration and the runtime see identical inputs:
RGB uint8 -> upright (display rotation applied) -> bicubic resize to S x S (aspect ratio not kept, as the authors'
``Resize([S, S])``) -> /255 -> ImageNet mean/std -> float32 [3, S, S].

Difference from the authors' loader: they divide by 255 and resize the float image; we resize the uint8 image with
Pillow's (antialiased) bicubic filter and then divide. The two differ by rounding (< 1/255 before normalisation) and
by Pillow's antialiasing when downscaling; a cache of resized uint8 frames is 4x smaller this way.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from caeav.errors import MediaError

from .types import IMAGENET_MEAN, IMAGENET_STD, SAMPLE_RATE

_MEAN = np.asarray(IMAGENET_MEAN, dtype=np.float32).reshape(1, 3, 1, 1)
_STD = np.asarray(IMAGENET_STD, dtype=np.float32).reshape(1, 3, 1, 1)


def upright(rgb: np.ndarray, rotation: int) -> np.ndarray:
    """Rotate an [H, W, 3] image counter-clockwise by `rotation` degrees (a multiple of 90, as display matrices hold)."""
    quarter = int(round(rotation / 90.0)) % 4
    return np.rot90(rgb, k=quarter) if quarter else rgb


RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


def resize_rgb(rgb: np.ndarray, size: int, resample: str = "bicubic") -> np.ndarray:
    """Resize an [H, W, 3] uint8 image to [size, size, 3] uint8 with Pillow's `resample` filter (aspect ratio not kept).

    Bicubic for the model's frames; bilinear for AVVP's R(2+1)D-18 stream (`caeav.media.st_frames`: torchvision's
    `Resize((112, 112))` on a PIL image, as LLP's feature extraction)."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise TypeError("resize_rgb expects a uint8 [H, W, 3] array")
    image = Image.fromarray(np.ascontiguousarray(rgb))
    if image.size != (size, size):
        image = image.resize((size, size), resample=RESAMPLE[resample])
    return np.asarray(image, dtype=np.uint8)


def load_image(path, size: int) -> np.ndarray:
    """A pre-extracted frame file (jpg/png) as uint8 [size, size, 3] RGB; MediaError naming the file if unreadable."""
    try:
        with Image.open(os.fspath(path)) as image:
            rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError, SyntaxError) as exc:
        raise MediaError(f"{os.fspath(path)}: cannot be read as an image ({exc})") from None
    return resize_rgb(rgb, size)


def normalize_frames(frames: np.ndarray) -> np.ndarray:
    """uint8 [T, S, S, 3] RGB -> float32 [T, 3, S, S], /255 then ImageNet mean/std."""
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be [T, S, S, 3], got {list(frames.shape)}")
    x = np.asarray(frames, dtype=np.float32).transpose(0, 3, 1, 2) * np.float32(1.0 / 255.0)
    return np.ascontiguousarray((x - _MEAN) / _STD, dtype=np.float32)


def segment_waveform(wave: np.ndarray, segments: int, offset: int = 0) -> tuple[np.ndarray, int]:
    """Cut a mono 32 kHz waveform into [T, 32000] from sample `offset`; zero-pads a short one.

    Returns (audio, missing samples). Segment t holds samples [32000 t, 32000 (t + 1)) of the window, as the authors'
    ``reshape(T, 32000)`` of the 10-s .npy (architecture.md §1.1).
    """
    wave = np.asarray(wave, dtype=np.float32).reshape(-1)
    need = segments * SAMPLE_RATE
    piece = wave[offset: offset + need]
    missing = need - piece.shape[0]
    if missing > 0:
        piece = np.concatenate([piece, np.zeros(missing, dtype=np.float32)])
    return np.ascontiguousarray(piece.reshape(segments, SAMPLE_RATE)), max(missing, 0)
