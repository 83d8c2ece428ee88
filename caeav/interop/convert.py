"""`caeav import` and `caeav export-official`: authors' checkpoint ↔ caeav checkpoint.

Import (`import_official`), in this order, so that nothing is written unless every check passes:
1. read the file safely (`caeav.interop.reader`), recognise the task and the variant from the keys;
2. map every key (`caeav.interop.mapping`; unknown keys → error);
3. resolve the config: preset + task + the authors' behaviour options of the task module + head sizes read off the
   tensors + the user's overrides; check the shape-changing AVMoE options against the tensors
   (`caeav.interop.options`);
4. check strictness against the model of that config (built on the meta device): every caeav tensor filled exactly
   once, except frozen backbones whose weight files the user passes (`visual.weights=`, `audio.weights=`; then
   the file's backbone entries, when present, are superseded) and AVVP's `st_stream` (from `st.weights=`);
   a shape mismatch names the option that explains it;
5. build the model, load the tensors, and write the checkpoint with `caeav.model.checkpoint.save_checkpoint` (the
   writer `caeav train` uses: atomic, sha256 per file); then load it back with `load_model_weights`, the loader of
   `eval`, `export`, `infer --engine torch` and `parity`.

Export (`export_official`): the inverse mapping of a checkpoint's weights, plus the dropped entries written back
(recomputed tables and masks with their values, unused parts as zeros of their recorded shapes) so the authors'
strict `load_state_dict` accepts it; AVQA keys get DataParallel's `module.` prefix like the authors' own files.
"""

from __future__ import annotations

import gzip
import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Optional

import torch

from caeav.config import ModelConfig, apply_overrides, canonical_task, load_config
from caeav.interop import options as opts
from caeav.interop.common import BACKBONE_PREFIXES
from caeav.interop.mapping import OfficialCheckpointError, TaskMap, first, task_map
from caeav.interop.reader import read_official
from caeav.interop.transforms import shifted_window_mask, stft_tables

CAE_AV_SIGNATURE = ("case.", "vis_caste_blocks_p1.")
SAVED_PREFIX = {"avqa": "module."}  # the authors' AVQA script saves a DataParallel model


@dataclass
class ImportReport:
    """What an import did, for the CLI's summary lines."""

    task: str
    variant: str
    checkpoint: Path
    mapped: int
    dropped: dict = field(default_factory=dict)  # (kind, what) → count
    superseded: dict = field(default_factory=dict)  # backbone → count of file entries replaced by a weight file
    options: list = field(default_factory=list)  # "key=value" set on import

    def lines(self) -> list[str]:
        out = [f"imported {self.mapped} tensors of the authors' {self.task} {self.variant.replace('_', '-')} model "
               f"into {self.checkpoint}"]
        unused = {w: n for (k, w), n in self.dropped.items() if k == "unused"}
        recomputed = {w: n for (k, w), n in self.dropped.items() if k == "recomputed"}
        if unused:
            out.append("dropped (unused by the authors' forward): " + ", ".join(f"{w} ({n})" for w, n in unused.items()))
        if recomputed:
            out.append("recomputed here: " + ", ".join(f"{w} ({n})" for w, n in recomputed.items()))
        for name, n in self.superseded.items():
            out.append(f"{name} backbone: {n} entries of the file replaced by {name}.weights")
        if self.options:
            out.append("options set on import: " + " ".join(self.options))
        return out


def detect(state, maps: Optional[dict] = None) -> tuple[str, str]:
    """(task module name, variant) of an authors' state dict, from signature keys."""
    from caeav.interop import ave, avqa, avs, avvp

    found = [m.TASK for m in (ave, avvp, avqa, avs) if any(k.startswith(m.SIGNATURE) for k in state)]
    if len(found) != 1:
        raise OfficialCheckpointError(
            "not a checkpoint of the authors' CAE-AV or AVMoE models (expected exactly one of the head signatures "
            f"CMBS., audio_cug., question_encoder., tpavi_b1.; found {found or 'none'})")
    variant = "cae_av" if any(k.startswith(CAE_AV_SIGNATURE) for k in state) else "avmoe"
    return found[0], variant


def _module_task(task: str) -> str:
    return "avs" if task.startswith("avs") else task


def _check_task_and_variant(state, task: str, variant: str) -> None:
    found_task, found_variant = detect(state)
    if found_task != _module_task(task):
        raise OfficialCheckpointError(f"this is a checkpoint of the authors' {found_task.upper()} model, not "
                                      f"{task}; pass --task {found_task if found_task != 'avs' else 'avs_s4/avs_ms3'}")
    if found_variant != variant:
        what = "CAE-AV (it has CASTE/CASE keys)" if found_variant == "cae_av" else "AVMoE (no CASTE/CASE keys)"
        raise OfficialCheckpointError(f"this is an {what} checkpoint; pass --variant {found_variant}")


def _user_keys(overrides) -> set:
    return {o.split("=", 1)[0].strip() for o in overrides or () if "=" in o}


def resolve_config(state, tm: TaskMap, preset: str, overrides: Optional[list]) -> tuple[ModelConfig, list]:
    """The config of the imported model and the options set on import ("key=value")."""
    mod = tm.module
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    heads = [f"{o}={json.dumps(v)}" for o, v, _ in mod.head_options(shapes)]
    behaviour = list(mod.AUTHORS_OPTIONS)
    if tm.task == "avs_ms3":  # MS3's v2 unimodal experts have no MHSA: the attention axis does not apply
        behaviour = [o for o in behaviour if not o.startswith("task.avmoe.ua_mhsa_axis")]
    if tm.variant == "avmoe":  # the baseline model: CAE-AV without CASTE, CASE and the caption branch
        behaviour.append("variant=avmoe")
    user = _user_keys(overrides)
    set_here = [o for o in heads + behaviour if o.split("=", 1)[0] not in user]
    cfg = load_config(preset, tm.task, set_here + list(overrides or []))
    inferred = opts.adapter_options(shapes, *mod.ADAPTERS)
    opts.check(cfg, inferred, tm.task)
    for option, value, evidence in mod.head_options(shapes):
        if opts._get(cfg, option) != value:
            raise OfficialCheckpointError(f"the checkpoint has {option}={value} ({evidence}) but you passed "
                                          f"{option}={opts._get(cfg, option)}")
    return cfg, set_here


def _absent_ok(cfg: ModelConfig) -> tuple:
    """caeav key prefixes the authors' file may lack (frozen parts loaded from weight files)."""
    ok = []
    if cfg.visual.weights:
        ok.append("encoder.visual.")
    if cfg.audio.weights:
        ok += ["encoder.audio.", "encoder.frontend."]
    ok.append("st_stream.")  # AVVP: the authors' model reads precomputed R(2+1)D-18 features
    return tuple(ok)


def _explain(tm: TaskMap, official_key: str) -> str:
    rule = tm.rule_for(official_key)
    return (rule.explains if rule is not None and rule.explains else "the preset (pass --config paper)")


def check_strict(mapped: dict, source: dict, cfg: ModelConfig, tm: TaskMap) -> dict:
    """Every caeav tensor filled exactly once (see the module docstring); returns the tensors to load, cast to the
    model's dtypes. Raises one line on the first problem."""
    from caeav.model.cae_av import build_model

    target = build_model(cfg, device="meta").state_dict()
    extra = [k for k in mapped if k not in target]
    if extra:
        raise OfficialCheckpointError(
            f"{len(extra)} tensor(s) caeav's {tm.task} model has no place for: "
            f"{first(source[k] for k in extra)} (check {_explain(tm, source[extra[0]])})")
    absent = _absent_ok(cfg)
    missing = [k for k in target if k not in mapped and not k.startswith(absent)]
    if missing:
        hint = ""
        if any(k.startswith("encoder.visual.") for k in missing):
            hint = "; the file has no Swin-V2 weights: pass visual.weights=FILE"
        elif any(k.startswith(("encoder.audio.", "encoder.frontend.")) for k in missing):
            hint = "; the file has no HTS-AT weights: pass audio.weights=FILE"
        raise OfficialCheckpointError(f"the file lacks {len(missing)} tensor(s) caeav's {tm.task} model needs: "
                                      f"{first(missing)}{hint}")
    for key, value in mapped.items():
        want = target[key]
        if tuple(value.shape) != tuple(want.shape):
            raise OfficialCheckpointError(
                f"{source[key]} has shape {list(value.shape)} but caeav's {key} is {list(want.shape)}: "
                f"set by {_explain(tm, source[key])}")
    if "st_stream.conv1.weight" in target or any(k.startswith("st_stream.") for k in target):
        if not cfg.st.weights:
            raise OfficialCheckpointError(
                "AVVP: the authors' model reads precomputed R(2+1)D-18 features, so their file holds no weights for "
                "caeav's R(2+1)D-18 stream; pass st.weights=r2plus1d_18-91a641e6.pth (torchvision's Kinetics-400 file)")
    return {k: (v.to(target[k].dtype) if v.dtype != target[k].dtype else v) for k, v in mapped.items()}


def import_official(src, task: str, out, variant: str = "cae_av", preset: str = "paper",
                    overrides: Optional[list] = None) -> ImportReport:
    """Import the authors' checkpoint `src` as a caeav checkpoint directory `out` (module docstring)."""
    from caeav.model.cae_av import build_model
    from caeav.model.checkpoint import load_model_weights, save_checkpoint

    task = canonical_task(task)
    state = read_official(src)
    _check_task_and_variant(state, task, variant)
    tm = task_map(task, variant)
    cfg, set_here = resolve_config(state, tm, preset, overrides)
    superseded = {}
    for name, prefixes in BACKBONE_PREFIXES.items():
        if getattr(cfg, name).weights:
            gone = [k for k in state if k.startswith(prefixes)]
            if gone:
                superseded[name] = len(gone)
                state = {k: v for k, v in state.items() if not k.startswith(prefixes)}
    mapped, source, dropped = tm.to_caeav(state)
    mapped = check_strict(mapped, source, cfg, tm)
    model = build_model(cfg, device="cpu", load_weights=True)
    result = model.load_state_dict(mapped, strict=False)
    absent = _absent_ok(cfg)
    assert not result.unexpected_keys and all(k.startswith(absent) for k in result.missing_keys), result
    del mapped, state
    path = save_checkpoint(model, cfg, out)
    load_model_weights(model, path)
    return ImportReport(task, variant, Path(path), len(source), {k: len(v) for k, v in dropped.items()},
                        superseded, set_here)


# ------------------------------------------------------------------------------------------------ export


def dropped_entries(module_task: str) -> list:
    """[key, shape, dtype] of the authors' entries caeav drops for a task (packaged data)."""
    raw = (resources.files("caeav.interop") / "data" / "dropped.json.gz").read_bytes()
    return json.loads(gzip.decompress(raw))["tasks"][module_task]


def recomputed_entries(cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """The entries caeav recomputes, with their values for `cfg`: the shifted-window masks of both backbones (odd
    blocks of every stage whose grid is larger than the window; timm 0.6 and HTS-AT store them) and torchlibrosa's
    STFT/mel tables."""
    out = {}
    for name, section, stride in (("swin", cfg.visual, cfg.visual.patch_size), ("htsat", cfg.audio,
                                                                                cfg.audio.patch_stride)):
        size = section.img_size if name == "swin" else section.spec_size
        for stage, depth in enumerate(section.depths):
            grid = (size // stride) >> stage
            if grid <= section.window_size:
                continue
            for block in range(1, depth, 2):
                out[f"{name}.layers.{stage}.blocks.{block}.attn_mask"] = shifted_window_mask(
                    grid, section.window_size, section.window_size // 2)
    fe = cfg.frontend
    for key, value in stft_tables(fe.n_fft, fe.sample_rate, fe.n_mels, fe.fmin, fe.fmax).items():
        out[f"htsat.{key}"] = value
    return out


def export_official(checkpoint, out, overrides: Optional[list] = None) -> dict:
    """Write checkpoint `checkpoint` in the authors' format to file `out` (module docstring); returns a summary."""
    from caeav.files import atomic_file
    from caeav.model.checkpoint import load_checkpoint

    model, cfg = load_checkpoint(checkpoint, device="cpu", overrides=overrides)
    variant = cfg.variant
    tm = task_map(cfg.task.name, variant)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("st_stream.")}
    official = tm.to_official(state)
    official.update(recomputed_entries(cfg))
    zeros = 0
    for key, shape, dtype in dropped_entries(tm.module.TASK):
        if tm.drop_for(key).kind == "unused":
            official[key] = torch.zeros(shape, dtype=getattr(torch, dtype))
            zeros += 1
    prefix = SAVED_PREFIX.get(cfg.task.name, "")
    official = {prefix + k: v.detach().contiguous() for k, v in official.items()}
    with atomic_file(out) as fh:
        torch.save(official, fh)
    return {"entries": len(official), "zero_filled_unused": zeros, "task": cfg.task.name, "variant": variant,
            "prefix": prefix}
