"""Private copies of ONNX graphs for tools that may rewrite the file they are given.

Model Optimizer's AutoCast (FP16) and PTQ (INT8) save shape-inferred models over their input path; the bundle's FP32
graphs must keep the bytes their manifest sha256 records, so those tools only ever see a copy."""

from __future__ import annotations

import shutil
from pathlib import Path


def private_copy(src, folder) -> Path:
    """Copy the graph `src` (and its external-data file `<name>.data`, when present) into `folder`; the copy's path."""
    src, folder = Path(src), Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    dst = folder / src.name
    shutil.copy2(src, dst)
    for data in src.parent.glob(src.name + ".data"):
        shutil.copy2(data, folder / data.name)
    return dst
