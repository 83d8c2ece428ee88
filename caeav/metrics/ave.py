"""AVE: audio-visual event localisation, segment accuracy with background included.

Definition (metrics-and-data.md §2.1; authors' `CAE-AV/AVE/main_trans_v3.py:356-372`, `compute_accuracy_supervised`
of the CMBS head, the one `test.sh` uses):

1. target(t) = argmax over the 29 label columns of segment t, so background = 28;
2. segment t is "event" iff sigmoid(is_event_logit[t]) > 0.5, strictly (a logit of exactly 0 is background);
3. one class per video: c = argmax of the 28 event-class logits (first maximum on ties);
4. pred(t) = c if segment t is event, else 28;
5. accuracy = 100 x (segments with pred == target) / (videos x segments).

Background segments count: one is correct only when predicted as background. The official test loop (batch size 1)
keeps a float32 running mean of per-batch accuracies; `running_mean_f32` reproduces that, `segment_accuracy` is the
pooled value it equals up to float32 rounding (~2e-5 points) when every batch holds one video.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from ._common import check_shape, sigmoid_f32

AVE_NUM_CLASSES = 28
AVE_BACKGROUND = 28  # label index of a background segment (column 28 of the [10, 29] one-hot labels)


def targets_from_labels(labels) -> np.ndarray:
    """Segment targets [B, T] int64 from one-hot labels [B, T, 29] (argmax, step 1), or pass [B, T] indices through."""
    lab = np.asarray(labels)
    if lab.ndim == 3:
        check_shape(lab, (None, None, AVE_NUM_CLASSES + 1), "labels")
        return lab.argmax(axis=-1).astype(np.int64)
    check_shape(lab, (None, None), "labels")
    if lab.size and (lab.min() < 0 or lab.max() > AVE_BACKGROUND):
        raise ValueError(f"segment labels must lie in 0..{AVE_BACKGROUND}")
    return lab.astype(np.int64)


def predict_segments(is_event_logits, event_logits) -> np.ndarray:
    """Per-segment predictions [B, T] int64 (steps 2-4) from is_event logits [B, T] and class logits [B, 28].

    Class logits may also be [B, 29] or wider: only the first 28 columns are read, as in the official slice.
    """
    is_event = np.asarray(is_event_logits, dtype=np.float32)
    scores = np.asarray(event_logits, dtype=np.float32)
    check_shape(is_event, (None, None), "is_event_logits")
    check_shape(scores, (is_event.shape[0], None), "event_logits")
    if scores.shape[1] < AVE_NUM_CLASSES:
        raise ValueError(f"event_logits needs {AVE_NUM_CLASSES} class columns, got {scores.shape[1]}")
    cls = scores[:, :AVE_NUM_CLASSES].argmax(axis=1)
    foreground = sigmoid_f32(is_event) > np.float32(0.5)
    return np.where(foreground, cls[:, None], AVE_BACKGROUND).astype(np.int64)


def segment_accuracy(pred, target) -> float:
    """Pooled segment accuracy in percent (step 5): 100 x mean(pred == target) over all [B, T] segments.

    `pred` is [B, T] class indices (28 = background); `target` is [B, T] indices or [B, T, 29] one-hot labels.
    """
    p = np.asarray(pred)
    t = targets_from_labels(target)
    check_shape(p, t.shape, "pred")
    if t.size == 0:
        raise ValueError("segment_accuracy needs at least one segment")
    return 100.0 * float(np.count_nonzero(p == t)) / t.size


def accuracy_from_logits(is_event_logits, event_logits, labels) -> float:
    """`compute_accuracy_supervised` end to end: logits [B, T] and [B, 28], labels [B, T, 29] or [B, T] -> percent."""
    return segment_accuracy(predict_segments(is_event_logits, event_logits), labels)


def running_mean_f32(batch_values: Iterable[float]) -> float:
    """The official aggregation: mean <- (mean * k + value_k) / (k + 1), kept in a float32 tensor (`:150-228`).

    With batch size 1 this is the pooled accuracy up to float32 rounding; with a short last batch it is a mean of batch
    means and can differ from the pooled value.
    """
    mean = np.float32(0.0)
    for k, value in enumerate(batch_values):
        mean = np.float32((mean * np.float32(k) + np.float32(value)) / np.float32(k + 1))
    return float(mean)
