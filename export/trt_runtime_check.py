"""Which TensorRT and GPU are here, and whether a bundle's engine fits them (decisions D10: an engine is tied to the
GPU's compute capability and the TensorRT version). Torch-free and TensorRT-optional: the runtime calls
`engine_compatible(entry)` before deserialising, and the builder names engines with `engine_filename`.
"""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess
from typing import Mapping, Optional

from caeav.errors import ExportError

STRONG_TYPING_MIN = (10, 12)   # strong typing "fully available" from 10.12; weakly typed FP16 path below it


def import_tensorrt():
    """The `tensorrt` module, or ExportError with one line (the ONNX bundle stays usable with onnxruntime)."""
    try:
        return importlib.import_module("tensorrt")
    except ImportError as err:
        raise ExportError(f"TensorRT is not installed ({err}); the ONNX bundle is intact: run it with --engine ort, "
                          "or install TensorRT (JetPack on Jetson, pypi.nvidia.com wheels elsewhere) and rebuild "
                          "the engines") from err


def version_tuple(version: str) -> tuple[int, ...]:
    """'10.3.0.30' -> (10, 3, 0, 30); non-numeric tails are dropped."""
    parts = []
    for piece in str(version).split("."):
        match = re.match(r"\d+", piece)
        if not match:
            break
        parts.append(int(match.group()))
    return tuple(parts)


def short_version(version: str) -> str:
    """major.minor.patch of a TensorRT version (what engine names and the manifest record)."""
    return ".".join(str(p) for p in version_tuple(version)[:3])


def uses_strong_typing(version: str) -> bool:
    """True on TensorRT >= 10.12 (strongly typed networks; 11.x has nothing else), False on older (10.3: weak)."""
    return version_tuple(version)[:2] >= STRONG_TYPING_MIN


def _cc_from_cuda_bindings() -> Optional[tuple[int, int]]:
    for name in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            cudart = importlib.import_module(name)
        except ImportError:
            continue
        attrs = cudart.cudaDeviceAttr
        err, major = cudart.cudaDeviceGetAttribute(attrs.cudaDevAttrComputeCapabilityMajor, 0)
        err2, minor = cudart.cudaDeviceGetAttribute(attrs.cudaDevAttrComputeCapabilityMinor, 0)
        if int(err) == 0 and int(err2) == 0:
            return int(major), int(minor)
    return None


def _cc_from_nvidia_smi() -> Optional[tuple[int, int]]:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=compute_cap", "--format=csv,noheader", "-i", "0"],
                             capture_output=True, text=True, timeout=20, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.match(r"(\d+)\.(\d+)", out)
    return (int(match.group(1)), int(match.group(2))) if match else None


def gpu_compute_capability() -> tuple[int, int]:
    """(major, minor) of GPU 0, from cuda-python when installed, else nvidia-smi; ExportError when no GPU is seen."""
    for probe in (_cc_from_cuda_bindings, _cc_from_nvidia_smi):
        try:
            cc = probe()
        except Exception:  # a broken driver install must not crash the probe chain
            cc = None
        if cc is not None:
            return cc
    raise ExportError("no CUDA GPU found (neither cuda-python nor nvidia-smi reports one): TensorRT engines need one")


def engine_filename(graph: str, precision: str, cc: tuple[int, int], trt_version: str) -> str:
    """`<graph>.<precision>.sm<major><minor>.trt<version>.engine`, e.g. encoder.fp16.sm87.trt10.3.0.engine."""
    return f"{graph}.{precision}.sm{cc[0]}{cc[1]}.trt{short_version(trt_version)}.engine"


def engine_compatible(entry: Mapping) -> Optional[str]:
    """None when the engine of this manifest entry can run here, else one line saying why not (no TensorRT,
    another TensorRT version, another GPU compute capability)."""
    try:
        trt = importlib.import_module("tensorrt")
    except ImportError:
        return "TensorRT is not installed"
    built_for = str(entry.get("tensorrt", ""))
    here = short_version(getattr(trt, "__version__", ""))
    if short_version(built_for) != here:
        return f"engine built with TensorRT {built_for or '?'}, this machine has TensorRT {here or '?'}"
    try:
        cc = gpu_compute_capability()
    except ExportError as err:
        return str(err)
    want = str(entry.get("compute_capability", ""))
    if want != f"{cc[0]}.{cc[1]}":
        return f"engine built for compute capability {want or '?'} (sm{want.replace('.', '')}), this GPU is " \
               f"{cc[0]}.{cc[1]} (sm{cc[0]}{cc[1]})"
    return None
