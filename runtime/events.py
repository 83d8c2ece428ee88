"""Head outputs of a video's windows -> per-second labels and events, in numpy (torch-free).

The per-window rules are the model's own (numpy twins in `caeav.model.heads.postprocess` and `postprocess_avvp`);
over a timeline of several windows the inputs of those rules are first averaged per second (`caeav.runtime.windows`),
so a second covered by a single window gets exactly the label `ave_predict` / `avvp_predict` give for that window.

AVE (CMBS head: `is_event` [T] logits, `event` [28] logits per window):
    label(t) = argmax_c event(t)  if is_event(t) > 0 (σ > 0.5), else 28 = background
    event_prob(t) = σ(is_event(t)); class_prob(t) = softmax(event(t))[argmax]
    confidence(t) = event_prob · class_prob for an event (probability of that exact label), 1 − event_prob for
    background.
AVE (MLP head: `segment_logits` [T, 29]): label = argmax, confidence = its softmax probability.
AVVP (MGN head: `global_prob` [25], `a_frame_prob` / `v_frame_prob` [T, 25] per window):
    audio(t, c) = a_frame_prob(t, c) >= 0.5 ∧ global_prob(c) >= 0.5;  visual likewise;
    audio_visual = audio ∧ visual.
Events are maximal runs of consecutive seconds with the same label (AVE, background included) or with a class on
(AVVP, per modality); onset/offset are in seconds (offset exclusive) and confidence is the mean over the run.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .windows import merge_per_second, spread

AVVP_THRESHOLD = 0.5


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def softmax(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, in float64."""
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def runs(mask_or_labels: np.ndarray) -> list[tuple[int, int, int]]:
    """(value, start, stop) for each maximal run of equal values in a 1-D integer array."""
    a = np.asarray(mask_or_labels)
    if a.size == 0:
        return []
    edges = np.flatnonzero(np.diff(a)) + 1
    bounds = np.concatenate(([0], edges, [a.size]))
    return [(int(a[s]), int(s), int(e)) for s, e in zip(bounds[:-1], bounds[1:])]


def ave_timeline(windows: Sequence[dict], starts: Sequence[int], n: int, segments: int,
                 class_names: Sequence[str]) -> dict:
    """Per-second AVE labels for one video from its windows' head outputs (no batch axis). See the module doc."""
    if "segment_logits" in windows[0]:
        logits = merge_per_second([w["segment_logits"] for w in windows], starts, n)
        labels = logits.argmax(axis=-1).astype(np.int64)
        probs = softmax(logits)
        conf = probs[np.arange(n), labels]
        background = logits.shape[-1] - 1
        event_prob = 1.0 - probs[:, background]
        class_prob = conf
    else:
        is_event = merge_per_second([w["is_event"] for w in windows], starts, n)
        event = merge_per_second([spread(w["event"], segments) for w in windows], starts, n)
        background = event.shape[-1]
        cls = event.argmax(axis=-1).astype(np.int64)
        labels = np.where(is_event > 0, cls, background).astype(np.int64)
        event_prob = _sigmoid(is_event)
        class_prob = softmax(event)[np.arange(n), cls]
        conf = np.where(labels == background, 1.0 - event_prob, event_prob * class_prob)
    names = list(class_names)[:background] + ["background"]
    per_second = [{"second": t, "label": names[int(labels[t])], "index": int(labels[t]),
                   "confidence": round(float(conf[t]), 4), "event_prob": round(float(event_prob[t]), 4),
                   "class_prob": round(float(class_prob[t]), 4)} for t in range(n)]
    events = [{"label": names[v], "index": v, "onset": s, "offset": e, "background": v == background,
               "confidence": round(float(np.mean(conf[s:e])), 4)} for v, s, e in runs(labels)]
    return {"per_second": per_second, "events": events,
            "arrays": {"labels": labels, "confidence": conf.astype(np.float32), "background": background}}


def avvp_timeline(windows: Sequence[dict], starts: Sequence[int], n: int, segments: int,
                  class_names: Sequence[str], threshold: float = AVVP_THRESHOLD) -> dict:
    """Per-second audio / visual / audio-visual events for one video (module doc)."""
    a = merge_per_second([w["a_frame_prob"] for w in windows], starts, n)  # [n, C]
    v = merge_per_second([w["v_frame_prob"] for w in windows], starts, n)
    g = merge_per_second([spread(w["global_prob"], segments) for w in windows], starts, n)
    gate = g >= threshold
    on = {"audio": (a >= threshold) & gate, "visual": (v >= threshold) & gate}
    on["audio_visual"] = on["audio"] & on["visual"]
    prob = {"audio": a, "visual": v, "audio_visual": np.minimum(a, v)}
    names = list(class_names)
    per_second = [{"second": t, **{m: [names[c] for c in np.flatnonzero(on[m][t])] for m in on}} for t in range(n)]
    events = {m: [] for m in on}
    for m, mask in on.items():
        for c in range(mask.shape[1]):
            for value, s, e in runs(mask[:, c].astype(np.int64)):
                if value:
                    events[m].append({"label": names[c], "index": c, "onset": s, "offset": e,
                                      "confidence": round(float(prob[m][s:e, c].mean()), 4)})
        events[m].sort(key=lambda ev: (ev["onset"], ev["index"]))
    video_labels = [names[c] for c in np.flatnonzero(gate.any(axis=0))]
    return {"per_second": per_second, "events": events, "video_labels": video_labels,
            "arrays": {**{k: m.astype(np.int64) for k, m in on.items()},
                       **{f"prob_{k}": p.astype(np.float32) for k, p in prob.items()}}}
