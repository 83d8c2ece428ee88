"""Output paths checked before the work starts, so that a late failure never throws away an hour of results.

    check_output_dir(args.out, "--out")     # a directory that will be created or replaced
    check_output_file(args.json, "--json")  # a file that will be written

Both raise `CaeavError` (one line, naming the option) when the output cannot be written: a file where a directory is
expected or the other way round, a parent that is a file, a read-only or permission-denied location. Writability is
proven by creating and removing a temporary file in the nearest existing ancestor (permission bits alone lie for root
and on read-only mounts such as /sys). Nothing is created. Torch-free: the runtime uses it too.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Optional

from caeav.errors import CaeavError


def _existing_ancestor(path: Path, flag: str) -> Path:
    """The nearest ancestor of `path` that exists; it must be a directory."""
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise CaeavError(f"{flag} {path}: {parent} is a file, not a directory")
            return parent
    return Path.cwd()


def _probe_writable(directory: Path, path: Path, flag: str) -> None:
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".caeav-write-check-")
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise CaeavError(f"{flag} {path}: cannot write in {directory} ({reason})") from None
    os.close(fd)
    os.unlink(tmp)


def check_output_file(path, flag: str) -> Optional[Path]:
    """Check that file `path` can be written (created or replaced); returns it as a Path (None stays None)."""
    if path is None:
        return None
    path = Path(path)
    if path.is_dir():
        raise CaeavError(f"{flag} {path}: is a directory; give a file name")
    if path.exists() and not os.access(path, os.W_OK):
        raise CaeavError(f"{flag} {path}: the file exists and is not writable")
    _probe_writable(_existing_ancestor(path.absolute(), flag), path, flag)
    return path


def check_output_dir(path, flag: str) -> Optional[Path]:
    """Check that directory `path` can be created (or written into, if it exists); returns it as a Path."""
    if path is None:
        return None
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise CaeavError(f"{flag} {path}: is a file, not a directory")
    target = path if path.is_dir() else _existing_ancestor(path.absolute(), flag)
    _probe_writable(target, path, flag)
    if path.is_dir() and path.parent.exists():  # outputs are staged beside the directory and renamed onto it
        _probe_writable(path.absolute().parent, path, flag)
    return path
