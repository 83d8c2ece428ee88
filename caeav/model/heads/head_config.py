"""Reading a head's hyper-parameters from `cfg.task.head` (a plain dict in the task JSON, decisions D5).

Every head declares its defaults as a dict; `head_options` fills the missing keys from it and rejects keys the head does
not know (a typo in a config must not be silently ignored) and a `kind` meant for another head. Torch-free.
"""

from __future__ import annotations

from typing import Any, Mapping

from caeav.config import ConfigError


def head_options(head: Mapping[str, Any], defaults: Mapping[str, Any], kind: str) -> dict:
    """`defaults` updated with `head`; ConfigError on unknown keys or when `head["kind"]` is not `kind`."""
    given = dict(head or {})
    found = given.pop("kind", kind)
    if found != kind:
        raise ConfigError(f"task.head.kind is {found!r}, but this head is {kind!r}")
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ConfigError(f"task.head ({kind}): unknown option(s) {', '.join(unknown)}; "
                          f"known: {', '.join(sorted(defaults))}")
    return {**defaults, **given}
