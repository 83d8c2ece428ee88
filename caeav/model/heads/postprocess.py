"""Turning head outputs into predictions, in numpy only (no torch): the torch-free runtime uses these functions.

The torch heads (`caeav.model.heads.ave`, `caeav.model.heads.avqa`) implement the same rules with torch ops; the tests
check that both agree. Inputs are the named graph outputs, as numpy arrays.

AVE, CMBS head (outputs `is_event` `[B, T]` logits, `event` `[B, C]` logits over the C = 28 event classes):
    label(b, t) = argmax_c event[b, c]   if σ(is_event[b, t]) > 0.5
                  C (= 28, background)   otherwise.
    One event class per video (the argmax is over the video-level `event` logits), broadcast to its event segments.
    σ(x) > 0.5 is evaluated as x > 0 (the same in exact arithmetic, so a logit of exactly 0 is background); this keeps
    numpy, torch and TensorRT from disagreeing on float32 roundings of σ very close to 0.5. (The authors' metric
    applies σ in float32 first, which also calls logits 0 < x ≲ 1e-7 background; no real logit lands there.)
    Ties in the argmax go to the lowest class index (numpy, torch and ONNX ArgMax all pick the first maximum).
AVE, MLP head (output `segment_logits` `[B, T, C + 1]`): label(b, t) = argmax over the 29 columns (28 = background).
AVQA (output `answer` `[B, A]`): the answer index argmax over the A answers (order of ans_vocab.txt).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

AVE_EVENT_CLASSES = 28
AVE_BACKGROUND = AVE_EVENT_CLASSES  # label index 28 of the 29-way segment labels


def ave_predict(outputs: Mapping[str, np.ndarray]) -> np.ndarray:
    """Per-segment AVE labels `[B, T]` int64 in 0..28 from either AVE head's outputs (rule in the module doc)."""
    if "segment_logits" in outputs:
        return np.asarray(outputs["segment_logits"]).argmax(axis=-1).astype(np.int64)
    is_event = np.asarray(outputs["is_event"])
    event = np.asarray(outputs["event"])
    background = event.shape[-1]
    cls = event.argmax(axis=-1).astype(np.int64)  # [B]
    return np.where(is_event > 0, cls[:, None], np.int64(background)).astype(np.int64)


def avqa_predict(outputs: Mapping[str, np.ndarray]) -> np.ndarray:
    """Answer index per question `[B]` int64: argmax of the `answer` logits."""
    return np.asarray(outputs["answer"]).argmax(axis=-1).astype(np.int64)
