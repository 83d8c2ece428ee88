"""Fixed tables of the in-graph audio front end (decisions D6; architecture.md §1.1 "HTS-AT front-end", §1.4).

Everything here is numpy/float64 and torch-free, so `caeav.model.frontend.AudioFrontEnd` can turn the tables into
buffers under `with torch.device("meta"):` and the torch-free runtime can reuse them. Nothing here is learned and
nothing is stored in checkpoints. Preprocessing only: no paper equation number.

* `hann_window`, `dft_kernels`: the STFT as a strided Conv1d (TensorRT has no STFT/DFT operator), as torchlibrosa's
  `Spectrogram` (which HTS-AT uses) does: periodic Hann window folded into cos/sin kernels.
* `mel_filterbank`: librosa's `filters.mel(htk=False, norm="slaney")` (torchlibrosa's `LogmelFilterBank`).
* `bicubic_matrix`: a matrix W with `W @ x == F.interpolate(x, mode="bicubic", align_corners=True)` along one axis.
* `periodic_frame_layout`: which STFT frames of a tiled segment are distinct, and a short sample gather that computes
  each distinct frame once (the tiled signal is periodic, so most frames repeat; see the function's docstring).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

CUBIC_A = -0.75  # PyTorch's bicubic kernel constant (aten/src/ATen/native/UpSample.h)


def hann_window(n: int) -> np.ndarray:
    """Periodic Hann window (librosa `get_window("hann", n, fftbins=True)` == `torch.hann_window(n)`)."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)


def dft_kernels(n_fft: int) -> np.ndarray:
    """Windowed real-DFT kernels `[n_fft, n_fft]` (output channel, tap).

    Rows 0..n_fft//2 are w[n]·cos(2πkn/N) for k = 0..N/2; the remaining rows are w[n]·sin(2πkn/N) for
    k = 1..⌈N/2⌉-1 (the sine rows of k = 0 and k = N/2 are identically zero and left out), so the conv has exactly
    n_fft output channels. Squaring the channels and applying `concat_mel_matrix` gives mel(|STFT|²).
    The phase k·n is reduced mod N in integers so every angle is exact before cos/sin.
    """
    n = np.arange(n_fft)
    window = hann_window(n_fft)
    k_cos = np.arange(n_fft // 2 + 1)
    k_sin = np.arange(1, (n_fft + 1) // 2)
    cos = np.cos(2.0 * np.pi * (np.outer(k_cos, n) % n_fft) / n_fft)
    sin = np.sin(2.0 * np.pi * (np.outer(k_sin, n) % n_fft) / n_fft)
    return np.concatenate([cos, sin], axis=0) * window[None, :]


def hz_to_mel(freq: np.ndarray | float) -> np.ndarray:
    """Slaney's mel scale (librosa `hz_to_mel(htk=False)`): linear below 1 kHz (200/3 Hz per mel), log above."""
    freq = np.asarray(freq, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3.0, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    safe = np.maximum(freq, min_log_hz)
    return np.where(freq >= min_log_hz, min_log_mel + np.log(safe / min_log_hz) / logstep, freq / f_sp)


def mel_to_hz(mels: np.ndarray | float) -> np.ndarray:
    """Inverse of `hz_to_mel` (librosa `mel_to_hz(htk=False)`)."""
    mels = np.asarray(mels, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3.0, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    return np.where(mels >= min_log_mel, min_log_hz * np.exp(logstep * (mels - min_log_mel)), f_sp * mels)


def mel_filterbank(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """Slaney-style triangular mel filters `[n_mels, n_fft//2 + 1]` (librosa `filters.mel`, htk=False, norm="slaney").

    n_mels + 2 edge frequencies equally spaced on the Slaney mel scale between fmin and fmax; filter i rises from edge
    i to a peak of 1 at edge i+1 and falls to edge i+2, then is scaled by 2 / (f_{i+2} - f_i) (unit area in Hz).
    """
    fft_freqs = np.linspace(0.0, sr / 2.0, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    fdiff = np.diff(edges)
    ramps = edges[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    return weights * (2.0 / (edges[2:] - edges[:-2]))[:, None]


def concat_mel_matrix(mel: np.ndarray, n_fft: int) -> np.ndarray:
    """`[n_mels, n_fft]` matrix applying `mel` to the squared `dft_kernels` channels: [M | M[:, 1:⌈N/2⌉]]."""
    return np.concatenate([mel, mel[:, 1 : (n_fft + 1) // 2]], axis=1)


def _cubic_conv1(x, a):  # |x| <= 1
    return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0


def _cubic_conv2(x, a):  # 1 < |x| < 2
    return ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a


def bicubic_matrix(n_in: int, n_out: int, opmath: type = np.float32, a: float = CUBIC_A) -> np.ndarray:
    """`[n_out, n_in]` float64 matrix of PyTorch's 1-D bicubic interpolation with align_corners=True.

    Mirrors ATen (`HelperInterpCubic::compute_indices_weights` on CPU, `upsample_bicubic2d_out_frame` on CUDA):
    scale = (n_in-1)/(n_out-1), source coordinate x = scale·o, i = min(⌊x⌋, n_in-1), t = clamp(x - i, 0, 1); weights
    (cc2(t+1), cc1(t), cc1(1-t), cc2((1-t)+1)) on input indices i-1..i+2, each index clamped to [0, n_in-1] (clamped
    taps add onto the edge sample). Rows sum to 1.

    `opmath` is the type ATen does this arithmetic in: float32 for float32 tensors (the default: what HTS-AT ran, and
    what `F.interpolate` does on float32 input; the float32 coordinate scale·o is off by up to ~6e-5 frames near the
    end, which moves outputs by up to ~1e-3 dB against exact arithmetic), float64 for float64 tensors.
    For a 2-D bicubic resize that keeps the other axis's size (HTS-AT's 1001×64 → 1024×64) the other axis's weights
    are exactly (0, 1, 0, 0), so this 1-D matrix reproduces it.
    """
    f = np.dtype(opmath).type
    scale = f(n_in - 1) / f(n_out - 1) if n_out > 1 else f(0.0)
    x = scale * np.arange(n_out).astype(f)
    i0 = np.minimum(np.floor(x).astype(np.int64), n_in - 1)
    t = np.clip(x - i0.astype(f), f(0.0), f(1.0))
    a, one, t2 = f(a), f(1.0), f(1.0) - t
    weights = (_cubic_conv2(t + one, a), _cubic_conv1(t, a), _cubic_conv1(t2, a), _cubic_conv2(t2 + one, a))
    out = np.zeros((n_out, n_in), dtype=np.float64)
    rows = np.arange(n_out)
    for k, w in enumerate(weights):
        np.add.at(out, (rows, np.clip(i0 - 1 + k, 0, n_in - 1)), w.astype(np.float64))
    return out


def stft_frame_count(n_samples: int, hop: int) -> int:
    """Frames of a centred STFT (pad n_fft//2 on both sides): 1 + n_samples // hop (1001 for 10 s at hop 320)."""
    return 1 + n_samples // hop


def tiled_source_index(segment_samples: int, n_samples: int, pad: int) -> np.ndarray:
    """For every sample of the reflect-padded tiled signal, the index of the segment sample it copies.

    The tiled signal s has n_samples samples, s[j] = segment[j mod segment_samples] (the authors tile by doubling then
    truncating, which is the same thing). Centre padding reflects without repeating the edge: s[-j] = s[j] and
    s[n-1+j] = s[n-1-j] (numpy/torch "reflect").
    """
    if pad >= n_samples:
        raise ValueError(f"reflect padding {pad} needs a signal longer than that, got {n_samples} samples")
    j = np.arange(-pad, n_samples + pad, dtype=np.int64)
    j = np.where(j < 0, -j, j)
    j = np.where(j >= n_samples, 2 * (n_samples - 1) - j, j)
    return j % segment_samples


@dataclass(frozen=True)
class FrameLayout:
    """Where each STFT frame of a tiled segment is computed (see `periodic_frame_layout`).

    gather_index: `[n_gather]` segment-sample indices; Conv1d(stride hop) over `segment[gather_index]` yields n_slots
      frames, slot k covering gather positions [k·hop, k·hop + n_fft).
    frame_slot: `[n_frames]` the slot that holds frame f's spectrum.
    """

    n_frames: int
    n_slots: int
    gather_index: np.ndarray
    frame_slot: np.ndarray


def frame_windows(segment_samples: int, n_samples: int, n_fft: int, hop: int) -> np.ndarray:
    """`[n_frames, n_fft]` segment-sample index of every tap of every centred STFT frame of the tiled signal."""
    src = tiled_source_index(segment_samples, n_samples, n_fft // 2)
    n_frames = stft_frame_count(n_samples, hop)
    return src[np.arange(n_frames)[:, None] * hop + np.arange(n_fft)[None, :]]


def periodic_frame_layout(segment_samples: int, n_samples: int, n_fft: int, hop: int) -> FrameLayout:
    """Compute each distinct STFT frame of a tiled segment once.

    Two frames are equal when their windows read the same segment samples in the same order. A 1-s segment tiled to
    10 s has period 32000 samples = 100 hops, so frame f equals frame f-100 whenever neither window touches the
    reflect padding: of the 1001 frames only 104 are distinct (frames 0, 1, 999, 1000 touch the padding; 2..101 cover
    one period), 104 of 501 for 5 s. Distinct frames keep their order; consecutive ones share samples in one run, and
    runs are separated by ⌈n_fft/hop⌉-1 unused slots so their windows do not overlap (107 slots in both cases).
    The result is exact: a slot's window holds the very samples of the frames mapped to it.
    """
    windows = frame_windows(segment_samples, n_samples, n_fft, hop)
    _, first, inverse = np.unique(windows, axis=0, return_index=True, return_inverse=True)
    representative = first[inverse.reshape(-1)]  # first frame with the same window
    gap = math.ceil(n_fft / hop) - 1
    slot_of: dict[int, int] = {}
    next_slot, previous = 0, None
    for f in np.unique(first):
        if previous is not None and f != previous + 1:
            next_slot += gap
        slot_of[int(f)] = next_slot
        next_slot, previous = next_slot + 1, f
    gather_index = np.zeros((next_slot - 1) * hop + n_fft, dtype=np.int64)
    for f, slot in slot_of.items():
        gather_index[slot * hop : slot * hop + n_fft] = windows[f]
    frame_slot = np.array([slot_of[int(r)] for r in representative], dtype=np.int64)
    return FrameLayout(len(windows), next_slot, gather_index, frame_slot)


def slot_interpolation(interp: np.ndarray, frame_slot: np.ndarray, n_slots: int) -> np.ndarray:
    """Fold the frame → slot gather into an interpolation matrix: `[n_out, n_frames]` → `[n_out, n_slots]`.

    Column slot s sums the columns of the frames held by s. For the bicubic matrix the 4 taps of a row always lie in
    different slots (the period is 100 frames), so every output is the same 4-term sum as before.
    """
    out = np.zeros((interp.shape[0], n_slots), dtype=interp.dtype)
    np.add.at(out.T, frame_slot, interp.T)
    return out


def fold_matrix(interp: np.ndarray, freq_ratio: int) -> np.ndarray:
    """`[freq_ratio·spec, n]` → `[freq_ratio, n, spec]`: chunk c of the interpolated time axis, ready for a batched
    MatMul `[BT, 1, n_mels, n] @ [freq_ratio, n, spec] → [BT, freq_ratio, n_mels, spec]`."""
    n_out, n = interp.shape
    return np.ascontiguousarray(interp.reshape(freq_ratio, n_out // freq_ratio, n).transpose(0, 2, 1))
