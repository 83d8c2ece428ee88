"""One copy of each weight per graph (issue 17, lean bundles): initializers with the same dtype, shape and bytes merged.

    removed = dedupe_initializers(model)   # an onnx_ir model, in place; returns how many initializers went
    removed = dedupe_file(path)            # an ONNX file (and its `<file>.data`), rewritten atomically if any went

Why a bundle had duplicates (tiny AVE, before this module): onnx_ir's `DeduplicateInitializersPass`, which the
export ran, skips every initializer above 1,024 *elements*, i.e. every real weight; the copies it left are

* a module called twice with the same weights (the caption mapper on the visual and the audio caption, CASE's
  shared feed-forward blocks, the text tower's causal mask in every residual block): the exporter emits one
  Transpose / Unsqueeze of the shared weight per call, and constant folding turns each into its own initializer;
* the FP16 and INT8 converters (Model Optimizer's AutoCast and Q/DQ placement) give a weight read by several nodes
  one copy per consumer (`latent_1`, `latent_2`, `running_mean_1` ... `_5`).

`dedupe_initializers` has no such limit and compares a SHA-512 of each tensor (plus dtype and shape) rather than
keeping the bytes as dictionary keys, so the export's peak memory does not grow by a copy of the weights (onnx_ir's
own `DeduplicateHashedInitializersPass` does the same but fails on the non-contiguous arrays torch's exporter
leaves: "ndarray is not C-contiguous"). Merging equal constants changes no value the graph computes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np


def _key(value) -> tuple:
    tensor = value.const_value
    digest = hashlib.sha512(np.ascontiguousarray(tensor.numpy()).tobytes()).hexdigest()
    return tensor.dtype, tuple(tensor.shape), digest


def dedupe_initializers(model) -> int:
    """Merge equal initializers of every graph of the onnx_ir `model` (module docstring); returns how many went."""
    removed = 0
    for graph in model.graphs():
        kept: dict = {}
        for value in tuple(graph.initializers.values()):
            if value.const_value is None or value.is_graph_input() or value.is_graph_output():
                continue
            if value.const_value.dtype.is_string():
                continue
            key = _key(value)
            if key not in kept:
                kept[key] = value
                continue
            value.replace_all_uses_with(kept[key])
            graph.initializers.pop(value.name)
            removed += 1
    return removed


def dedupe_file(path) -> int:
    """`dedupe_initializers` on the ONNX file `path`, keeping its layout (weights in `<file>.data` stay there); each
    file is replaced atomically (the export does this inside its staging directory), and only when something was
    merged. Returns how many went."""
    import onnx_ir as ir

    path = Path(path)
    sidecar = path.with_name(path.name + ".data")
    model = ir.load(path)
    removed = dedupe_initializers(model)
    if not removed:
        return 0
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        if sidecar.exists():
            ir.save(model, tmp / path.name, external_data=sidecar.name)
            os.replace(tmp / sidecar.name, sidecar)
        else:
            ir.save(model, tmp / path.name)
        os.replace(tmp / path.name, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return removed
