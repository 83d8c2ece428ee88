"""`caeav model summary`: parameter counts per component and I/O shapes, from a model built on the meta device.

Nothing is allocated and no weights are read: the `paper` model (460.9 M parameters) summarises in seconds. The
reconciliation with the paper's Table II follows architecture.md §10: the authors' count includes torchlibrosa's STFT
and mel matrices, which torchlibrosa registers as (frozen) parameters; caeav keeps them as fixed buffers. AVVP's
frozen R(2+1)D-18 stream (31.3 M, `caeav.model.st_stream`) is not part of the authors' model, which reads LLP's
precomputed features: the reconciliation takes it out again.

AVS (`paper` preset) is reconciled with the authors' `Pred_endecoder` instead (the state-dict maps of the official
code at JingVIPLab/CAE-AV 8666d51, built with the `train_v2.sh` options): caeav's parameters + the STFT/mel tables +
the parts of their model that reach no output and that caeav does not build (`caeav.model.heads.avs`) = the
elements of their state dict. Every built component has the authors' count; the adapters' latent tokens are 87
(the `MoEAdapter` default, which their AVS model never overrides).
"""

from __future__ import annotations

import torch
from torch import nn

from caeav.config import ModelConfig
from caeav.model.cae_av import CAEAV, build_model
from caeav.model.frontend import AudioFrontEnd

# Table II of the paper, row "ours, Swin-V2-L + HTS-AT" (AVE): total parameters and trainable share.
PAPER_TABLE_II = {"total": 460_900_000, "trainable_share": 0.435}
# The authors' AVMoE AVE model (official state dict `ave-avmoe`, AVE train.sh options): 362,740,627 parameter elements,
# 102.6 M of them trainable with their options (issue 14).
AUTHORS_AVMOE_AVE = {"total": 362_740_627, "trainable_share": 0.283}

# The authors' AVS model (official state dicts, paper preset): parameter elements of the whole state dict, of its
# AVMoE adapters, and of the parts caeav does not build because no output depends on them (same for S4 and MS3).
AUTHORS_AVS_TOTAL = {"avs_s4": 704_167_335, "avs_ms3": 615_607_319}
AUTHORS_AVS_ADAPTERS = {"avs_s4": 199_702_032, "avs_ms3": 111_142_016}
AUTHORS_AVS_NOT_BUILT = {
    "PVT-v2-b5 encoder (encoder_backbone)": 81_443_008,
    "conv1-4 classifiers": 9_441_280,
    "x1-4_linear projections": 1_094_656,
    "TemporalAttention: cross-modal decoders and template layers": 23_953_408,
    "path4.resConfUnit1": 1_180_160,
}


def _count(params) -> tuple[int, int]:
    trainable = frozen = 0
    for p in params:
        if p.requires_grad:
            trainable += p.numel()
        else:
            frozen += p.numel()
    return trainable, frozen


def _row(params) -> dict:
    trainable, frozen = _count(params)
    return {"trainable": trainable, "frozen": frozen, "total": trainable + frozen}


def component_rows(model: CAEAV) -> dict[str, dict]:
    """One row per component, in the order of architecture.md §10; rows add up to the whole model."""
    enc = model.encoder
    moe = [getattr(enc, f"{m}_moe_{p}") for m in ("visual", "audio") for p in ("p1", "p2")]
    audio_core = {id(p) for p in enc.audio.core_parameters()}
    rows = {
        "visual backbone (Swin-V2)": _row(enc.visual.parameters()),
        "audio backbone: HTS-AT core": _row(p for p in enc.audio.parameters() if id(p) in audio_core),
        "audio backbone: final norm + tscam + head (unused)": _row(
            p for p in enc.audio.parameters() if id(p) not in audio_core),
        "audio front end (bn0)": _row(enc.frontend.parameters()),
        "AVMoE adapters": _row(p for m in moe for p in m.parameters()),
    }
    if model.case is not None:  # CAE-AV's own parts; the AVMoE baseline has none of them
        rows.update({
            "CASTE": _row(list(enc.visual_caste.parameters()) + list(enc.audio_caste.parameters())),
            "caption mapper": _row(model.caption_projector.mapper.parameters()),
            "caption bottlenecks": _row(
                list(model.caption_projector.bottleneck_v.parameters())
                + list(model.caption_projector.bottleneck_a.parameters())),
            "CASE": _row(model.case.parameters()),
        })
    if model.st_stream is not None:
        rows["spatio-temporal stream (R(2+1)D-18)"] = _row(model.st_stream.parameters())
    for name, child in model.head.named_children():
        rows.setdefault(f"head: {name}", {"trainable": 0, "frozen": 0, "total": 0})
        for key, value in _row(child.parameters()).items():
            rows[f"head: {name}"][key] += value
    head_direct = [p for n, p in model.head.named_parameters() if "." not in n]
    if head_direct:
        rows["head: own parameters"] = _row(head_direct)
    covered = sum(r["total"] for r in rows.values())
    whole = sum(p.numel() for p in model.parameters())
    if covered != whole:  # every parameter belongs to exactly one row
        raise AssertionError(f"summary rows cover {covered:,} of {whole:,} parameters")
    return rows


def _frontend_fixed_tables(frontend: AudioFrontEnd) -> int:
    """Entries of torchlibrosa's STFT kernels and mel matrix, which the authors' count includes (architecture.md
    §10: 1,050,624 + 32,832 for n_fft 1024, 64 mels)."""
    n_fft, n_mels = frontend.cfg.n_fft, frontend.cfg.n_mels
    bins = n_fft // 2 + 1
    return 2 * bins * n_fft + bins * n_mels


def _example_inputs(cfg: ModelConfig, batch: int = 2) -> dict[str, torch.Tensor]:
    T, S = cfg.task.segments, cfg.task.input_size
    inputs = {
        "frames": torch.empty(batch, T, 3, S, S, device="meta"),
        "wave": torch.empty(batch, T, cfg.frontend.sample_rate, device="meta"),
    }
    if cfg.uses_captions:  # the AVMoE baseline takes none
        for name in ("vis_caption", "aud_caption"):
            inputs[name] = torch.empty(batch, cfg.caption.context_length, cfg.caption.text_dim, device="meta")
    head = cfg.task.head
    if cfg.task.name == "avvp" and int(head.get("st_dim", 0)) > 0:  # the stream's clips (or `st` [B,T,st_dim])
        st = cfg.st
        inputs["st_clips"] = torch.empty(batch, T, 3, st.frames, st.size, st.size, device="meta")
    if cfg.task.name == "avqa":
        inputs["question"] = torch.zeros(batch, int(head.get("question_len", 14)), dtype=torch.long, device="meta")
    return inputs


def _spec(t: torch.Tensor) -> dict:
    return {"shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", "")}


def summarize(cfg: ModelConfig, batch: int = 2) -> dict:
    """The report printed by `caeav model summary` (a JSON-serialisable dict)."""
    model = build_model(cfg, device="meta").eval()
    rows = component_rows(model)
    trainable = sum(r["trainable"] for r in rows.values())
    frozen = sum(r["frozen"] for r in rows.values())
    inputs = _example_inputs(cfg, batch)
    with torch.no_grad():
        outputs = model(**inputs)
    enc = model.encoder
    fixed = _frontend_fixed_tables(enc.frontend)
    stream = rows.get("spatio-temporal stream (R(2+1)D-18)", {}).get("total", 0)
    paper_total = trainable + frozen + fixed - stream
    if cfg.task.name in AUTHORS_AVS_TOTAL:
        reconciliation = {"authors_reconciliation": _authors_avs(cfg, rows, trainable + frozen, fixed)}
    else:
        lines = {"caeav parameters": trainable + frozen,
                 "+ STFT kernels and mel matrix (torchlibrosa parameters; fixed buffers in caeav)": fixed}
        if stream:
            lines["- R(2+1)D-18 stream (the authors read precomputed features)"] = -stream
        lines.update({"= total as the authors count it": paper_total,
                      "trainable share as the authors count it": trainable / paper_total})
        if cfg.uses_captions:
            lines["paper Table II"] = PAPER_TABLE_II
            reconciliation = {"table_ii_reconciliation": lines}
        else:
            lines["the authors' AVMoE (AVE, official state dict)"] = AUTHORS_AVMOE_AVE
            reconciliation = {"authors_reconciliation": lines}
    return {
        "config": cfg.preset,
        "task": cfg.task.name,
        "components": rows,
        "totals": {"trainable": trainable, "frozen": frozen, "total": trainable + frozen,
                   "trainable_share": trainable / (trainable + frozen)},
        **reconciliation,
        "structure": {
            "adapter_positions": enc.num_positions,
            "moe_modules": 4 * enc.num_positions,
            "visual_stages": [{"tokens": s.tokens, "dim": s.dim} for s in enc.visual_shapes],
            "audio_stages": [{"tokens": s.tokens, "dim": s.dim} for s in enc.audio_shapes],
        },
        "inputs": {name: _spec(t) for name, t in inputs.items()},
        "outputs": {name: _spec(t) for name, t in outputs.items() if isinstance(t, torch.Tensor)},
        "notes": [
            "frozen: both backbones, the front end's bn0 and AVVP's R(2+1)D-18 stream (decisions D3); the CLIP text "
            "tower is separate (captions arrive as cached features) and is not counted here",
            f"batch {batch} shown; the batch axis is dynamic",
        ],
    }


def _authors_avs(cfg: ModelConfig, rows: dict, caeav_total: int, fixed: int) -> dict:
    """The AVS lines of the reconciliation with the authors' state dict (module doc); {} off the paper preset,
    whose backbones and widths are the only ones the authors built."""
    if cfg.preset != "paper":
        return {}
    task = cfg.task.name
    lines = {"caeav parameters": caeav_total,
             "+ STFT kernels and mel matrix (torchlibrosa parameters; fixed buffers in caeav)": fixed}
    lines.update({f"+ not built (reaches no output): {name}": n for name, n in AUTHORS_AVS_NOT_BUILT.items()})
    lines["= total as the authors count it"] = caeav_total + fixed + sum(AUTHORS_AVS_NOT_BUILT.values())
    lines["authors' state dict (Pred_endecoder, train_v2.sh options)"] = AUTHORS_AVS_TOTAL[task]
    lines["AVMoE adapters (caeav)"] = rows["AVMoE adapters"]["total"]
    lines["AVMoE adapters (authors' state dict)"] = AUTHORS_AVS_ADAPTERS[task]
    return lines


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
