"""This machine's dense GEMM rates, measured in the same process as `caeav bench` (its roofline column).

    rates = gemm_rates(threads=2, torch_too=True)
    rates.rates  # {"fp32": 187.9, "bf16": 388.1, "int8": 610.2} GFLOP/s (None where it could not be measured)

A square `size`² × `size`² matrix product, `repeats` timed calls after one warm-up, best call kept (the rate the
hardware reaches, not a noisy median), 2·size³ FLOPs per call:
- fp32: onnxruntime's CPU `MatMul` (MLAS, the kernels the ORT rows run) and, with `torch_too`, `torch.mm` (the
  kernels of the PyTorch rows); the higher of the two is the FP32 rate;
- int8: onnxruntime's `MatMulInteger` on uint8 × int8 (what ORT's integer MatMul kernels run: VNNI dot products
  where the CPU has them);
- bf16: `torch.mm` on bfloat16 (oneDNN; AVX-512 BF16 / AMX where the CPU has them), with `torch_too` only.
Building the two ONNX graphs needs the `onnx` package; without it those rates are None with a note. torch is only
imported with `torch_too` (the bench imports it anyway for its PyTorch rows).

`share(precision, gflop_s)` is a row's achieved GFLOP/s over the rate of the arithmetic it runs: fp32 and fp16 rows
against fp32 (onnxruntime's x86 CPU provider has no FP16 GEMM; it computes FP16 graphs in FP32 after casts), bf16
against bf16, int8 and int8cpu against int8.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

RATE_OF = {"fp32": "fp32", "fp16": "fp32", "bf16": "bf16", "int8": "int8", "int8cpu": "int8"}


@dataclass
class GemmRates:
    size: int
    threads: Optional[int]
    measured: dict = field(default_factory=dict)  # "ort fp32" / "torch fp32" / "torch bf16" / "ort int8" -> GFLOP/s
    notes: list = field(default_factory=list)

    @property
    def rates(self) -> dict:
        """GFLOP/s per arithmetic (fp32: the best of the FP32 kernels measured)."""
        fp32 = [v for k, v in self.measured.items() if k.endswith("fp32") and v]
        return {"fp32": max(fp32) if fp32 else None, "bf16": self.measured.get("torch bf16"),
                "int8": self.measured.get("ort int8")}

    def share(self, precision: str, gflop_s: Optional[float]) -> Optional[float]:
        rate = self.rates.get(RATE_OF.get(precision, "fp32"))
        return round(gflop_s / rate, 3) if gflop_s and rate else None

    def to_dict(self) -> dict:
        return {"size": self.size, "threads": self.threads, "measured_gflop_s": self.measured, "rates": self.rates,
                "notes": self.notes}


def _best_rate(call, flops: float, repeats: int) -> float:
    call()  # warm-up: packing, allocation
    best = min(_timed(call) for _ in range(repeats))
    return round(flops / best / 1e9, 1)


def _timed(call) -> float:
    t0 = time.perf_counter()
    call()
    return time.perf_counter() - t0


def _matmul_graph(op: str, a_type: int, b_type: int, size: int) -> bytes:
    """A one-node ONNX graph `Y = op(A, B)` with [size, size] inputs (opset 17), serialised."""
    from onnx import TensorProto, helper

    out_type = TensorProto.INT32 if op == "MatMulInteger" else TensorProto.FLOAT
    graph = helper.make_graph(
        [helper.make_node(op, ["A", "B"], ["Y"])], "gemm",
        [helper.make_tensor_value_info("A", a_type, [size, size]), helper.make_tensor_value_info("B", b_type, [size, size])],
        [helper.make_tensor_value_info("Y", out_type, [size, size])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def _ort_rates(out: GemmRates, size: int, threads: Optional[int], repeats: int) -> None:
    try:
        from onnx import TensorProto
    except ImportError:
        out.notes.append("onnxruntime GEMM rates not measured: the onnx package is not installed (pip install onnx)")
        return
    from .session_ort import import_onnxruntime

    ort = import_onnxruntime()
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = int(threads)
    rng = np.random.default_rng(0)
    flops = 2.0 * size ** 3
    cases = {"ort fp32": ("MatMul", TensorProto.FLOAT, TensorProto.FLOAT,
                          rng.standard_normal((size, size), np.float32), rng.standard_normal((size, size), np.float32)),
             "ort int8": ("MatMulInteger", TensorProto.UINT8, TensorProto.INT8,
                          rng.integers(0, 255, (size, size), dtype=np.uint8),
                          rng.integers(-127, 127, (size, size), dtype=np.int8))}
    for key, (op, ta, tb, a, b) in cases.items():
        sess = ort.InferenceSession(_matmul_graph(op, ta, tb, size), sess_options=opts,
                                    providers=["CPUExecutionProvider"])
        out.measured[key] = _best_rate(lambda: sess.run(None, {"A": a, "B": b}), flops, repeats)


def _torch_rates(out: GemmRates, size: int, threads: Optional[int], repeats: int) -> None:
    try:
        import torch
    except ImportError:
        out.notes.append("PyTorch GEMM rates not measured: torch is not installed")
        return
    if threads:
        torch.set_num_threads(int(threads))
    flops = 2.0 * size ** 3
    for dtype, key in ((torch.float32, "torch fp32"), (torch.bfloat16, "torch bf16")):
        a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
        with torch.inference_mode():
            out.measured[key] = _best_rate(lambda: torch.mm(a, b), flops, repeats)


def gemm_rates(threads: Optional[int] = None, size: int = 4096, repeats: int = 3, torch_too: bool = False) -> GemmRates:
    """Measure the GEMM rates (module docstring)."""
    out = GemmRates(size, threads)
    _ort_rates(out, size, threads, repeats)
    if torch_too:
        _torch_rates(out, size, threads, repeats)
    return out
