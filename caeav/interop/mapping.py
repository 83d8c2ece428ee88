"""The mapping of one task and variant, applied both ways, with the strictness checks of issue 19.

`TaskMap.to_caeav(official)` turns an authors' state dict (already unwrapped by `caeav.interop.reader`) into caeav
keys and layouts; `TaskMap.to_official(caeav)` is its inverse. Every authors' key is either mapped by exactly one
rule or dropped by a `Drop` (unused parts, recomputed tables); anything else is an error listing the first
offending keys. The tables live in `caeav.interop.common` and the per-task modules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import ModuleType
from typing import Mapping, Optional

from torch import Tensor

from caeav.errors import WeightsError
from caeav.interop import common, transforms
from caeav.interop.rules import Drop, Rule

VARIANTS = ("cae_av", "avmoe")


class OfficialCheckpointError(WeightsError):
    """An authors' checkpoint that cannot be imported (wrong task or variant, unknown or missing keys, shapes)."""


def first(keys, n: int = 3) -> str:
    """'a, b, c (+N more)' for error lines."""
    keys = list(keys)
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


@dataclass
class TaskMap:
    task: str  # caeav task name
    variant: str
    module: ModuleType
    rules: list = field(default_factory=list)
    drops: list = field(default_factory=list)

    # ------------------------------------------------------------------------------------------ names
    def rule_for(self, key: str) -> Optional[Rule]:
        return next((r for r in self.rules if r.to_caeav(key) is not None), None)

    def drop_for(self, key: str) -> Optional[Drop]:
        return next((d for d in self.drops if d.matches(key)), None)

    def caeav_names(self, key: str) -> Optional[list[str]]:
        rule = self.rule_for(key)
        return None if rule is None else rule.to_caeav(key)

    # ------------------------------------------------------------------------------------------ authors → caeav
    def to_caeav(self, official: Mapping[str, Tensor]) -> tuple[dict, dict, dict]:
        """(caeav state dict, {caeav key: authors' key}, {drop phrase: [authors' keys]}). Raises on keys no rule
        or drop covers, and on two authors' keys landing on one caeav key."""
        out, source, dropped, unknown = {}, {}, {}, []
        for key, value in official.items():
            drop = self.drop_for(key)
            if drop is not None:
                dropped.setdefault((drop.kind, drop.what), []).append(key)
                continue
            rule = self.rule_for(key)
            if rule is None:
                unknown.append(key)
                continue
            names = rule.to_caeav(key)
            values = transforms.forward(rule.transform, value, len(names))
            for name, tensor in zip(names, values):
                if name in source:
                    raise OfficialCheckpointError(f"{key} and {source[name]} both map to {name}")
                out[name], source[name] = tensor, key
        if unknown:
            raise OfficialCheckpointError(f"{len(unknown)} key(s) that the authors' {self.label} model does not "
                                          f"have: {first(unknown)}")
        return out, source, dropped

    # ------------------------------------------------------------------------------------------ caeav → authors
    def to_official(self, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The authors' keys for a caeav state dict (the inverse of `to_caeav` on mapped keys; dropped parts are not
        produced here: `caeav.interop.convert` adds them)."""
        out, parts, unknown = {}, {}, []
        for key, value in state.items():
            hit = None
            for rule in self.rules:
                hit = rule.to_official(key)
                if hit is not None:
                    break
            if hit is None:
                unknown.append(key)
                continue
            official, part = hit
            if rule.transform is None:
                out[official] = value
            else:
                parts.setdefault(official, (rule, {}))[1][part] = value
        for official, (rule, pieces) in parts.items():
            if set(pieces) != set(rule.parts):
                raise OfficialCheckpointError(f"{official}: caeav parts {sorted(pieces)} of {list(rule.parts)}")
            out[official] = transforms.inverse(rule.transform, [pieces[p] for p in rule.parts])
        if unknown:
            raise OfficialCheckpointError(f"{len(unknown)} caeav key(s) with no authors' name: {first(unknown)}")
        return out

    @property
    def label(self) -> str:
        return f"{self.module.TASK if self.task != 'avs_ms3' else 'ms3'} {self.variant.replace('_', '-')}"


def task_map(task: str, variant: str = "cae_av") -> TaskMap:
    """The mapping for caeav task `task` (ave, avvp, avqa, avs_s4, avs_ms3) and `variant` (cae_av, avmoe)."""
    from caeav.interop import ave, avqa, avs, avvp

    modules = {"ave": ave, "avvp": avvp, "avqa": avqa, "avs_s4": avs, "avs_ms3": avs}
    if task not in modules:
        raise OfficialCheckpointError(f"no mapping for task {task!r}; choose one of {', '.join(modules)}")
    if variant not in VARIANTS:
        raise OfficialCheckpointError(f"unknown variant {variant!r}; choose cae_av or avmoe")
    mod = modules[task]
    rules = [*common.SWIN, *common.HTSAT, *common.adapters(*mod.ADAPTERS, getattr(mod, "UA_GATE", "gate_self"))]
    if variant == "cae_av":
        for group in common.CAE_AV_ONLY:
            rules += group
    rules += mod.HEAD
    drops = [*common.SWIN_DROPS, *common.HTSAT_DROPS, *mod.DROPS]
    return TaskMap(task, variant, mod, rules, drops)
