"""Frames of AVVP's spatio-temporal stream (R(2+1)D-18, `caeav.model.st_stream`), torch-free: which instants of a clip,
how each frame is resized and normalised, and the stream's input `[T, 3, F, S, S]`.

How the LLP release extracted `feats/r2plus1d_18/<video_id>.npy` (YapengTian/AVVP-ECCV20):
* `scripts/extract_frames.py`: `ffmpeg -i <video> -r 8 <dir>/%06d.jpg`, i.e. 8 frames/s (80 for a 10-s clip);
* `scripts/extract_3D_feat.py`: of the N sorted frames, indices round(linspace(0, N−1, 80)) (`n_frame_steps` 80);
  consecutive groups of 8 are the 10 segments, batched as [10, 3, 8, 112, 112] (C, H, W = 3, 112, 112);
* `scripts/utils.py` (`LoadTransformImage`): PIL RGB → torchvision `Resize((112, 112))` (bilinear on the PIL image,
  aspect ratio not kept, **no crop**) → `ToTensor` (/255) → `Normalize(mean=(0.43216, 0.394666, 0.37645),
  std=(0.22803, 0.22145, 0.216989))` (Kinetics-400), RGB order.
torchvision's own video-classification preset (resize 128×171, centre crop 112) is *not* what LLP used.

Here (parameters: `STSampling`, from the config's `st` section): frame j of the T·F picked frames is the one displayed
at t_j = round(j·(N−1)/(T·F−1)) / fps with N = T·fps (`st_instants`; LLP: t_j = j/8 s), picked by the rule of
`caeav.media.sampling` (the last frame whose timestamp is <= t_j); each is resized with Pillow's bilinear filter to
S×S (`caeav.media.resize_rgb(..., "bilinear")`, what torchvision's Resize does to a PIL image) and normalised (`st_clip_input`).
Differences from LLP, both small: ffmpeg's `-r 8` takes the source frame *nearest* each output instant (ours: the one
displayed at it; at most one source frame apart), and LLP's frames went through JPEG files first.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .preprocess import resize_rgb

KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)


@dataclass(frozen=True)
class STSampling:
    """How the stream's frames are sampled: F frames per 1-s segment from a `fps` grid, resized to S×S, normalised."""

    frames: int = 8
    fps: float = 8.0
    size: int = 112
    mean: tuple = KINETICS_MEAN
    std: tuple = KINETICS_STD

    @classmethod
    def from_config(cls, st) -> "STSampling":
        """From a `caeav.config.STStreamConfig` (or anything with the same fields)."""
        return cls(int(st.frames), float(st.fps), int(st.size), tuple(float(m) for m in st.mean),
                   tuple(float(s) for s in st.std))

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def st_instants(segments: int, sampling: STSampling) -> list[float]:
    """The T·F instants (seconds from the window start) whose displayed frames feed the stream, in order: LLP's
    round(linspace(0, N−1, T·F)) over a grid of N = T·fps frames, as times (module docstring)."""
    count = segments * sampling.frames
    if segments < 1 or sampling.frames < 1 or sampling.fps <= 0:
        raise ValueError("st sampling needs segments >= 1, frames >= 1 and fps > 0")
    grid = max(1, int(round(segments * sampling.fps)))
    return [float(i) / sampling.fps for i in np.round(np.linspace(0, grid - 1, count))]


def st_clip_input(frames, segments: int, sampling: STSampling) -> np.ndarray:
    """The stream's input for one clip: the T·F picked frames (uint8 [T·F, H, W, 3], any size; resized unless already
    S×S) → float32 [T, 3, F, S, S], /255 then the sampling's mean/std."""
    frames = np.asarray(frames)
    count, size = segments * sampling.frames, sampling.size
    if frames.ndim != 4 or frames.shape[0] != count or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"st frames must be uint8 [{count}, H, W, 3] ({segments} segments x {sampling.frames}), "
                         f"got {frames.dtype} {list(frames.shape)}")
    if frames.shape[1:3] != (size, size):
        frames = np.stack([resize_rgb(f, size, "bilinear") for f in frames])
    x = frames.astype(np.float32) * np.float32(1.0 / 255.0)  # [T·F, S, S, 3]
    x = (x - np.asarray(sampling.mean, np.float32)) / np.asarray(sampling.std, np.float32)
    x = x.reshape(segments, sampling.frames, size, size, 3).transpose(0, 4, 1, 2, 3)  # [T, 3, F, S, S]
    return np.ascontiguousarray(x, dtype=np.float32)


def decode_st_frames(path, segments: int, sampling: STSampling, start: float = 0.0) -> np.ndarray:
    """The T·F stream frames of the window [start, start + T) s of a video, resized: uint8 [T·F, S, S, 3] (the
    `st` sampling of `caeav.media.decode_raw`, which the runtime takes from the same pass as the model's frames)."""
    from .decode import decode_raw

    return decode_raw(path, segments, sampling.size, start, st=sampling).st_frames


__all__ = ["KINETICS_MEAN", "KINETICS_STD", "STSampling", "decode_st_frames", "st_clip_input",
           "st_instants"]
