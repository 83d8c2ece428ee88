"""INT8 for onnxruntime's CPU provider (`*.int8cpu.onnx`): onnxruntime's own dynamic quantisation, no calibration.

    from caeav.calibration.ort_int8 import quantize_int8_cpu
    quantize_int8_cpu("bundle/encoder.onnx", "bundle/encoder.int8cpu.onnx")

Why a second INT8 graph: the Q/DQ graph of `quantize_int8` (Model Optimizer, for TensorRT's explicit quantisation)
runs on onnxruntime's CPU provider no faster than FP32. Its weights are stored in FP32 behind QuantizeLinear /
DequantizeLinear pairs, and after onnxruntime's own graph optimisation (tiny AVE encoder, ORT 1.32, checked with
`optimized_model_filepath`) 296 QuantizeLinear and 470 DequantizeLinear nodes still run on every call, next to 59
FP32 MatMuls; only 48 MatMuls became integer kernels (`MatMulIntegerToFloat`). This graph is what the CPU kernels want: each MatMul whose B is a weight becomes
`DynamicQuantizeLinear` (the activation to uint8 with a per-tensor scale computed on the fly, per call) feeding
`MatMulInteger` with the weight stored as int8 per output channel, which onnxruntime's graph optimiser fuses into
`DynamicQuantizeMatMul` (MLAS's u8×s8 GEMM: VNNI dot products on CPUs that have them). The graph holds those weights
as int8, so it is also less than half the FP32 graph's bytes (paper AVE encoder: 650 MB against 1,389 MB; the
convolutions stay FP32).

Choices (overridable by keyword):
- `op_types` MatMul and Gemm: the transformer linears, attention projections, router and channel maps. Conv stays
  FP32 (patch embeddings, depthwise temporal convolutions, the adapters' 1×1 convolutions); rewriting the AVMoE adapters' 1×1
  convolutions (token mixing, expert bottlenecks) as Transpose-MatMul-Transpose so that they quantise was measured
  slower (paper AVE encoder, 2 threads: 4.84 s per clip rewriting all of them, 4.59 s only the 4096 × 2304 token
  mixing, 4.34 s none; the added Transposes cost more than the integer GEMMs save).
- MatMuls of two activations (attention scores, attention × values) stay FP32 (`MatMulConstBOnly`).
- the log-mel front end (`DEFAULT_EXCLUDE_SCOPES`, as for the Q/DQ graph) stays FP32.
- `reduce_range=True`: 7-bit weights, so that a CPU without VNNI (AVX2's u8×s8 multiply-add saturates at int16)
  computes the same result as one with it; the bundle may run on a machine other than the one that exported it.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Sequence

from caeav.errors import ExportError

from .ptq import DEFAULT_EXCLUDE_SCOPES, nodes_in_scopes

CPU_INT8_OPS = ("MatMul", "Gemm")
EXTERNAL_DATA_BYTES = 1_800_000_000  # quantise to external data above this (protobuf's 2 GiB limit, with room)


def quantize_int8_cpu(onnx_path, out_path, *, op_types: Sequence[str] = CPU_INT8_OPS,
                      exclude_scopes: Sequence[str] = DEFAULT_EXCLUDE_SCOPES, reduce_range: bool = True,
                      per_channel: bool = True) -> Path:
    """Write the dynamically quantised graph of `onnx_path` to `out_path` (atomically) and return its path."""
    import onnx

    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as err:
        raise ExportError(f"int8cpu needs onnxruntime's quantisation tools ({err}): pip install onnxruntime") from None
    src, out = Path(onnx_path), Path(out_path)
    if not src.is_file():
        raise ExportError(f"ONNX graph {src} not found")
    model = onnx.load(str(src))
    excluded = nodes_in_scopes(model, exclude_scopes)
    large = model.ByteSize() > EXTERNAL_DATA_BYTES
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.stem}-") as scratch:
        tmp = Path(scratch) / out.name  # the final name: an external-data sidecar it names stays valid when moved
        root, level = logging.getLogger(), logging.getLogger().level
        root.setLevel(max(level, logging.ERROR))  # quantize_dynamic logs a "run pre-processing" hint on the root logger
        try:
            quantize_dynamic(model, tmp, op_types_to_quantize=list(op_types), per_channel=per_channel,
                             reduce_range=reduce_range, weight_type=QuantType.QInt8, nodes_to_exclude=excluded,
                             use_external_data_format=large, extra_options={"MatMulConstBOnly": True})
        except (ValueError, RuntimeError, AssertionError) as err:
            raise ExportError(f"int8cpu quantisation of {src.name} failed: {str(err).splitlines()[0] if str(err) else err!r}") \
                from None
        finally:
            root.setLevel(level)
        del model
        parts = [f for f in Path(scratch).iterdir() if f.name.startswith(out.name)]  # the graph and its sidecar
        for part in sorted(parts, key=lambda f: f == tmp):  # the sidecar first, the graph last
            os.replace(part, out.parent / part.name)
    return out
