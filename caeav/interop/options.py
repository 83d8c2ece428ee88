"""Options that change tensor shapes, read off an authors' checkpoint and checked against the config.

AVMoE (architecture.md §3.3): number of cross-modal (CMA) and unimodal (UA) experts, latent tokens, adapter
reduction r and conv groups g (the 1×1 grouped bottleneck `down_sampler` is `[C/r, C/g, 1, 1]`), BatchNorm, the
audio-side gates, the pre/post LayerNorms, the UA's own attention (AVVP's parameter-free one has a `gate_av`, AVS v1
an MHSA, AVS v2 latent tokens), and the number of adapter positions (`skip_num`). These must agree with the task's
config (or the user's overrides): a disagreement is one line naming the option and the override to pass.
Head sizes (classes, question vocabulary) are taken from the tensors (`head_options` of each task module): e.g.
the authors' AVQA answer layer has 50 outputs.
"""

from __future__ import annotations

import re
from typing import Mapping

from caeav.interop.mapping import OfficialCheckpointError
from caeav.model.encoder import plan_walk


def _experts(shapes: Mapping, prefix: str, kind: str) -> int:
    pat = re.compile(re.escape(f"{prefix}{kind}.") + r"(\d+)\.")
    found = {int(m.group(1)) for k in shapes for m in [pat.match(k)] if m}
    return max(found) + 1 if found else 0


def adapter_options(shapes: Mapping, visual: str, audio: str) -> list[tuple[str, object, str]]:
    """(option, value, evidence key) for the AVMoE options, read off the first visual and audio adapter."""
    v0, a0 = f"{visual}_p1.0.", f"{audio}_p1.0."
    if not any(k.startswith(v0) for k in shapes):
        raise OfficialCheckpointError(f"no AVMoE adapters ({v0}*): not a checkpoint of the authors' CAE-AV or AVMoE")
    out = [("task.avmoe.num_cma", _experts(shapes, v0, "multimodal_experts"), f"{v0}multimodal_experts.*"),
           ("task.avmoe.num_ua", _experts(shapes, v0, "singlemodal_experts"), f"{v0}singlemodal_experts.*")]
    cma, ua = f"{v0}multimodal_experts.0.", f"{v0}singlemodal_experts.0."
    expert = cma if f"{cma}down_sampler.weight" in shapes else ua
    down, up = shapes[f"{expert}down_sampler.weight"], shapes[f"{expert}up_sampler.weight"]
    channels = int(up[0])
    out += [("task.avmoe.reduction", channels // int(down[0]), f"{expert}down_sampler.weight"),
            ("task.avmoe.groups", channels // int(down[1]), f"{expert}down_sampler.weight")]
    if f"{cma}my_tokens" in shapes:
        out.append(("task.avmoe.num_latent_tokens", int(shapes[f"{cma}my_tokens"][0]), f"{cma}my_tokens"))
    elif f"{ua}my_tokens" in shapes:
        out.append(("task.avmoe.num_latent_tokens", int(shapes[f"{ua}my_tokens"][0]), f"{ua}my_tokens"))
    out += [("task.avmoe.use_bn", f"{expert}bn1.weight" in shapes, f"{expert}bn1.*"),
            ("task.avmoe.pre_ln", f"{expert}ln_before.weight" in shapes, f"{expert}ln_before.*"),
            ("task.avmoe.post_ln", f"{expert}ln_post.weight" in shapes, f"{expert}ln_post.*"),
            ("task.avmoe.audio_gate", any(f"{a0}{k}.0.gate" in shapes for k in ("multimodal_experts",
                                                                                  "singlemodal_experts")),
             f"{a0}*_experts.0.gate")]
    if any(k.startswith(f"{ua}self_attention.") for k in shapes):
        attention = "mhsa"
    elif f"{ua}my_tokens" in shapes:
        attention = "latent"
    elif f"{ua}gate_av" in shapes:
        attention = "paramfree"
    else:
        attention = "none"
    out.append(("task.avmoe.ua_attention", attention, f"{ua}*"))
    pos = re.compile(re.escape(f"{visual}_p1.") + r"(\d+)\.")
    positions = len({m.group(1) for k in shapes for m in [pos.match(k)] if m})
    out.append(("adapter positions", positions, f"{visual}_p1.*"))
    return out


def positions_for(cfg) -> int:
    """Adapter positions of `cfg`'s lock-step walk."""
    plan = plan_walk(cfg.visual.depths, cfg.audio.depths, cfg.task.avmoe.skip_num)
    return sum(1 for stage in plan for step in stage if step.position is not None)


def _get(cfg, dotted: str):
    node = cfg
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else getattr(node, part)
    return node


def check(cfg, inferred: list, task: str) -> None:
    """OfficialCheckpointError naming the first option whose config value disagrees with the tensors."""
    for option, value, evidence in inferred:
        if option == "adapter positions":
            have = positions_for(cfg)
            if have != value:
                raise OfficialCheckpointError(
                    f"the checkpoint has {value} adapter positions ({evidence}) but {task} with "
                    f"task.avmoe.skip_num={cfg.task.avmoe.skip_num} has {have}; pass task.avmoe.skip_num=N "
                    f"(2: adapters in stages 1 and 3 only, 1: every stage)")
            continue
        have = _get(cfg, option)
        if have != value:
            shown = str(value).lower() if isinstance(value, bool) else value
            raise OfficialCheckpointError(
                f"the checkpoint has {option}={shown} ({evidence}) but the {task} config says {have}; "
                f"pass {option}={shown} if this checkpoint is meant for {task}")
