"""The in-graph audio front end: waveform segments → HTS-AT's 256×256 log-mel "image" (decisions D6).

Preprocessing, not a paper equation: it reproduces HTS-AT's own front end as the authors run it inside the model
(architecture.md §1.1 "HTS-AT front-end", steps 1-3 and 5; §1.4 for AVS), written with operators TensorRT parses.
Per 1-s segment (rows flattened video-major, row = b·T + t):

1. tile the segment to `tile_seconds` s (10 identical copies for AVE/AVVP/AVQA, 5 for AVS);
2. STFT power, n_fft 1024, periodic Hann 1024, hop 320, centred with reflect padding (1001 frames for 10 s, 501 for
   5 s), as a strided Conv1d with fixed cos/sin kernels (torchlibrosa's approach; TensorRT has no STFT/DFT op);
3. 64-bin Slaney mel (50-14000 Hz at 32 kHz), 10·log10(max(x, 1e-10)) (ref 1, no top_db);
4. `bn0`: BatchNorm2d with the mel bins as channels (frozen HTS-AT weights; checkpoint key `bn0.*`);
5. bicubic (align_corners=True) time interpolation to spec_size·freq_ratio = 1024 frames as a fixed MatMul (the same
   in onnxruntime and TensorRT, unlike their cubic Resize; the weights follow ATen's float32 arithmetic, i.e. exactly
   what `F.interpolate` does on HTS-AT's float32 log-mel), then HTS-AT's `reshape_wav2img` fold: the 1024 frames are cut
   into freq_ratio = 4 chunks of 256 and stacked along frequency, image[c·64 + m, j] = logmel[256·c + j, m]
   (rows: chunk-major mel bins, columns: time), output `[BT, 1, 256, 256]` for HTS-AT's patch-embed Conv2d.

SpecAugment and log-mel mixup (train-time, between steps 4 and 5) are not part of this module: decisions D3 keeps the
frozen audio backbone free of them.

Periodic shortcut (changes no numbers): a tiled segment has period 100 hops, so only 104 of the 1001 frames are
distinct (`frontend_tables.periodic_frame_layout`). `forward` gathers a short signal holding each distinct frame once
(107 conv positions instead of 1001) and folds the frame gather into the interpolation matrix; log and the eval-mode
bn0 act per element / per mel bin, so they commute with that gather. With bn0 in train mode (batch statistics over
all frames, only if a caller deliberately unfreezes it) the distinct frames are expanded to all frames before bn0.
`forward_direct` is the plain path (tile, reflect Pad, conv over every frame), kept as the reference.

Precision: keep steps 2-3 in true FP32. The power reaches ~2.6e5 for a full-scale sine (FP16 overflows at 65504), and
reduced-precision DFT products raise the error floor of weak bins: emulated TF32 (10-bit mantissa) moves log-mel
values by up to ~0.2 dB on test signals, against ~1e-4 dB in FP32. PyTorch runs cuDNN convs in TF32 by default on
Ampere and newer (`torch.backends.cudnn.allow_tf32`), and TensorRT enables TF32 by default, so GPU training and the
FP16/INT8 recipes must exclude the Conv → Mul → MatMul → Clip → Log chain (or turn TF32 off for it).

Export: Gather, Conv, Mul, MatMul, Max/Clip, Log, BatchNormalization, Unsqueeze/Squeeze, Reshape; no STFT, no Resize,
no Pad; batch may be dynamic. The fixed tables are non-persistent buffers computed with numpy (so the module builds on
the meta device); after `to_empty()` call `init_fixed_buffers()` to fill them again.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from caeav.config import ConfigError, FrontEndConfig
from caeav.model import frontend_tables as tables


class AudioFrontEnd(nn.Module):
    """`[B, T, segment_samples]` waveform → `[B·T, 1, spec_size, spec_size]` HTS-AT input (decisions D6).

    Args:
        cfg: STFT / mel settings (`caeav.config.FrontEndConfig`).
        spec_size: side of HTS-AT's square input image (256).
        tile_seconds: seconds each segment is tiled to before the STFT (10 for AVE/AVVP/AVQA, 5 for AVS; §1.4).
        segment_samples: samples per segment (32000 = 1 s at 32 kHz).
    """

    def __init__(self, cfg: FrontEndConfig, spec_size: int = 256, tile_seconds: int = 10, segment_samples: int = 32000):
        super().__init__()
        if spec_size % cfg.freq_ratio or spec_size // cfg.freq_ratio != cfg.n_mels:
            raise ConfigError(
                f"the fold needs n_mels·freq_ratio == spec_size, got {cfg.n_mels}·{cfg.freq_ratio} vs {spec_size}"
            )
        self.cfg = cfg
        self.spec_size = spec_size
        self.tile_seconds = tile_seconds
        self.segment_samples = segment_samples
        self.n_samples = tile_seconds * cfg.sample_rate  # tiled length (320000 for 10 s)
        self.n_frames = tables.stft_frame_count(self.n_samples, cfg.hop_length)
        self.n_time = spec_size * cfg.freq_ratio  # interpolated frames (1024)
        if self.n_frames > self.n_time:
            raise ConfigError(
                f"{tile_seconds} s give {self.n_frames} STFT frames, "
                f"more than HTS-AT's {self.n_time} (spec_size·freq_ratio)"
            )
        self.bn0 = nn.BatchNorm2d(cfg.n_mels)
        self.n_slots = 0  # set by init_fixed_buffers
        self.init_fixed_buffers()

    # ------------------------------------------------------------------------------------------------------------
    def _fixed_tables(self) -> dict[str, np.ndarray]:
        cfg = self.cfg
        layout = tables.periodic_frame_layout(self.segment_samples, self.n_samples, cfg.n_fft, cfg.hop_length)
        self.n_slots = layout.n_slots
        mel = tables.mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.fmax)
        interp = tables.bicubic_matrix(self.n_frames, self.n_time)  # [1024, n_frames]
        slots = tables.slot_interpolation(interp, layout.frame_slot, layout.n_slots)  # [1024, n_slots]
        return {
            "gather_index": layout.gather_index,  # [n_gather] int64
            "frame_slot": layout.frame_slot,  # [n_frames] int64
            "dft_kernel": tables.dft_kernels(cfg.n_fft)[:, None, :],  # [n_fft, 1, n_fft]
            "mel_matrix": tables.concat_mel_matrix(mel, cfg.n_fft),  # [n_mels, n_fft]
            "interp_slots": tables.fold_matrix(slots, cfg.freq_ratio),  # [freq_ratio, n_slots, spec]
            "interp_frames": tables.fold_matrix(interp, cfg.freq_ratio),  # [freq_ratio, n_frames, spec]
        }

    @torch.no_grad()
    def init_fixed_buffers(self) -> None:
        """(Re)compute the fixed tables as non-persistent buffers on the module's device (meta stays meta)."""
        device = self.bn0.running_mean.device
        dtype = self.bn0.running_mean.dtype
        for name, value in self._fixed_tables().items():
            old = getattr(self, name, None)
            kind = torch.int64 if value.dtype.kind == "i" else (old.dtype if old is not None else dtype)
            self.register_buffer(name, torch.tensor(value, dtype=kind, device=device), persistent=False)

    # ------------------------------------------------------------------------------------------------------------
    def _segments(self, wave: Tensor) -> Tensor:
        if wave.dim() != 3 or wave.shape[-1] != self.segment_samples:
            raise ValueError(f"expected audio [B, T, {self.segment_samples}], got {list(wave.shape)}")
        return wave.reshape(-1, self.segment_samples)  # [BT, S], row = b·T + t

    def _power_to_logmel(self, frames: Tensor) -> Tensor:
        """Conv output `[BT, n_fft, n]` (cos/sin channels) → log-mel dB `[BT, n_mels, n]`."""
        mel = torch.matmul(self.mel_matrix, frames * frames)  # mel(re² + im²)
        return torch.clamp(mel, min=self.cfg.amin).log() * (10.0 / math.log(10.0))

    def _bn0(self, logmel: Tensor) -> Tensor:
        """bn0 with mel bins as channels (HTS-AT: `[BT, 1, time, mel].transpose(1, 3)`; here `[BT, mel, n, 1]`)."""
        return self.bn0(logmel.unsqueeze(-1)).squeeze(-1)

    def _interpolate_and_fold(self, logmel: Tensor, matrix: Tensor) -> Tensor:
        """`[BT, n_mels, n]` @ `[freq_ratio, n, spec]` → `[BT, freq_ratio, n_mels, spec]` → `[BT, 1, spec, spec]`."""
        image = torch.matmul(logmel.unsqueeze(1), matrix)
        return image.reshape(-1, 1, self.spec_size, self.spec_size)

    def forward(self, wave: Tensor) -> Tensor:
        """`[B, T, segment_samples]` → `[B·T, 1, spec_size, spec_size]` (distinct frames only; see module docstring)."""
        x = self._segments(wave)
        short = x.index_select(1, self.gather_index).unsqueeze(1)  # [BT, 1, n_gather]
        frames = F.conv1d(short, self.dft_kernel, stride=self.cfg.hop_length)  # [BT, n_fft, n_slots]
        logmel = self._power_to_logmel(frames)  # [BT, n_mels, n_slots]
        if self.bn0.training:  # batch statistics must see every frame: expand slots to frames first
            logmel = self._bn0(logmel.index_select(2, self.frame_slot))
            return self._interpolate_and_fold(logmel, self.interp_frames)
        return self._interpolate_and_fold(self._bn0(logmel), self.interp_slots)

    def forward_direct(self, wave: Tensor) -> Tensor:
        """Reference path, same numbers as `forward`: tile, reflect-pad, conv over all frames, full interpolation."""
        x = self._segments(wave)
        reps = -(-self.n_samples // self.segment_samples)
        tiled = x.repeat(1, reps)[:, : self.n_samples]  # [BT, n_samples]
        pad = self.cfg.n_fft // 2
        padded = F.pad(tiled.unsqueeze(1), (pad, pad), mode="reflect")
        frames = F.conv1d(padded, self.dft_kernel, stride=self.cfg.hop_length)  # [BT, n_fft, n_frames]
        logmel = self._bn0(self._power_to_logmel(frames))
        return self._interpolate_and_fold(logmel, self.interp_frames)
