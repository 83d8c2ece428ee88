"""AVQA on MUSIC-AVQA: answer accuracy per question type, per modality and overall.

Definition (metrics-and-data.md §2.4; authors' `CAE-AV/AVQA/net_grd_avst/main_avst_v2.py:151-308`): the prediction is
the argmax over the answer logits; a question is correct when it equals the answer's vocabulary index. Nine type
buckets: Audio {Counting, Comparative}, Visual {Counting, Location}, Audio-Visual {Existential, Counting, Location,
Comparative, Temporal}. Audio / Visual / Audio-Visual are *pooled* over their questions (not the mean of the type
accuracies); Overall = correct / all questions. All values x100.

The official script divides by zero on an empty bucket; here an empty bucket is NaN.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ._common import check_shape

# (modality, kind) in the official report order, with the result key of each
AVQA_QUESTION_TYPES: tuple[tuple[str, str], ...] = (
    ("Audio", "Counting"),
    ("Audio", "Comparative"),
    ("Visual", "Counting"),
    ("Visual", "Location"),
    ("Audio-Visual", "Existential"),
    ("Audio-Visual", "Counting"),
    ("Audio-Visual", "Location"),
    ("Audio-Visual", "Comparative"),
    ("Audio-Visual", "Temporal"),
)
AVQA_MODALITIES = {"Audio": "audio", "Visual": "visual", "Audio-Visual": "av"}


def type_key(question_type: tuple[str, str]) -> str:
    """Result key of a question type, e.g. ("Audio-Visual", "Temporal") -> "av_temporal"."""
    modality, kind = question_type
    return f"{AVQA_MODALITIES[modality]}_{kind.lower()}"


def _pct(correct: int, total: int) -> float:
    return 100.0 * correct / total if total else float("nan")


def avqa_accuracy(pred, target, types: Sequence[tuple[str, str]]) -> dict[str, float]:
    """Accuracies in percent: the 9 type keys (`audio_counting` ... `av_temporal`), `audio`, `visual`, `av`, `overall`.

    `pred` is [N] answer indices or [N, A] logits (argmax, first maximum on ties); `target` is [N] answer indices;
    `types` holds each question's (modality, kind), e.g. ("Audio", "Counting"). Unknown types raise ValueError.
    """
    p = np.asarray(pred)
    if p.ndim == 2:
        p = p.argmax(axis=1)
    t = np.asarray(target)
    check_shape(t, (None,), "target")
    check_shape(p, t.shape, "pred")
    if len(types) != len(t):
        raise ValueError(f"types has {len(types)} entries for {len(t)} questions")
    known = set(AVQA_QUESTION_TYPES)
    right = {q: 0 for q in AVQA_QUESTION_TYPES}
    count = {q: 0 for q in AVQA_QUESTION_TYPES}
    for ok, q in zip(p == t, types):
        q = tuple(q)
        if q not in known:
            raise ValueError(f"unknown AVQA question type {list(q)}")
        right[q] += int(ok)
        count[q] += 1
    out = {type_key(q): _pct(right[q], count[q]) for q in AVQA_QUESTION_TYPES}
    for modality, key in AVQA_MODALITIES.items():
        qs = [q for q in AVQA_QUESTION_TYPES if q[0] == modality]
        out[key] = _pct(sum(right[q] for q in qs), sum(count[q] for q in qs))
    out["overall"] = _pct(int(np.count_nonzero(p == t)), len(t))
    return out
