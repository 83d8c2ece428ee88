"""Option values shared by several commands (parsed here once, errors as one line)."""

from __future__ import annotations

from typing import Optional, Sequence

from caeav.errors import CaeavError


def comma_list(text: str, option: str, allowed: Optional[Sequence[str]] = None) -> list[str]:
    """"fp16, int8" -> ["fp16", "int8"]; `CaeavError` naming `option` when empty or holding a value not `allowed`."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items or (allowed is not None and any(t not in allowed for t in items)):
        choices = f" of {', '.join(allowed)}" if allowed is not None else ""
        raise CaeavError(f"{option}: expected a comma-separated list{choices}; got {text!r}")
    return items
