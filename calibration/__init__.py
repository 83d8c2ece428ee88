"""caeav.calibration: INT8 post-training quantisation (Q/DQ ONNX through NVIDIA Model Optimizer, decisions D10),
the calibration inputs it needs (decoded clips cached as `.npz`) and onnxruntime checks against FP32.

`build_calib_inputs` and the checks are torch-free; `quantize_int8` needs the `export` extra (Model Optimizer).
"""

from .inputs import build_calib_inputs, cache_key, list_videos, load_calib_npz
from .ptq import (
    DEFAULT_EXCLUDE_SCOPES,
    FP16_KEEP_FP32,
    count_qdq,
    excluded_nodes_quantized,
    nodes_in_scopes,
    quantize_int8,
)
from .validate import agreement, compare_graphs, compare_outputs, cosine, run_graph

__all__ = [
    "DEFAULT_EXCLUDE_SCOPES", "FP16_KEEP_FP32", "agreement", "build_calib_inputs", "cache_key", "compare_graphs",
    "compare_outputs", "cosine", "count_qdq", "excluded_nodes_quantized", "list_videos", "load_calib_npz",
    "nodes_in_scopes", "quantize_int8", "run_graph",
]
