"""FLOPs per clip and per component (`caeav model summary --flops`), counted on the meta device: no memory, no weights.

Convention: FLOPs as `torch.utils.flop_counter.FlopCounterMode` counts them, 1 multiply-add = 2 FLOPs, and only
matrix products and convolutions count (mm, addmm, bmm, baddbmm, convolution, the SDPA kernels); elementwise ops,
norms, softmax, top-k and interpolation count 0. "Per clip" = batch 1 with the task's T segments (10 for AVE/AVVP).

How (`count_module_flops`): the model, built with `build_model(cfg, device="meta")` and in eval mode, runs once under
FlopCounterMode (the total) and under `_Attribution`, a dispatch mode that credits each op's FLOPs, computed with the
counter's own formulas, to the innermost module running it (global forward hooks keep the module stack). The two
totals must agree. `component_flops` then sorts the modules into the rows of `caeav model summary`.

Why meta and not FakeTensorMode (torch 2.14): on fake CPU tensors `F.scaled_dot_product_attention` dispatches to the
fused `_scaled_dot_product_flash_attention_for_cpu` and an eval `nn.MultiheadAttention` to
`_native_multi_head_attention`; FlopCounterMode has no formula for either and counts them 0. On meta both decompose
into bmm, which it counts. caeav's model calls neither (every attention is MatMul/Softmax: `blocks.py`, timm's SwinV2
cosine attention, ClapAudio's eager attention, `temporal_attention.py`), so fused attention changes no figure here.
`EXTRA_FORMULAS` still counts the fused CPU SDPA and matrix-vector products, and any op that looks heavy (conv,
matmul, attention, RNN, ...) but has no formula is listed in `uncounted_heavy_ops` (empty for every preset and task).

Reconciliation with the authors' paper AVE model (issue 17: 1,077.7 GFLOP per clip; Swin blocks 509, AVMoE adapters
290 of which token mixing 228, HTS-AT 114, CASE 88 of which the caption branch 37, CASTE 39, front end 22). caeav
counts 930.75; the 147.0 G are work caeav does once or in a cheaper order, with the same numbers (`authors_lines`):

* AVMoE alignment order (86.4 G): ŷ = Linear(W_tok y) is linear, so `MoEAdapter.align` maps the channels first where
  that is cheaper (the audio adapters, C_s < C_o); the authors always mix the tokens first (architecture.md §3.1).
* CASE caption branch once per clip (33.2 G): the authors repeat the captions T times before CASE (§5), so the caption
  self-attention, FFN and projections run per frame; caeav runs them per clip (decisions D8).
* Caption keys/values in CASE's caption cross-attention once per clip (8.2 G): the clip's T frames are one query row
  against one set of caption keys (D8); the authors project the repeated captions per frame.
* Front end (19.2 G): torchlibrosa's STFT is two Conv1d (real, imaginary) of n_fft/2+1 kernels over all 1001 frames,
  plus the mel MatMul; caeav convolves only the 104 distinct frames of a tiled segment (107 positions) with n_fft
  kernels (`frontend.py`); the authors' bicubic F.interpolate counts 0 (caeav's MatMul form counts 0.14 G).
* AVVP only: the R(2+1)D-18 stream runs in caeav; the authors read precomputed features.
"""

from __future__ import annotations

import re
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Mapping, Optional

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from caeav.config import ModelConfig
from caeav.model.avmoe import MoEAdapter
from caeav.model.experts import UnimodalExpert

aten = torch.ops.aten
CONVENTION = ("FLOPs as torch's FlopCounterMode counts them: 1 multiply-add = 2 FLOPs; matrix products and "
              "convolutions only")

# issue 17: the authors' paper AVE model, GFLOP per clip (random weights, batch 1, T = 10)
AUTHORS_AVE_GFLOP = {
    "visual backbone (Swin-V2): blocks": 509, "AVMoE adapters": 290, "AVMoE adapters: token-mixing convolutions": 228,
    "audio backbone: HTS-AT core: blocks": 114, "CASE": 88, "CASE: caption branch": 37, "CASTE": 39,
    "audio front end": 22, "total": 1077.7,
}

FRONT, SWIN, HTSAT = "audio front end", "visual backbone (Swin-V2)", "audio backbone: HTS-AT core"
CASTE, AVMOE, MAPPER, BOTTLENECKS = "CASTE", "AVMoE adapters", "caption mapper", "caption bottlenecks"
CASE, ST, HEAD, OTHER = "CASE", "spatio-temporal stream (R(2+1)D-18)", "head", "other (outside these modules)"
ROWS = (FRONT, SWIN, HTSAT, CASTE, AVMOE, MAPPER, BOTTLENECKS, CASE, ST, HEAD, OTHER)
BLOCKS, EMBED = "blocks", "patch embed + merges"
TOKEN_MIX, CAPTION = "token-mixing convolutions", "caption branch"
UA_ATTENTION = "unimodal experts' token self-attention"  # AVVP's parameter-free one, AVS's latent-token one
REST = "rest: patch embeds, merges, caption projector, head"  # its issue figure: the total minus the parts
CAPTION_BRANCH = ("sa_vcap", "sa_acap", "ffn_vcap", "ffn_acap", "proj_vcap", "proj_acap")  # CASE children
HEAVY = re.compile(r"conv|attention|lstm|gru|rnn|einsum|matmul|\._?linear|\.(_?[a-z_]*mm|[a-z]*mv|v?dot)$")


# ------------------------------------------------------------------------------------------------ formulas


def mv_flop(a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    """aten.mv, `[n, m] @ [m]`: 2·n·m."""
    return 2 * a_shape[0] * a_shape[1]


def addmv_flop(self_shape, a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    """aten.addmv, `c + [n, m] @ [m]`: 2·n·m (the add is elementwise, not counted)."""
    return mv_flop(a_shape, b_shape)


def dot_flop(a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    """aten.dot / aten.vdot, `[n] · [n]`: 2·n."""
    return 2 * a_shape[0]


def cpu_flash_sdpa_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """`_scaled_dot_product_flash_attention_for_cpu` (fused CPU SDPA, missing from torch 2.14's registry): QKᵀ and AV,
    2·B·H·L_q·L_k·(d_qk + d_v), the formula FlopCounterMode uses for the other SDPA kernels (equal KV heads)."""
    b, h, l_q, d_qk = query_shape
    l_k, d_v = key_shape[-2], value_shape[-1]
    return 2 * b * h * l_q * l_k * (d_qk + d_v)


EXTRA_FORMULAS = {
    aten.mv: mv_flop, aten.addmv: addmv_flop, aten.dot: dot_flop, aten.vdot: dot_flop,
    aten._scaled_dot_product_flash_attention_for_cpu: cpu_flash_sdpa_flop,
}


def alignment_macs(tokens_self: int, tokens_other: int, dim_self: int, dim_other: int, channel_first: bool) -> int:
    """Multiply-adds per frame of the AVMoE alignment ŷ = Linear_{C_o→C_s}(W_tok y), W_tok `[L_s, L_o]`:
    tokens first L_s·L_o·C_o + L_s·C_o·C_s (the authors), channels first L_o·C_o·C_s + L_s·L_o·C_s."""
    if channel_first:
        return tokens_other * dim_other * dim_self + tokens_self * tokens_other * dim_self
    return tokens_self * tokens_other * dim_other + tokens_self * dim_other * dim_self


def token_mixing_macs(tokens_self: int, tokens_other: int, channels: int) -> int:
    """Multiply-adds per frame of the token-mixing 1×1 convolution W_tok `[L_s, L_o]` over `channels` columns."""
    return tokens_self * tokens_other * channels


def caption_kv_macs(context_length: int, dim: int) -> int:
    """Multiply-adds of projecting one caption `[L_c, C]` to keys and values: 2·L_c·C²."""
    return 2 * context_length * dim * dim


def torchlibrosa_frontend_macs(frames: int, n_fft: int, n_mels: int) -> int:
    """Multiply-adds per segment of the authors' front end: STFT as two Conv1d (real, imaginary) of n_fft/2+1 kernels
    of length n_fft over every frame, then power @ mel `[n_fft/2+1, n_mels]` (torchlibrosa; interpolation counts 0)."""
    bins = n_fft // 2 + 1
    return 2 * bins * n_fft * frames + frames * bins * n_mels


# ------------------------------------------------------------------------------------------------ counting


@dataclass
class FlopCount:
    """`by_module`: module name (relative to the counted module, "" = itself) → op → FLOPs its own code ran (not its
    children's); `modules`: name → module; `total`: FlopCounterMode's total; `uncounted`: heavy-looking ops without a
    formula → calls."""

    by_module: dict
    modules: dict
    total: int
    uncounted: dict = field(default_factory=dict)


class _Attribution(TorchDispatchMode):
    """Credits each op's FLOPs (the counter's formulas) to the innermost module on `stack`."""

    def __init__(self, registry: Mapping, stack: list):
        super().__init__()
        self.registry, self.stack = registry, stack
        self.flops: dict = defaultdict(lambda: defaultdict(int))
        self.uncounted: dict = defaultdict(int)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = func._overloadpacket
        if packet in self.registry:
            self.flops[self.stack[-1]][str(packet)] += int(self.registry[packet](*args, **kwargs, out_val=out))
        elif HEAVY.search(str(packet)):
            self.uncounted[str(packet)] += 1
        return out


@contextmanager
def _module_stack(names: Mapping[int, str], stack: list):
    """Global forward hooks: push the running module's name (a module not in `names` keeps its caller's), pop after."""
    from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook

    def enter(module, args):
        stack.append(names.get(id(module), stack[-1]))

    def leave(module, args, output):
        stack.pop()

    handles = [register_module_forward_pre_hook(enter), register_module_forward_hook(leave)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def count_module_flops(module: nn.Module, inputs: Mapping) -> FlopCount:
    """Run `module(**inputs)` once without gradients and count its FLOPs per module (see the module docstring).

    Use meta tensors (the module and the inputs on the meta device): nothing is allocated and SDPA decomposes."""
    modules = dict(module.named_modules())
    names = {id(m): name for name, m in modules.items()}
    stack = [""]
    counter = FlopCounterMode(display=False, custom_mapping=EXTRA_FORMULAS)
    attribution = _Attribution(counter.flop_registry, stack)
    with torch.no_grad(), _module_stack(names, stack), counter, attribution:
        module(**inputs)
    by_module = {name: dict(ops) for name, ops in attribution.flops.items()}
    total = int(counter.get_total_flops())
    attributed = sum(v for ops in by_module.values() for v in ops.values())
    if attributed != total:
        raise AssertionError(f"modules hold {attributed:,} FLOPs, FlopCounterMode counted {total:,}")
    return FlopCount(by_module, modules, total, dict(attribution.uncounted))


def classify(name: str, module: nn.Module, op: str) -> tuple[str, Optional[str]]:
    """(row, detail) of one module's own FLOPs of one op; detail names an "of which" line or is None."""
    parts = name.split(".")
    top, sub = parts[0], (parts[1] if len(parts) > 1 else "")
    if top == "encoder":
        if sub == "frontend":
            return FRONT, None
        if sub in ("visual", "audio"):
            in_block = len(parts) > 4 and parts[2] == "layers" and parts[4] == "blocks"
            return (SWIN if sub == "visual" else HTSAT), (BLOCKS if in_block else EMBED)
        if sub.endswith("_caste"):
            return CASTE, None
        if "_moe_" in sub:  # the token mixing is an F.conv2d in MoEAdapter.align itself
            if isinstance(module, MoEAdapter) and op == "aten.convolution":
                return AVMOE, TOKEN_MIX
            own_attention = isinstance(module, UnimodalExpert) and op in ("aten.bmm", "aten.mm")
            return AVMOE, (UA_ATTENTION if own_attention else None)
    if top == "caption_projector":
        return (MAPPER if sub == "mapper" else BOTTLENECKS), None
    if top == "case":
        return CASE, (CAPTION if sub in CAPTION_BRANCH else None)
    if top == "st_stream":
        return ST, None
    if top == "head":
        return HEAD, None
    return OTHER, None


def component_flops(count: FlopCount) -> tuple[dict, dict]:
    """Rows (in `ROWS` order, only those with FLOPs; they sum to the total) and "of which" lines `"row: detail"`."""
    rows: dict = defaultdict(int)
    details: dict = defaultdict(int)
    for name, ops in count.by_module.items():
        for op, flops in ops.items():
            row, detail = classify(name, count.modules[name], op)
            rows[row] += flops
            if detail:
                details[f"{row}: {detail}"] += flops
    ordered = {row: rows[row] for row in ROWS if rows.get(row)}
    return ordered, dict(sorted(details.items(), key=lambda kv: ROWS.index(kv[0].rsplit(": ", 1)[0])))


# ------------------------------------------------------------------------------------------------ report


def authors_lines(model, cfg: ModelConfig, rows: dict, details: dict, frames: int) -> dict:
    """The reconciliation lines with the authors' model: caeav's total + each piece of work they do and caeav does
    not (or does in a cheaper order; module docstring) = their count. `frames` = B·T of the counted run."""
    enc, segments = model.encoder, cfg.task.segments
    align = mixing = 0
    for m in enc.modules():
        if isinstance(m, MoEAdapter):
            l_s, l_o = m.token_mix.out_channels, m.token_mix.in_channels
            c_s, c_o = m.channel_map.out_features, m.channel_map.in_features
            align += alignment_macs(l_s, l_o, c_s, c_o, False) - alignment_macs(l_s, l_o, c_s, c_o, m.channel_first)
            mixing += token_mixing_macs(l_s, l_o, c_o)
    caption = details.get(f"{CASE}: {CAPTION}", 0)
    blocks = () if model.case is None else (model.case.ca_v_qcap, model.case.ca_a_qcap)  # none: AVMoE baseline
    kv = sum(caption_kv_macs(cfg.caption.context_length, block.attention.linear_k.in_features) for block in blocks)
    fe = enc.frontend
    theirs_fe = 2 * frames * torchlibrosa_frontend_macs(fe.n_frames, fe.cfg.n_fft, fe.cfg.n_mels)
    total = sum(rows.values())
    lines = {
        "caeav FLOPs per clip": total,
        "+ AVMoE alignment in the authors' order (tokens mixed first; caeav maps channels first where cheaper)":
            2 * frames * align,
        f"+ CASE caption branch per frame (×{segments}; caeav once per clip)": (segments - 1) * caption,
        f"+ CASE caption keys/values per frame (×{segments}; caeav shares them over the clip)":
            2 * (frames // segments) * (segments - 1) * kv,
        f"+ front end over all {fe.n_frames} STFT frames (torchlibrosa; caeav convolves {fe.n_slots} positions)":
            theirs_fe - rows.get(FRONT, 0),
    }
    if rows.get(ST):
        lines["- R(2+1)D-18 stream (the authors read precomputed features)"] = -rows[ST]
    lines["= the authors' model, as counted"] = sum(lines.values())
    lines["AVMoE token-mixing convolutions: caeav"] = details.get(f"{AVMOE}: {TOKEN_MIX}", 0)
    lines["AVMoE token-mixing convolutions: the authors' order"] = 2 * frames * mixing
    if cfg.preset == "paper" and cfg.task.name == "ave" and cfg.uses_captions:
        figure = int(AUTHORS_AVE_GFLOP["total"] * 1e9)
        lines["issue 17: the authors' paper AVE model"] = figure
        lines["difference from issue 17"] = lines["= the authors' model, as counted"] / figure - 1
    return lines


def authors_components(rows: dict, details: dict, lines: dict) -> dict:
    """Paper AVE: caeav's and the authors' (caeav + the reconciliation piece of that component) FLOPs next to the
    issue's rounded figures, per component the issue names."""
    def line(prefix: str) -> int:
        return next(v for k, v in lines.items() if k.startswith(prefix))

    align, fe = line("+ AVMoE alignment"), line("+ front end")
    caption, kv = line("+ CASE caption branch"), line("+ CASE caption keys")
    caeav = {**rows, **details}
    extra = {AVMOE: align, f"{AVMOE}: {TOKEN_MIX}": lines["AVMoE token-mixing convolutions: the authors' order"]
             - details.get(f"{AVMOE}: {TOKEN_MIX}", 0), CASE: caption + kv, f"{CASE}: {CAPTION}": caption, FRONT: fe}
    out = {}
    for name, figure in AUTHORS_AVE_GFLOP.items():
        if name == "total":
            continue
        ours = caeav.get(name, 0)
        out[name] = {"caeav": ours, "authors": ours + extra.get(name, 0), "issue 17 (G)": figure}
    top = [name for name in out if ": " not in name or name.endswith(BLOCKS)]  # the parts, no "of which"
    total, theirs = sum(rows.values()), lines["= the authors' model, as counted"]
    rest = total - sum(out[name]["caeav"] for name in top)
    out[REST] = {"caeav": rest, "authors": rest,
                 "issue 17 (G)": round(AUTHORS_AVE_GFLOP["total"] - sum(AUTHORS_AVE_GFLOP[n] for n in top), 1)}
    out["total"] = {"caeav": total, "authors": theirs, "issue 17 (G)": AUTHORS_AVE_GFLOP["total"]}
    return out


def flops_report(cfg: ModelConfig, model=None) -> dict:
    """The `flops` section of `caeav model summary --flops`: FLOPs per clip (batch 1, T segments) per component, the
    "of which" lines, the ops counted, and the reconciliation with the authors' model (JSON-serialisable)."""
    from caeav.model.cae_av import build_model
    from caeav.model.summary import _example_inputs

    model = (model if model is not None else build_model(cfg, device="meta")).eval()
    count = count_module_flops(model, _example_inputs(cfg, batch=1))
    rows, details = component_flops(count)
    ops: dict = defaultdict(int)
    for per_op in count.by_module.values():
        for op, flops in per_op.items():
            ops[op] += flops
    lines = authors_lines(model, cfg, rows, details, frames=cfg.task.segments)
    report = {
        "convention": CONVENTION,
        "per": f"clip: batch 1, T = {cfg.task.segments}, eval mode, counted on the meta device",
        "components": rows,
        "of_which": details,
        "total": count.total,
        "ops": dict(sorted(ops.items(), key=lambda kv: -kv[1])),
        "uncounted_heavy_ops": count.uncounted,
        "authors_flops_reconciliation": lines,
    }
    if "issue 17: the authors' paper AVE model" in lines:
        report["authors_components"] = authors_components(rows, details, lines)
    return report
