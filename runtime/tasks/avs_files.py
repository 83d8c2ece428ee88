"""The files of an AVS result: binary mask PNGs and the overlay video (Pillow, PyAV, numpy; torch-free).

    resize_mask(mask, (width, height))          # M x M 0/1 -> bool [height, width], nearest neighbour
    write_masks(folder, [(name, mask), ...])    # all PNGs of one video, or none of them
    write_overlay(video, out, times, masks, size)  # the clip with each mask tinted from its frame to the next one's

Atomic: the PNGs of a video are written into a temporary folder inside `folder` and renamed into it together (SIGINT
and SIGTERM held during the renames, `caeav.files.deferred_signals`), so a failure or an interrupt leaves either
all of a video's masks or none, and no partial file; the overlay is encoded into a temporary file beside `out` and
renamed onto it. An OSError becomes one line naming the option.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import av
import numpy as np
from PIL import Image

from caeav.errors import CaeavError
from caeav.files import deferred_signals

TINT_RGB = np.array([255, 40, 90], dtype=np.float32)
TINT_ALPHA = 0.55
COPY_AUDIO = {".mp4": ("aac", "mp3", "ac3", "alac"), ".m4v": ("aac", "mp3", "ac3", "alac"),
              ".mov": ("aac", "mp3", "ac3", "alac", "pcm_s16le"), ".mkv": None}  # None: any codec is copied
OVERLAY_SUFFIXES = tuple(COPY_AUDIO)


def resize_mask(mask: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """A 0/1 mask [M, M] at `size` = (width, height), nearest neighbour -> bool [height, width]."""
    w, h = int(size[0]), int(size[1])
    image = Image.fromarray(np.asarray(mask, dtype=np.uint8) * 255)
    if image.size != (w, h):
        image = image.resize((w, h), resample=Image.Resampling.NEAREST)
    return np.asarray(image) > 127


def tint(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3] with the bool [H, W] mask's pixels blended towards the tint colour, its edge drawn solid."""
    out = rgb.astype(np.float32)
    out[mask] = (1 - TINT_ALPHA) * out[mask] + TINT_ALPHA * TINT_RGB
    edge = mask & ~(np.roll(mask, 1, 0) & np.roll(mask, -1, 0) & np.roll(mask, 1, 1) & np.roll(mask, -1, 1))
    out[edge] = TINT_RGB
    return out.astype(np.uint8)


def _oserror(flag: str, path, exc: OSError) -> CaeavError:
    return CaeavError(f"{flag} {path}: cannot be written ({exc.strerror or exc})")


def write_masks(folder, items: Sequence[tuple[str, np.ndarray]]) -> None:
    """Write one binary PNG (mode "1", as AVSBench's S4 masks) per (file name, bool [H, W] mask) into `folder`."""
    folder = Path(folder)
    created = not folder.exists()
    stage = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(dir=folder, prefix=".caeav-masks.tmp-"))
        for name, mask in items:
            Image.fromarray(np.asarray(mask, dtype=bool)).save(stage / name, format="PNG")
        with deferred_signals():
            for name, _ in items:
                os.replace(stage / name, folder / name)
    except OSError as exc:
        raise _oserror("--masks", folder, exc) from None
    finally:
        if stage is not None:
            shutil.rmtree(stage, ignore_errors=True)
        if created and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def overlay_path(out, video: str, single: bool) -> Path:
    """OUT.mp4 as given for a run of one video; OUT_<video stem>.mp4 beside it for each video of a longer run."""
    out = Path(out)
    return out if single else out.with_name(f"{out.stem}_{Path(video).stem}{out.suffix}")


def write_overlay(video: str, out, times: Sequence[float], masks: np.ndarray, size: Sequence[int]) -> Path:
    """Encode `video` with mask k (0/1 [M, M]) tinted over its frames from times[k] until times[k + 1] (frames
    before the first sampled one show the first mask), at the video's upright resolution `size` = (width, height)
    and its frame timestamps (so its frame rate), audio kept."""
    out = Path(out)
    try:
        fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.stem}.tmp-", suffix=out.suffix)
        os.close(fd)
    except OSError as exc:
        raise _oserror("--overlay", out, exc) from None
    try:
        _encode(video, tmp, list(times), masks, (int(size[0]), int(size[1])), out.suffix.lower())
        with deferred_signals():
            os.replace(tmp, out)
    except (OSError, av.FFmpegError) as exc:
        raise _oserror("--overlay", out, exc) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


class _MaskClock:
    """The full-resolution mask shown at time t (only the current one is kept: masks are held in time order)."""

    def __init__(self, times: list, masks: np.ndarray, size: tuple):
        self.times, self.masks, self.size = times, masks, size
        self.k, self.full = -1, None

    def at(self, t: float) -> np.ndarray:
        k = max(0, int(np.searchsorted(self.times, t + 1e-6, side="right")) - 1)
        if k != self.k:
            self.k, self.full = k, resize_mask(self.masks[k], self.size)
        return self.full


def _encode(video: str, tmp: str, times: list, masks: np.ndarray, size: tuple, suffix: str) -> None:
    from caeav.media.container import container_start
    from caeav.media.decode import _rotation
    from caeav.media.preprocess import upright

    with av.open(video) as src, av.open(tmp, mode="w") as dst:
        vin = src.streams.video[0]
        ain = src.streams.audio[0] if src.streams.audio else None
        origin = container_start(src)
        vout = _video_stream(dst, vin, *size)  # every stream exists before the first packet is muxed
        audio = _AudioOut(dst, ain, suffix) if ain is not None else None
        clock = _MaskClock(times, masks, size)
        count = 0
        for packet in src.demux(*([vin] + ([ain] if ain is not None else []))):
            if audio is not None and packet.stream.index == ain.index:
                audio.add(packet)
                continue
            for frame in vin.decode(packet):
                rgb = upright(frame.to_ndarray(format="rgb24"), _rotation(vin, frame))
                if (rgb.shape[1], rgb.shape[0]) != size:  # a resolution change inside the stream
                    rgb = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR))
                t = frame.time - origin if frame.pts is not None else count / float(vin.average_rate or 25)
                out = av.VideoFrame.from_ndarray(np.ascontiguousarray(tint(rgb, clock.at(t))), format="rgb24")
                out.pts = frame.pts if frame.pts is not None else count
                out.time_base = vout.codec_context.time_base
                dst.mux(vout.encode(out))
                count += 1
        dst.mux(vout.encode(None))
        if audio is not None:
            audio.close()


def _video_stream(dst, vin, width: int, height: int):
    rate = vin.average_rate or vin.guessed_rate or Fraction(25)
    stream = dst.add_stream("libx264", rate=rate)
    stream.width, stream.height = width, height
    stream.pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
    stream.codec_context.time_base = vin.time_base or 1 / Fraction(rate)
    return stream


class _AudioOut:
    """The source's audio in the overlay: packets copied where the container takes the codec, else AAC."""

    def __init__(self, dst, ain, suffix: str):
        self.dst, self.ain = dst, ain
        codecs = COPY_AUDIO.get(suffix, ())
        self.copy = codecs is None or ain.codec_context.name in codecs
        if self.copy:
            self.stream = dst.add_stream_from_template(ain)
        else:
            self.stream = dst.add_stream("aac", rate=ain.codec_context.sample_rate or 48000)
            self.resampler = av.AudioResampler(format="fltp", layout=self.stream.layout,
                                               rate=self.stream.codec_context.sample_rate)

    def add(self, packet) -> None:
        if self.copy:
            if packet.dts is not None:
                packet.stream = self.stream
                self.dst.mux(packet)
            return
        try:
            frames = self.ain.decode(packet)
        except av.FFmpegError:  # a damaged audio packet: skipped, as decoding for the model does
            return
        for frame in frames:
            for piece in self.resampler.resample(frame):
                piece.pts = None
                self.dst.mux(self.stream.encode(piece))

    def close(self) -> None:
        if not self.copy:
            for piece in self.resampler.resample(None):
                piece.pts = None
                self.dst.mux(self.stream.encode(piece))
            self.dst.mux(self.stream.encode(None))
