"""Atomic replacement of a finished directory (checkpoints, export bundles): torch-free, used by both sides."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def replace_dir(tmp: Path, target: Path) -> Path:
    """Move the complete directory `tmp` to `target`, replacing an existing one.

    The old directory is first renamed aside, so at every moment `target` is either the old complete directory or
    the new complete one (two renames on one filesystem); the old copy is removed only after the new one is in place.
    """
    tmp, target = Path(tmp), Path(target)
    old = target.parent / f"{target.name}.old-{os.getpid()}"
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    if old.exists():
        shutil.rmtree(old)
    return target
