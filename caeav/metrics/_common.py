"""Small helpers shared by the metric modules: input checks and the float32 sigmoid the official scripts apply."""

from __future__ import annotations

import numpy as np


def as_binary(x, name: str) -> np.ndarray:
    """`x` as an int64 0/1 array; ValueError if it holds anything other than 0 and 1 (or booleans)."""
    arr = np.asarray(x)
    if arr.dtype != bool and not np.isin(arr, (0, 1)).all():
        raise ValueError(f"{name} must hold only 0 and 1")
    return arr.astype(np.int64)


def check_shape(arr: np.ndarray, shape: tuple, name: str) -> None:
    """ValueError unless `arr.shape` matches `shape`; a None entry in `shape` matches any size."""
    ok = arr.ndim == len(shape) and all(s is None or s == a for s, a in zip(shape, arr.shape))
    if not ok:
        want = "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
        raise ValueError(f"{name} must have shape {want}, got {list(arr.shape)}")


def sigmoid_f32(x) -> np.ndarray:
    """Logistic sigmoid computed in float32, as `torch.sigmoid` on the float32 model outputs.

    Only the comparison `sigmoid(x) > 0.5` (or `>= threshold`) is used downstream; in float32 that comparison is false
    for logits in (0, ~1.2e-7) as well, exactly as in the official scripts.
    """
    x = np.asarray(x, dtype=np.float32)
    with np.errstate(over="ignore"):
        return (np.float32(1.0) / (np.float32(1.0) + np.exp(-x))).astype(np.float32)
