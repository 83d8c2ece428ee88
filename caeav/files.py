"""Files written atomically and files hashed: the one mechanism behind checkpoints, bundles, caches and results.

Everything here is torch-free (the runtime and the caption cache reader use it). A file is written to a temporary
name in its own directory and renamed over the target, so a reader sees the old complete file or the new one, never a
partial one; a failure removes the temporary file and leaves the old one in place."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from typing import IO, Any, Iterator


def sha256_file(path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_file(path, text: bool = False) -> Iterator[IO]:
    """`with atomic_file(p) as fh: ...` writes `p` atomically (binary handle, or UTF-8 text with `text=True`, newlines
    untranslated as the csv module wants; parent directories are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-")
    try:
        with (os.fdopen(fd, "w", encoding="utf-8", newline="") if text else os.fdopen(fd, "wb")) as fh:
            yield fh
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_bytes_atomic(path, data) -> Path:
    with atomic_file(path) as fh:
        fh.write(memoryview(data))
    return Path(path)


def write_json_atomic(path, data: Any, indent: int = 2) -> Path:
    return write_bytes_atomic(path, (json.dumps(data, indent=indent) + "\n").encode())


@contextlib.contextmanager
def staged_dir(target) -> Iterator[Path]:
    """`with staged_dir(d) as tmp: <fill tmp>`: a fresh sibling directory `<d>.tmp-<pid>` that replaces `d` when the
    block succeeds (`replace_dir`) and is removed when it raises. A process killed inside the block leaves only the
    temporary directory; `d` is untouched. Once the new `d` is in place, the `<d>.tmp-<pid>` / `<d>.old-<pid>` that
    dead writers left beside it are removed (`remove_stale_siblings`)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f"{target.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_dir(tmp, target)
    remove_stale_siblings(target)


def replace_dir(tmp: Path, target: Path) -> Path:
    """Move the complete directory `tmp` to `target`, replacing an existing one.

    The old directory is first renamed aside, so at every moment `target` is either the old complete directory or
    the new complete one (two renames on one filesystem); the old copy is removed only after the new one is in place.
    Ctrl-C / SIGTERM arriving between the two renames takes effect after the second (`deferred_signals`).
    """
    tmp, target = Path(tmp), Path(target)
    old = target.parent / f"{target.name}.old-{os.getpid()}"
    if old.exists():
        shutil.rmtree(old)
    with deferred_signals():
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
    if old.exists():
        shutil.rmtree(old)
    return target


@contextlib.contextmanager
def deferred_signals(signums=(signal.SIGINT, signal.SIGTERM)) -> Iterator[None]:
    """Hold SIGINT/SIGTERM for the duration of the block and deliver them to their own handlers after it (main thread
    only; elsewhere Python runs no signal handlers, so there is nothing to hold)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {}
    for signum in signums:
        handler = signal.getsignal(signum)
        if callable(handler):  # an ignored or default-action signal is left alone
            previous[signum] = handler
            signal.signal(signum, lambda n, frame: held.append(n))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(held):
            previous[signum](signum, None)


_SIBLING = re.compile(r"\.(tmp|old)-(\d+)$")


def pid_alive(pid: int) -> bool:
    """Whether a process `pid` exists on this machine (one of another user's counts)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def stale_siblings(target) -> list[Path]:
    """The `<target>.tmp-<pid>` / `<target>.old-<pid>` directories beside `target` whose writer `pid` is no live
    process (a writer killed mid-write, or between the two renames of `replace_dir`)."""
    target = Path(target)
    if not target.parent.is_dir():
        return []
    found = []
    for path in target.parent.iterdir():
        rest = path.name[len(target.name):] if path.name.startswith(target.name) else ""
        match = _SIBLING.fullmatch(rest)
        if match and int(match.group(2)) != os.getpid() and not pid_alive(int(match.group(2))):
            found.append(path)
    return sorted(found)


def remove_stale_siblings(target) -> list[Path]:
    """Remove `stale_siblings(target)` (never `target` itself, nor a live writer's); returns what was removed."""
    removed = []
    for path in stale_siblings(target):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                path.unlink()
        removed.append(path)
    return removed
