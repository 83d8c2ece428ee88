"""A TensorRT engine as a session (decisions D10): TensorRT and cuda-python are imported lazily, here only.

The engine is deserialised with `tensorrt.Runtime`, inputs are copied to device buffers and the graph is enqueued
with `execute_async_v3` on a CUDA stream created through cuda-python (`cuda.bindings.runtime`, or the older
`cuda.cudart`). Buffers grow on demand and are reused across calls. Compatibility (GPU compute capability and
TensorRT version the engine was built for) is checked by `caeav.runtime.engine` before this class is created.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Mapping

import numpy as np

from caeav.errors import BundleError, CaeavError


def import_cudart():
    for name in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise CaeavError("cuda-python is not installed: pip install 'caeav[gpu]' to run TensorRT engines")


def _check(result):
    """cuda-python calls return (error, *values); raise on an error, return the value(s)."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise CaeavError(f"CUDA call failed: {err}")
    return values[0] if len(values) == 1 else values


class TrtSession:
    """One serialised TensorRT engine. `run(feeds)` takes and returns dicts of numpy arrays by tensor name."""

    kind = "trt"

    def __init__(self, path: Path):
        import tensorrt as trt  # lazily: only machines with TensorRT reach this line

        self.trt, self.cudart, self.path = trt, import_cudart(), Path(path)
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise BundleError(f"{path}: TensorRT could not deserialise this engine (built for another GPU or "
                              "TensorRT version, or corrupt)")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_input = {n: self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self.input_names = [n for n in names if is_input[n]]
        self.output_names = [n for n in names if not is_input[n]]
        self.dtypes = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in names}
        self.stream = _check(self.cudart.cudaStreamCreate())
        self.buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, bytes)

    def _buffer(self, name: str, nbytes: int) -> int:
        ptr, size = self.buffers.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                _check(self.cudart.cudaFree(ptr))
            ptr = int(_check(self.cudart.cudaMalloc(max(nbytes, 1))))
            self.buffers[name] = (ptr, nbytes)
        return ptr

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        cudart = self.cudart
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        keep = []
        for name in self.input_names:
            host = np.ascontiguousarray(feeds[name], dtype=self.dtypes[name])
            keep.append(host)
            ptr = self._buffer(name, host.nbytes)
            self.context.set_input_shape(name, tuple(host.shape))
            _check(cudart.cudaMemcpyAsync(ptr, host.ctypes.data, host.nbytes, h2d, self.stream))
            self.context.set_tensor_address(name, ptr)
        outputs = {}
        for name in self.output_names:
            shape = tuple(self.context.get_tensor_shape(name))
            outputs[name] = np.empty(shape, dtype=self.dtypes[name])
            self.context.set_tensor_address(name, self._buffer(name, outputs[name].nbytes))
        if not self.context.execute_async_v3(int(self.stream)):
            raise CaeavError(f"{self.path.name}: TensorRT execution failed")
        for name, host in outputs.items():
            _check(cudart.cudaMemcpyAsync(host.ctypes.data, self.buffers[name][0], host.nbytes, d2h, self.stream))
        _check(cudart.cudaStreamSynchronize(self.stream))
        return {n: (a.astype(np.float32) if a.dtype == np.float16 else a) for n, a in outputs.items()}

    def describe(self) -> str:
        return f"TensorRT {self.trt.__version__} {self.path.name}"

    def __del__(self):
        try:
            for ptr, _ in self.buffers.values():
                self.cudart.cudaFree(ptr)
            self.cudart.cudaStreamDestroy(self.stream)
        except Exception:
            pass
