"""Checks of a quantised graph against its FP32 source in onnxruntime (CPU): cosine similarity of every output
(encoder features), max/mean absolute error, and agreement of predictions (arg-max over the class axis).

    report = compare_graphs("encoder.onnx", "encoder.int8.onnx", feeds)
    report["outputs"]["v"]["cosine"]   # >= manifest tolerances["int8"]["cosine"] (0.99)
"""

from __future__ import annotations

from typing import Callable, Mapping, Optional

import numpy as np


def cosine(ref: np.ndarray, test: np.ndarray) -> float:
    """Cosine similarity of two arrays flattened (1.0 when both are all zeros)."""
    a = np.asarray(ref, dtype=np.float64).ravel()
    b = np.asarray(test, dtype=np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0.0 and nb == 0.0:
        return 1.0
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(a @ b / (na * nb))


def agreement(ref_scores: np.ndarray, test_scores: np.ndarray, axis: int = -1) -> float:
    """Fraction of positions whose arg-max over `axis` (the class axis) is the same in both."""
    return float(np.mean(np.argmax(ref_scores, axis=axis) == np.argmax(test_scores, axis=axis)))


def run_graph(path, feeds: Mapping[str, np.ndarray], batch: Optional[int] = None) -> dict[str, np.ndarray]:
    """Outputs of an ONNX graph on onnxruntime's CPU EP; `batch` splits the feeds along axis 0 (outputs are
    concatenated back along axis 0)."""
    from caeav.runtime.session_ort import OrtSession

    sess = OrtSession(path, providers=["CPUExecutionProvider"])
    n = int(next(iter(feeds.values())).shape[0])
    step = batch or n
    parts = [sess.run({k: v[i:i + step] for k, v in feeds.items()}) for i in range(0, n, step)]
    return {name: np.concatenate([p[name] for p in parts], axis=0) for name in sess.output_names}


def compare_outputs(ref: Mapping[str, np.ndarray], test: Mapping[str, np.ndarray],
                    predict: Optional[Callable[[np.ndarray], np.ndarray]] = None) -> dict:
    """Per-output cosine / max_abs / mean_abs, plus `agreement` of `predict(output)` (class scores) when given."""
    report = {}
    for name, r in ref.items():
        t = test[name]
        entry = {"cosine": cosine(r, t), "max_abs": float(np.max(np.abs(r - t))) if r.size else 0.0,
                 "mean_abs": float(np.mean(np.abs(r - t))) if r.size else 0.0}
        if predict is not None:
            entry["agreement"] = agreement(predict(r), predict(t))
        report[name] = entry
    return report


def compare_graphs(fp32_path, test_path, feeds: Mapping[str, np.ndarray], batch: Optional[int] = None,
                   predict: Optional[Callable[[np.ndarray], np.ndarray]] = None) -> dict:
    """Run both graphs on the same feeds and compare their outputs (see `compare_outputs`); `min_cosine` is the
    lowest cosine over the outputs."""
    ref = run_graph(fp32_path, feeds, batch)
    test = run_graph(test_path, feeds, batch)
    outputs = compare_outputs(ref, test, predict)
    return {"outputs": outputs, "min_cosine": min(o["cosine"] for o in outputs.values())}
