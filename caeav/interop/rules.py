"""Name rules: how a key of the authors' state dicts becomes a caeav key, and back.

A mapping is data: an ordered list of `Rule`s (first match wins) plus `Drop`s for the authors' entries caeav does
not keep. A rule's two sides are key patterns with placeholders:

    Rule("swin.layers.{n}.downsample.{rest}", "encoder.visual.layers.{n+1}.downsample.{rest}")

`{name}` matches one or more digits, `{rest}` (or any name starting with "rest") matches the rest of a dotted key,
and `{n+1}` / `{n-1}` shift an index by a constant (timm 0.6 → 1.x moved Swin's patch merging into the next stage).
Both sides hold the same placeholders, so every rule runs both ways; `export-official` uses the same table.

A rule may name a layout transform from `caeav.interop.transforms` (`transform="split_qkv"`: one authors' tensor ↔
several caeav tensors; the caeav side then holds `{part}`, expanded to each part's name).

`explains` names the config option whose value decides the shapes on the caeav side of a rule, so a shape mismatch
can say which option to pass.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Mapping, Optional

_PLACEHOLDER = re.compile(r"\{([a-z_]+)([+-]\d+)?\}")


def _compile(pattern: str) -> tuple[re.Pattern, dict[str, int]]:
    """Pattern → (regex with one named group per placeholder, {name: offset})."""
    out, offsets, pos = [], {}, 0
    for m in _PLACEHOLDER.finditer(pattern):
        out.append(re.escape(pattern[pos:m.start()]))
        name, shift = m.group(1), int(m.group(2) or 0)
        if name in offsets:
            raise ValueError(f"placeholder {name} twice in {pattern!r}")
        offsets[name] = shift
        out.append(f"(?P<{name}>.+)" if name.startswith("rest") or name == "part" else f"(?P<{name}>\\d+)")
        pos = m.end()
    out.append(re.escape(pattern[pos:]))
    return re.compile("".join(out) + r"\Z"), offsets


def _fill(pattern: str, base: Mapping[str, str]) -> str:
    """Pattern with each placeholder replaced by its base value (+ the pattern's own offset for indices)."""
    def sub(m: re.Match) -> str:
        name, value = m.group(1), base[m.group(1)]
        if name.startswith("rest") or name == "part":
            return value
        return str(int(value) + int(m.group(2) or 0))
    return _PLACEHOLDER.sub(sub, pattern)


def _base(values: Mapping[str, str], offsets: Mapping[str, int]) -> dict[str, str]:
    """Matched placeholder values → base values (a pattern's offset removed from each index)."""
    return {n: (v if n.startswith("rest") or n == "part" else str(int(v) - offsets[n])) for n, v in values.items()}


@dataclass(frozen=True)
class Rule:
    """One name rule: `official` ↔ `caeav` (see the module docstring)."""

    official: str
    caeav: str
    transform: Optional[str] = None
    parts: tuple = ()  # names `{part}` takes on the caeav side of a transform rule
    explains: str = ""

    def __post_init__(self):
        object.__setattr__(self, "_o", _compile(self.official))
        object.__setattr__(self, "_c", _compile(self.caeav))
        names_o, names_c = set(self._o[1]), set(self._c[1]) - {"part"}
        if names_o != names_c:
            raise ValueError(f"rule {self.official!r} <-> {self.caeav!r}: placeholders differ")

    def to_caeav(self, key: str) -> Optional[list[str]]:
        """caeav key(s) for authors' key `key` (one per part of a transform rule), or None if the rule does not
        apply."""
        regex, offsets = self._o
        m = regex.match(key)
        if m is None:
            return None
        base = _base(m.groupdict(), offsets)
        return [_fill(self.caeav, {**base, "part": p}) for p in (self.parts or ("",))]

    def to_official(self, key: str) -> Optional[tuple[str, Optional[str]]]:
        """(authors' key, part name or None) for caeav key `key`, or None when the rule does not apply."""
        regex, offsets = self._c
        m = regex.match(key)
        if m is None:
            return None
        base = _base(m.groupdict(), offsets)
        part = base.pop("part", None)
        if self.parts and part not in self.parts:
            return None
        return _fill(self.official, base), part


@dataclass(frozen=True)
class Drop:
    """Authors' entries caeav does not keep: `kind` "unused" (never read by the authors' forward either) or
    "recomputed" (fixed tables and masks caeav builds itself); `what` is the phrase of the one-line summary."""

    official: str
    kind: str
    what: str

    def __post_init__(self):
        object.__setattr__(self, "_o", _compile(self.official))

    def matches(self, key: str) -> bool:
        return self._o[0].match(key) is not None


def prefixed(rules: Iterable[Rule], official: str, caeav: str, explains: str = "") -> list[Rule]:
    """The same rules for a submodule: `official` / `caeav` prepended to each side (a module-relative table reused
    under several parents, e.g. one expert table for every MoE adapter)."""
    return [Rule(official + r.official, caeav + r.caeav, r.transform, r.parts, r.explains or explains) for r in rules]
