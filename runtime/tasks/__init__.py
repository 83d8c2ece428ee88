"""Per-task adapters of `caeav infer` (see `base.TaskAdapter`): one module per task, found automatically.

    adapter = adapter_for("avs_s4")      # BundleError (one line) for a task no module serves
    supported_tasks()                    # ("ave", "avqa", "avs_ms3", "avs_s4", "avvp")

A module of this package that defines `ADAPTER` (a `TaskAdapter`) serves the tasks in `ADAPTER.tasks`.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import lru_cache

from caeav.errors import BundleError

from .base import TaskAdapter


@lru_cache(maxsize=1)
def _registry() -> dict:
    found: dict = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name == "base" or info.name.startswith("_"):
            continue
        adapter = getattr(importlib.import_module(f"{__name__}.{info.name}"), "ADAPTER", None)
        if isinstance(adapter, TaskAdapter):
            for task in adapter.tasks:
                found[task] = adapter
    return found


def supported_tasks() -> tuple[str, ...]:
    return tuple(sorted(_registry()))


def adapter_for(task: str, where: str = "") -> TaskAdapter:
    try:
        return _registry()[task]
    except KeyError:
        prefix = f"{where}: " if where else ""
        raise BundleError(f"{prefix}task {task!r} is not supported by `caeav infer` "
                          f"(supported: {', '.join(supported_tasks())})") from None


__all__ = ["TaskAdapter", "adapter_for", "supported_tasks"]
