"""AVS on AVSBench (S4, MS3): mIoU (Jaccard) and F-score with beta^2 = 0.3, as AVSBench's `utility.py` computes them.

Definitions (metrics-and-data.md §2.3; authors' `CAE-AV/AVS/avs_scripts/avs_s4/utils/utility.py:45-118`, the MS3 copy
is identical), one video = its 5 frames, test batch size 1:

* mIoU (`mask_iou`): a frame is binarised as sigmoid(logit) > 0.5 (strict). Non-empty GT: IoU = |P∧G| / |P∨G|. Empty
  GT: IoU = (pixels where both are 0) / (H W). Each ratio is divided by (union + 1e-7) in float32. Video score = mean
  over its frames; dataset score = mean over videos.
* F-score (`Eval_Fmeasure`): probabilities = sigmoid(logits); 255 thresholds `torch.linspace(0, 1 - 1e-10, 255)` in
  float32 (the last one is exactly 1.0), read bit-exact from the table `caeav/assets/reference/avs_fscore_thresholds.txt`;
  a pixel is positive at threshold th if prob >= th (inclusive, so a probability equal to a threshold counts). Frames whose GT is all zero
  are skipped. Per kept frame and threshold: P = TP / (#pos + 1e-20), R = TP / (#gt + 1e-20),
  F = (1 + b2) P R / (b2 P + R) with b2 = 0.3, NaN -> 0. The F curves are averaged over the kept frames and the video
  score is the maximum of that mean curve (the threshold is chosen per video). A video without any non-empty GT frame
  scores 0.0 and still counts. Dataset F = mean over videos.

Values are fractions in [0, 1], as the official scripts print them. Arithmetic mirrors the official float32 steps.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Iterable

import numpy as np

from ._common import as_binary, check_shape, sigmoid_f32

AVS_BETA2 = 0.3
AVS_NUM_THRESHOLDS = 255


THRESHOLD_TABLE = "avs_fscore_thresholds.txt"  # under caeav/assets/reference/


@lru_cache(maxsize=1)
def _threshold_table() -> np.ndarray:
    text = resources.files("caeav").joinpath("assets", "reference", THRESHOLD_TABLE).read_text()
    values = [float.fromhex(line) for line in text.split("\n") if line.strip() and not line.startswith("#")]
    table = np.array(values, dtype=np.float32)  # hex floats of float32 values: exact
    if table.shape != (AVS_NUM_THRESHOLDS,) or not np.all(np.diff(table) > 0):
        raise RuntimeError(f"{THRESHOLD_TABLE}: expected {AVS_NUM_THRESHOLDS} increasing thresholds")
    table.setflags(write=False)
    return table


def fscore_thresholds() -> np.ndarray:
    """The 255 float32 thresholds of `Eval_Fmeasure`, exactly as `torch.linspace(0, 1 - 1e-10, 255)` gives them on CPU
    (a copy of the packaged table; `1 - 1e-10` is 1.0 in float32).

    Stored, not recomputed: torch's vectorised CPU kernel rounds 20 middle thresholds one ulp away from the scalar
    formula start + step·i / end − step·(n−1−i), and a probability that lands on a threshold must count as it does
    in the official evaluation.
    """
    return _threshold_table().copy()


def _frames(pred, gt, from_logits: bool):
    p = np.asarray(pred, dtype=np.float32)
    g = as_binary(gt, "gt")
    check_shape(p, (None, None, None), "pred")
    check_shape(g, p.shape, "gt")
    return (sigmoid_f32(p) if from_logits else p), g


def frame_iou(pred, gt, from_logits: bool = True) -> np.ndarray:
    """Per-frame IoU [F] float32 for one video: pred [F, H, W] logits (or probabilities), gt [F, H, W] 0/1."""
    prob, g = _frames(pred, gt, from_logits)
    binary = (prob > np.float32(0.5)).astype(np.int64)
    inter = (binary * g).sum(axis=(1, 2))
    union = np.maximum(binary, g).sum(axis=(1, 2))
    empty = g.sum(axis=(1, 2)) == 0
    inter = np.where(empty, ((1 - g) * (1 - binary)).sum(axis=(1, 2)), inter)
    union = np.where(empty, g.shape[1] * g.shape[2], union)
    return (inter.astype(np.float32) / (union.astype(np.float32) + np.float32(1e-7))).astype(np.float32)


def video_miou(pred, gt, from_logits: bool = True) -> float:
    """`mask_iou` for one video: the mean of its per-frame IoUs.

    The official float32 sum over the frames depends on the device's reduction order; this mean (in float64) agrees
    with it to within one float32 ulp.
    """
    return float(np.mean(frame_iou(pred, gt, from_logits), dtype=np.float64))


def frame_fcurves(pred, gt, from_logits: bool = True, beta2: float = AVS_BETA2) -> np.ndarray:
    """F-measure curves [K, 255] float32 for the K frames of one video whose GT is not empty (`_eval_pr`)."""
    prob, g = _frames(pred, gt, from_logits)
    th = _threshold_table()
    num_thresholds = len(th)
    b2, one_b2, tiny = np.float32(beta2), np.float32(1.0 + beta2), np.float32(1e-20)
    curves = []
    for p, y in zip(prob, g):
        n_gt = int(y.sum())
        if n_gt == 0:
            continue
        # k = number of thresholds <= p: the pixel is positive at thresholds 0..k-1
        k = np.searchsorted(th, p.ravel(), side="right")
        pos_hist = np.bincount(k, minlength=num_thresholds + 1)
        tp_hist = np.bincount(k[y.ravel() == 1], minlength=num_thresholds + 1)
        n_pos = (pos_hist.sum() - np.cumsum(pos_hist)[:num_thresholds]).astype(np.float32)
        tp = (tp_hist.sum() - np.cumsum(tp_hist)[:num_thresholds]).astype(np.float32)
        prec = tp / (n_pos + tiny)
        rec = tp / (np.float32(n_gt) + tiny)
        with np.errstate(invalid="ignore", divide="ignore"):
            f = one_b2 * prec * rec / (b2 * prec + rec)
        curves.append(np.where(np.isnan(f), np.float32(0.0), f).astype(np.float32))
    return np.stack(curves) if curves else np.zeros((0, num_thresholds), np.float32)


def video_fscore(pred, gt, from_logits: bool = True, beta2: float = AVS_BETA2) -> float:
    """`Eval_Fmeasure` for one video: max over thresholds of the mean F curve of its non-empty-GT frames (0.0 if none)."""
    curves = frame_fcurves(pred, gt, from_logits, beta2)
    if len(curves) == 0:
        return 0.0
    total = np.zeros(curves.shape[1], np.float32)
    for c in curves:  # float32 running sum in frame order, as `avg_f += f_score`
        total = (total + c).astype(np.float32)
    return float((total / np.float32(len(curves))).astype(np.float32).max())


def avs_scores(videos: Iterable[tuple], from_logits: bool = True) -> dict[str, float]:
    """Dataset mIoU and F-score: the mean over videos of `video_miou` and `video_fscore`.

    `videos` yields (pred [F, H, W], gt [F, H, W]) per video, e.g. logits [5, 224, 224] and 0/1 masks.
    """
    mious, fs = [], []
    for pred, gt in videos:
        mious.append(video_miou(pred, gt, from_logits))
        fs.append(video_fscore(pred, gt, from_logits))
    if not mious:
        raise ValueError("avs_scores needs at least one video")
    return {"miou": float(np.mean(mious)), "fscore": float(np.mean(fs))}
