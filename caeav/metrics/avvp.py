"""AVVP on LLP: segment-level and event-level F-scores exactly as the official LLP evaluation computes them.

Definitions (metrics-and-data.md §2.2; authors' `CAE-AV/AVVP/main.py:99-253` and `utils/eval_metrics.py`, the code of
the LLP release, YapengTian/AVVP-ECCV20 `utils/eval_metrics.py`):

* Prediction per clip: video-level probabilities [25] and frame-level audio / visual probabilities [T, 25] are
  thresholded with `>= 0.5`; each frame map is multiplied by the *predicted* video-level labels (`binarize`).
* Ground truth per clip: [25, T] 0/1 for audio and for visual (see `caeav.data.annotations.llp`).
* SO_av = SO_a * SO_v and GT_av = GT_a * GT_v, elementwise (`main.py:191-196`). The official `segment_level` and
  `event_level` take SO_av and GT_av as arguments of their own; so do ours (`so_av`, `gt_av`, optional): when passed
  they are used as given, when omitted they are the products.
* Segment level (`segment_level`): per class TP/FP/FN over the T segments, F_c = 2TP / (2TP + FP + FN) for the classes
  with TP+FP > 0 or TP+FN > 0; the clip score is the mean of those F_c, or 1.0 when no class qualifies. Computed for a,
  v, av, and a pooled score whose per-class counts are the audio and visual counts added.
* Event level (`event_level`): events are maximal runs of 1s (`extract_events`); a predicted event is a TP if some GT
  event of the class has |P∩G| >= 0.5 |P∪G| (IoU >= 0.5, inclusive), else an FP; a GT event with no predicted event at
  IoU >= 0.5 is an FN. No onset/offset tolerance. Then the same per-class F, qualifying rule, 1.0 default and pooling.
* Dataset (`avvp_scores`): each clip score is averaged over clips and x100. Type@AV = (A + V + AV) / 3; Event@AV is the
  mean of the *pooled* scores (not the AV score).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ._common import as_binary, check_shape

AVVP_NUM_CLASSES = 25
AVVP_NUM_SEGMENTS = 10


class ClipF(NamedTuple):
    """One clip's scores in [0, 1], in the order the official functions return them."""

    audio: float
    visual: float
    pooled: float  # audio and visual counts added per class (the per-clip "Event@AV")
    audio_visual: float


def binarize(video_prob, frame_prob_audio, frame_prob_visual, threshold: float = 0.5):
    """Official thresholding (`main.py:148-155`): returns SO_a, SO_v as [25, T] int64 (classes x segments).

    `video_prob` is [25]; the frame probabilities are [T, 25] (the model's layout). A class can be on in a segment only
    if the predicted video-level label is on (`p >= threshold`), whatever the weak ground-truth label says.
    """
    o = (np.asarray(video_prob) >= threshold).astype(np.int64)
    check_shape(o, (None,), "video_prob")
    out = []
    for name, fp in (("frame_prob_audio", frame_prob_audio), ("frame_prob_visual", frame_prob_visual)):
        p = np.asarray(fp)
        check_shape(p, (None, o.shape[0]), name)
        out.append(((p >= threshold).astype(np.int64) * o[None, :]).T)
    return out[0], out[1]


def _runs(row: np.ndarray) -> list[tuple[int, int]]:
    padded = np.concatenate(([0], row, [0]))
    edges = np.flatnonzero(np.diff(padded))
    return [(int(a), int(b)) for a, b in zip(edges[0::2], edges[1::2])]


def extract_events(seq) -> list[tuple[int, int]]:
    """Maximal runs of 1s in a 0/1 sequence as half-open (start, end) segment ranges (`extract_event`).

    >>> extract_events([1, 1, 0, 0, 1, 0, 0, 0, 1, 1])
    [(0, 2), (4, 5), (8, 10)]
    """
    s = as_binary(seq, "seq")
    check_shape(s, (None,), "seq")
    return _runs(s)


def _iou_match(x: tuple[int, int], y: tuple[int, int]) -> bool:
    """`np.sum(x1 * x2) >= 0.5 * np.sum(x1 + x2 - x1 * x2)` on the segment sets of two runs."""
    inter = max(0, min(x[1], y[1]) - max(x[0], y[0]))
    union = (x[1] - x[0]) + (y[1] - y[0]) - inter
    return inter >= 0.5 * union


def event_counts(pred_events, gt_events) -> tuple[int, int, int]:
    """(TP, FP, FN) for one class (`event_wise_metric`): TP and FP counted over predicted events, FN over GT events."""
    tp = fp = fn = 0
    for p in pred_events:
        if any(_iou_match(p, g) for g in gt_events):
            tp += 1
        else:
            fp += 1
    for g in gt_events:
        if not any(_iou_match(g, p) for p in pred_events):
            fn += 1
    return tp, fp, fn


def mean_class_f(tp, fp, fn) -> np.ndarray:
    """Mean over qualifying classes (last axis) of 2TP / (2TP + (FN + FP)); 1.0 where no class has TP+FP > 0 or
    TP+FN > 0. Summed in class order (a running sum), as the official `sum(F) / len(F)`."""
    tp, fp, fn = (np.asarray(x, dtype=np.float64) for x in (tp, fp, fn))
    qualifies = ((tp + fp) != 0) | ((tp + fn) != 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        f = np.where(qualifies, 2 * tp / (2 * tp + (fn + fp)), 0.0)
    total = np.cumsum(f, axis=-1)[..., -1]  # sequential, so x + 0.0 for the other classes changes nothing
    count = qualifies.sum(axis=-1)
    return np.where(count > 0, total / np.maximum(count, 1), 1.0)


def _segment_counts(so: np.ndarray, gt: np.ndarray):
    """Per-class (TP, FP, FN) over the segment axis, for arrays [..., C, T]."""
    return (so * gt).sum(axis=-1), (so * (1 - gt)).sum(axis=-1), ((1 - so) * gt).sum(axis=-1)


def _event_counts(so: np.ndarray, gt: np.ndarray):
    """Per-class event (TP, FP, FN) for arrays [..., C, T]; rows empty in both give (0, 0, 0)."""
    counts = np.zeros(so.shape[:-1] + (3,), np.float64)
    for idx in zip(*np.nonzero(so.any(axis=-1) | gt.any(axis=-1))):
        counts[idx] = event_counts(_runs(so[idx]), _runs(gt[idx]))
    return counts[..., 0], counts[..., 1], counts[..., 2]


def _scores(counts, so_a, so_v, gt_a, gt_v, so_av=None, gt_av=None) -> np.ndarray:
    """[..., 4] scores (audio, visual, pooled, audio_visual) for 0/1 arrays [..., C, T]; the AV matrices default to
    the products."""
    so_av = so_a * so_v if so_av is None else so_av
    gt_av = gt_a * gt_v if gt_av is None else gt_av
    ca, cv, cav = counts(so_a, gt_a), counts(so_v, gt_v), counts(so_av, gt_av)
    pooled = [a + v for a, v in zip(ca, cv)]
    return np.stack([mean_class_f(*ca), mean_class_f(*cv), mean_class_f(*pooled), mean_class_f(*cav)], axis=-1)


def _checked(arrays, names, ndim):
    """0/1 arrays of one shape (`ndim` axes); None entries (omitted AV matrices) stay None."""
    arrs = [None if x is None else as_binary(x, n) for x, n in zip(arrays, names)]
    check_shape(arrs[0], (None,) * ndim, names[0])
    for arr, n in zip(arrs[1:], names[1:]):
        if arr is not None:
            check_shape(arr, arrs[0].shape, n)
    return arrs


_CLIP_NAMES = ("so_a", "so_v", "gt_a", "gt_v", "so_av", "gt_av")


def segment_level(so_a, so_v, gt_a, gt_v, so_av=None, gt_av=None) -> ClipF:
    """Segment-level clip scores (`segment_level`, `eval_metrics.py:146-206`) from [C, T] 0/1 matrices; `so_av`,
    `gt_av` used as given when passed, else the products."""
    arrs = _checked((so_a, so_v, gt_a, gt_v, so_av, gt_av), _CLIP_NAMES, 2)
    return ClipF(*(float(x) for x in _scores(_segment_counts, *arrs)))


def event_level(so_a, so_v, gt_a, gt_v, so_av=None, gt_av=None) -> ClipF:
    """Event-level clip scores (`event_level`, `eval_metrics.py:33-143`) from [C, T] 0/1 matrices; `so_av`, `gt_av`
    used as given when passed, else the products."""
    arrs = _checked((so_a, so_v, gt_a, gt_v, so_av, gt_av), _CLIP_NAMES, 2)
    return ClipF(*(float(x) for x in _scores(_event_counts, *arrs)))


def _summary(clips: np.ndarray) -> dict[str, float]:
    a, v, event, av = (100 * np.mean(np.ascontiguousarray(clips[:, k])) for k in range(4))
    type_av = (av + a + v) / 3.0
    return {"audio": float(a), "visual": float(v), "audio_visual": float(av), "type_av": float(type_av), "event_av": float(event)}


def avvp_scores(pred_audio, pred_visual, gt_audio, gt_visual, pred_av=None,
                gt_av=None) -> dict[str, dict[str, float]]:
    """Dataset AVVP numbers in percent (`main.py:212-238`) from 0/1 arrays [N, 25, T] (clips x classes x segments).

    Returns {"segment": {...}, "event": {...}}, each with keys audio, visual, audio_visual, type_av = (A + V + AV) / 3
    and event_av = mean of the pooled clip scores. Clips are weighted equally. `pred_av`, `gt_av`: the audio-visual
    matrices, used as given when passed, else the products (as `segment_level`).
    """
    names = ("pred_audio", "pred_visual", "gt_audio", "gt_visual", "pred_av", "gt_av")
    arrs = _checked((pred_audio, pred_visual, gt_audio, gt_visual, pred_av, gt_av), names, 3)
    if arrs[0].shape[0] == 0:
        raise ValueError("avvp_scores needs at least one clip")
    return {"segment": _summary(_scores(_segment_counts, *arrs)), "event": _summary(_scores(_event_counts, *arrs))}
