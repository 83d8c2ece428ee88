"""AVVP prediction rule in numpy only (no torch): the torch-free runtime and the metrics use it.

MGN's inference rule (architecture.md §7.2; authors' `AVVP/main.py:148-196`, metrics-and-data.md §2.2 step 1):

    o[b, c]        = global_prob[b, c] >= 0.5                      (predicted video-level labels)
    audio[b, c, t] = (a_frame_prob[b, t, c] >= 0.5) ∧ o[b, c]       (segment-level audio events)
    visual[b, c, t]= (v_frame_prob[b, t, c] >= 0.5) ∧ o[b, c]
    av[b, c, t]    = audio ∧ visual

The gate uses the model's own video-level prediction, not the weak ground truth. Outputs are 0/1 int64 in the metrics'
layout, classes × segments (`[B, 25, T]`), i.e. SO_a / SO_v / SO_av of the official evaluation per clip.
`caeav.model.heads.avvp.AVVPHead.predict` applies the same rule with torch ops; the tests check both agree.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

AVVP_THRESHOLD = 0.5


def avvp_predict(global_prob, a_frame_prob, v_frame_prob, threshold: float = AVVP_THRESHOLD) -> dict:
    """global_prob `[B, C]`, a/v_frame_prob `[B, T, C]` → {"video" [B, C], "audio", "visual", "av" [B, C, T]} int64."""
    video = np.asarray(global_prob) >= threshold
    a, v = np.asarray(a_frame_prob), np.asarray(v_frame_prob)
    if video.ndim != 2 or a.ndim != 3 or a.shape != v.shape or (a.shape[0], a.shape[2]) != video.shape:
        raise ValueError(f"expected global_prob [B, C] and frame probabilities [B, T, C]; got {video.shape}, "
                         f"{a.shape}, {v.shape}")
    audio = ((a >= threshold) & video[:, None, :]).transpose(0, 2, 1)
    visual = ((v >= threshold) & video[:, None, :]).transpose(0, 2, 1)
    return {
        "video": video.astype(np.int64),
        "audio": audio.astype(np.int64),
        "visual": visual.astype(np.int64),
        "av": (audio & visual).astype(np.int64),
    }


def avvp_predict_outputs(outputs: Mapping[str, np.ndarray], threshold: float = AVVP_THRESHOLD) -> dict:
    """`avvp_predict` on the AVVP head's named outputs (`global_prob`, `a_frame_prob`, `v_frame_prob`)."""
    return avvp_predict(outputs["global_prob"], outputs["a_frame_prob"], outputs["v_frame_prob"], threshold)
