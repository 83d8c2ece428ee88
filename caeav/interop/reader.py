"""Reading a checkpoint saved by the authors' code, safely.

`torch.load(..., weights_only=True)` only: a file whose pickle needs arbitrary code (a class, a function call) is
refused, never executed. The state dict may be bare or under a `state_dict` / `model` key (nested wrappers are
unwrapped in turn); DataParallel/DDP's `module.` prefix is stripped when every key has it (the authors' AVQA script
saves a DataParallel model). Every failure is one line (`OfficialCheckpointError`).
"""

from __future__ import annotations

import os
import pickle
import zipfile
from typing import Mapping

import torch
from torch import Tensor

from caeav.interop.mapping import OfficialCheckpointError, first
from caeav.model.weights import unwrap_wrappers

WRAPPERS = ("state_dict", "model")
PREFIX = "module."


def _load(path) -> object:
    if not os.path.isfile(path):
        raise OfficialCheckpointError(f"{path}: no such file")
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:  # files in the legacy (non-zip) format cannot be memory-mapped
            if "mmap" not in str(exc).lower():
                raise
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = " ".join(str(exc).split("\n")[0].split())[:160]
        raise OfficialCheckpointError(
            f"{path}: refused: unpickling it would run code other than tensor loading ({detail}); re-save it as "
            "torch.save(model.state_dict(), FILE) with the authors' code") from None
    except (EOFError, zipfile.BadZipFile, RuntimeError, OSError, ValueError) as exc:
        detail = " ".join(str(exc).split())[:160]
        raise OfficialCheckpointError(f"{path}: truncated or not a PyTorch checkpoint ({detail})") from None


def unwrap(obj: object, path="checkpoint") -> dict[str, Tensor]:
    """The state dict inside `obj` (see the module docstring)."""
    obj = unwrap_wrappers(obj, WRAPPERS)
    if not isinstance(obj, Mapping) or not obj:
        raise OfficialCheckpointError(f"{path}: holds no state dict (found {type(obj).__name__})")
    bad = [str(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise OfficialCheckpointError(f"{path}: entries that are not tensors: {first(bad)}")
    state = dict(obj)
    if all(k.startswith(PREFIX) for k in state):
        state = {k[len(PREFIX):]: v for k, v in state.items()}
    return state


def read_official(path) -> dict[str, Tensor]:
    """Authors' state dict from file `path`: {key: tensor}, unwrapped and without `module.`."""
    return unwrap(_load(path), path)
