"""Option values shared by several commands (parsed here once, errors as one line)."""

from __future__ import annotations

from typing import Optional, Sequence

from caeav.errors import CaeavError


def elapsed_log():
    """A callable writing progress lines to stderr with the seconds since it was made (`caeav export`, `caeav bench`:
    on a paper model each stage takes minutes, and the lines say which one costs what)."""
    import time

    import typer

    t0 = time.perf_counter()
    return lambda what: typer.echo(f"  [{time.perf_counter() - t0:6.1f} s] {what}", err=True)


def comma_list(text: str, option: str, allowed: Optional[Sequence[str]] = None) -> list[str]:
    """"fp16, int8" -> ["fp16", "int8"]; `CaeavError` naming `option` when empty or holding a value not `allowed`."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items or (allowed is not None and any(t not in allowed for t in items)):
        choices = f" of {', '.join(allowed)}" if allowed is not None else ""
        raise CaeavError(f"{option}: expected a comma-separated list{choices}; got {text!r}")
    return items
