"""onnxruntime sessions for bundle graphs, with the execution providers picked by what is installed.

Provider order (first available wins, CPU always last): TensorRT EP, CUDA EP, CPU EP. `onnxruntime` (the `runtime`
extra) only has the CPU EP; `onnxruntime-gpu` (the `gpu` extra) adds CUDA and TensorRT.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

from caeav.errors import BundleError, CaeavError

PROVIDER_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
# Session options when the CPU provider runs the graph (issue 17, benchmarks/ort_memory.py): no CPU memory arena
# and no memory pattern. The arena keeps every activation buffer it ever grew to, and the memory pattern plans one
# block for a whole run on top; on the paper AVE chain (1,642 MiB of weights, batch 1, 2 threads) the peak RSS was
# 4,879 MiB with them and 3,284 MiB without, and they bought no speed (9.9 s per run with them, 8.2 s without).
CPU_SESSION_SETTINGS = {"enable_cpu_mem_arena": False, "enable_mem_pattern": False}


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as exc:
        raise CaeavError(f"onnxruntime is not installed ({exc}): pip install 'caeav[runtime]' "
                         "(or 'caeav[gpu]' for CUDA)") from None
    return onnxruntime


def pick_providers(want: Optional[Sequence[str]] = None) -> list[str]:
    """The providers to use, in priority order: `want` (short names cpu/cuda/tensorrt allowed) or all available."""
    ort = import_onnxruntime()
    available = ort.get_available_providers()
    if want:
        full = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
        names = [full.get(w.lower(), w) for w in want]
        missing = [n for n in names if n not in available]
        if missing:
            raise CaeavError(f"onnxruntime provider(s) {', '.join(missing)} not available here "
                             f"(available: {', '.join(available)})")
        return names
    return [p for p in PROVIDER_ORDER if p in available] or ["CPUExecutionProvider"]


class OrtSession:
    """One ONNX graph in onnxruntime. `run(feeds)` takes and returns dicts of numpy arrays by graph I/O name."""

    kind = "ort"

    def __init__(self, path: Path, providers: Optional[Sequence[str]] = None, threads: Optional[int] = None):
        ort = import_onnxruntime()
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        if threads or os.environ.get("CAEAV_ORT_THREADS"):
            opts.intra_op_num_threads = int(threads or os.environ["CAEAV_ORT_THREADS"])
        self.path = Path(path)
        providers = list(providers or pick_providers())
        if providers[0] == "CPUExecutionProvider":
            for key, value in CPU_SESSION_SETTINGS.items():
                setattr(opts, key, value)
        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types (InvalidGraph, Fail, ...)
            raise BundleError(f"{path}: onnxruntime cannot load this graph ({' '.join(str(exc).split())[:300]})") \
                from None
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            raise BundleError(f"{self.path.name}: inputs {missing} not provided (graph expects {self.input_names})")
        arrays = {n: np.ascontiguousarray(feeds[n], dtype=_dtype(feeds[n])) for n in self.input_names}
        try:
            outs = self.session.run(self.output_names, arrays)
        except Exception as exc:  # onnxruntime's Fail / InvalidArgument: a graph that cannot take these inputs
            shapes = {n: list(a.shape) for n, a in arrays.items()}
            raise BundleError(f"{self.path.name} failed on inputs {shapes}: {' '.join(str(exc).split())[:300]}") \
                from None
        return dict(zip(self.output_names, outs))

    def describe(self) -> str:
        return f"onnxruntime {self.path.name} [{', '.join(p.replace('ExecutionProvider', '') for p in self.providers)}]"


def _dtype(x: np.ndarray):
    return np.int64 if np.issubdtype(np.asarray(x).dtype, np.integer) else np.float32
