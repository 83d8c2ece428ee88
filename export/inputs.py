"""Deterministic model inputs for exporting and for parity checks (numpy only, no torch).

`sample_inputs(cfg, batch, seed)` gives every input the four graphs of a bundle can take, shaped for `cfg`:

    frames       float32 [B, T, 3, S, S]   ImageNet-normalised-looking values, S = task.input_size
    wave         float32 [B, T, 32000]     a few tones plus noise (amplitude ≤ ~0.5, like real audio)
    tokens       int64   [2B, 77]          CLIP-style ids: start token, random words, end token, zero padding
    vis_caption  float32 [B, 77, D]        caption features (unit-scale, as the CLIP tower's LayerNorm output)
    aud_caption  float32 [B, 77, D]
    question     int64   [B, 14]           AVQA only: word ids in 1..vocab-1, zero padded
    st           float32 [B, T, st_dim]    AVVP only, when the head fuses R(2+1)D features
    st_clips     float32 [B, T, 3, F, S', S']  AVVP only, the R(2+1)D-18 stream's input (`cfg.st`: F frames of S'²,
                                           Kinetics-normalised-looking), when the model has the stream

Random tensors are poor FP16 probes (export-notes §1.4), so the waveform is tonal and the frames are smooth.
"""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 32000
QUESTION_LENGTH = 14  # MUSIC-AVQA pads every question to 14 tokens
SOT, EOT = 49406, 49407  # CLIP's start / end-of-text token ids (vocabulary 49408)


def _frames(rng: np.random.Generator, b: int, t: int, size: int) -> np.ndarray:
    """Smooth random images: a coarse 8×8 pattern upsampled, plus fine noise."""
    coarse = rng.standard_normal((b, t, 3, 8, 8)).astype(np.float32)
    reps = -(-size // 8)
    img = np.repeat(np.repeat(coarse, reps, axis=3), reps, axis=4)[..., :size, :size]
    return (img + 0.1 * rng.standard_normal(img.shape)).astype(np.float32)


def _wave(rng: np.random.Generator, b: int, t: int) -> np.ndarray:
    time = np.arange(SAMPLE_RATE, dtype=np.float64) / SAMPLE_RATE
    freqs = rng.uniform(80.0, 6000.0, size=(b, t, 3, 1))
    amps = rng.uniform(0.02, 0.15, size=(b, t, 3, 1))
    tones = (amps * np.sin(2 * np.pi * freqs * time)).sum(axis=2)
    return (tones + 0.01 * rng.standard_normal(tones.shape)).astype(np.float32)


def sample_tokens(rng: np.random.Generator, n: int, context_length: int = 77, vocab_size: int = 49408) -> np.ndarray:
    """`[n, context_length]` int64 token ids: SOT, 3-20 word ids, EOT, zeros."""
    out = np.zeros((n, context_length), dtype=np.int64)
    for i in range(n):
        words = int(rng.integers(3, min(20, context_length - 2) + 1))
        out[i, 0] = min(SOT, vocab_size - 2)
        out[i, 1:words + 1] = rng.integers(1, min(SOT, vocab_size - 2), size=words)
        out[i, words + 1] = min(EOT, vocab_size - 1)
    return out


def sample_inputs(cfg, batch: int, seed: int = 0, st_dim: int = 0) -> dict[str, np.ndarray]:
    """Every graph input of a bundle for `cfg` (a `caeav.config.ModelConfig`), batch `batch` (see module doc).
    `st_dim` > 0 adds AVVP's `st` (the head's `st_dim`; the manifest's head inputs say whether it is used) and the
    stream's `st_clips`."""
    rng = np.random.default_rng(seed)
    task, cap = cfg.task, cfg.caption
    t = int(task.segments)
    feeds = {
        "frames": _frames(rng, batch, t, int(task.input_size)),
        "wave": _wave(rng, batch, t),
        "tokens": sample_tokens(rng, 2 * batch, cap.context_length, cap.vocab_size),
        "vis_caption": rng.standard_normal((batch, cap.context_length, cap.text_dim)).astype(np.float32),
        "aud_caption": rng.standard_normal((batch, cap.context_length, cap.text_dim)).astype(np.float32),
    }
    if task.name == "avqa":
        vocab = int(task.head.get("vocab_size", 93))
        q = np.zeros((batch, QUESTION_LENGTH), dtype=np.int64)
        for i in range(batch):
            n = int(rng.integers(4, QUESTION_LENGTH + 1))
            q[i, :n] = rng.integers(1, vocab, size=n)
        feeds["question"] = q
    if st_dim > 0:
        feeds["st"] = rng.standard_normal((batch, t, st_dim)).astype(np.float32)
        st = cfg.st
        frames = _frames(rng, batch * t, int(st.frames), int(st.size))  # [B·T, F, 3, S', S'] smooth images
        feeds["st_clips"] = np.ascontiguousarray(
            frames.reshape(batch, t, int(st.frames), 3, int(st.size), int(st.size)).transpose(0, 1, 3, 2, 4, 5))
    return feeds
