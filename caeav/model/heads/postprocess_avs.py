"""AVS prediction rule in numpy only (no torch): the torch-free runtime uses it.

A pixel belongs to the sounding object when σ(logit) > 0.5 (AVSBench's `mask_iou`, metrics-and-data.md §2.3). It is
evaluated as logit > 0, which is the same rule in exact arithmetic and cannot differ between numpy, torch, onnxruntime
and TensorRT. (The authors apply σ in float32 first, which also calls 0 < logit ≲ 3e-8 background.)
`caeav.model.heads.avs.AVSHead.predict` applies the same rule with torch ops.
"""

from __future__ import annotations

import numpy as np


def avs_predict(masks, segments: int) -> np.ndarray:
    """Mask logits `[B·T, 1, H, W]` (the head's `masks`; `[B·T, H, W]` also accepted) → 0/1 uint8 `[B, T, H, W]`."""
    logits = np.asarray(masks)
    if logits.ndim == 4:
        if logits.shape[1] != 1:
            raise ValueError(f"expected mask logits [B*T, 1, H, W], got {logits.shape}")
        logits = logits[:, 0]
    if logits.ndim != 3 or logits.shape[0] % segments:
        raise ValueError(f"expected mask logits [B*T, 1, H, W] with T={segments}, got {np.shape(masks)}")
    return (logits > 0).astype(np.uint8).reshape(-1, segments, logits.shape[1], logits.shape[2])
