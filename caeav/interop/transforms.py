"""The few real layout changes between the authors' tensors and caeav's (everything else is a rename).

* `split_qkv`: HTS-AT's fused `attn.qkv` Linear (weight `[3C, C]`, bias `[3C]`, rows in q, k, v order; HTSAT:
  `WindowAttention`) is three Linears in transformers' ClapAudio layout (`attention.self.query/key/value`). Forward:
  rows [0:C], [C:2C], [2C:3C]; inverse: their concatenation, which restores the authors' tensor bit for bit.
"""

from __future__ import annotations

import torch
from torch import Tensor


def forward(name, value: Tensor, parts: int) -> list[Tensor]:
    """Authors' tensor → the caeav tensor(s) of a rule (`parts` of them)."""
    if name is None:
        return [value]
    if name == "split_qkv":
        if value.shape[0] % parts:
            raise ValueError(f"fused qkv of {value.shape[0]} rows cannot split in {parts}")
        return list(value.chunk(parts, dim=0))
    raise KeyError(name)


def inverse(name, values: list[Tensor]) -> Tensor:
    """caeav tensors of a rule → the authors' tensor."""
    if name == "split_qkv":
        return torch.cat(values, dim=0)
    raise KeyError(name)


# ------------------------------------------------------------------------------------------------ recomputed tables
# What caeav drops as "recomputed" on import and `export-official` writes back, so the authors' strict
# `load_state_dict` accepts the file. Written here from the definitions, not copied.

def shifted_window_mask(grid: int, window: int, shift: int) -> Tensor:
    """The shifted-window attention mask of a Swin block (Liu et al. 2021, §3.2), as both Swin-V2 (timm 0.6) and
    HTS-AT store it: the grid is cut into 3 × 3 regions by the cyclic shift, each window's tokens are labelled by
    region, and a pair of tokens from different regions gets −100 (0 otherwise). `[nW, window², window²]`."""
    labels = torch.zeros(grid, grid)
    cuts = (slice(0, grid - window), slice(grid - window, grid - shift), slice(grid - shift, grid))
    region = 0
    for rows in cuts:
        for cols in cuts:
            labels[rows, cols] = region
            region += 1
    n = grid // window
    windows = labels.view(n, window, n, window).permute(0, 2, 1, 3).reshape(n * n, window * window)
    diff = windows.unsqueeze(1) - windows.unsqueeze(2)
    return torch.zeros_like(diff).masked_fill(diff != 0, -100.0)


def stft_tables(n_fft: int, sample_rate: int, n_mels: int, fmin: float, fmax: float) -> dict[str, Tensor]:
    """torchlibrosa's STFT convolution kernels and mel matrix, as the authors' HTS-AT holds them: `conv_real` /
    `conv_imag` `[n_fft/2+1, 1, n_fft]` = real / imaginary part of the Hann-windowed DFT exp(−2πi·kn/N), `melW`
    `[n_fft/2+1, n_mels]` (Slaney mel filters, `caeav.model.frontend_tables`)."""
    import numpy as np

    from caeav.model.frontend_tables import hann_window, mel_filterbank

    n = np.arange(n_fft)
    k = np.arange(n_fft // 2 + 1)
    angle = 2.0 * np.pi * (np.outer(k, n) % n_fft) / n_fft
    window = hann_window(n_fft)[None, :]
    real, imag = np.cos(angle) * window, -np.sin(angle) * window
    mel = mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax).T
    as_t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
    return {"spectrogram_extractor.stft.conv_real.weight": as_t(real)[:, None, :],
            "spectrogram_extractor.stft.conv_imag.weight": as_t(imag)[:, None, :],
            "logmel_extractor.melW": as_t(mel)}
