"""caeav checkpoints (decisions D9): a directory that restores a trained model without the training code.

    ckpt/
      model.safetensors     trainable weights (`CAEAV.trainable_state_dict()`), plus the frozen weights that no
                            file could restore (a backbone whose config names no weight file, e.g. `tiny`'s random ones)
      config.json           {"format": "caeav-checkpoint", "version": 1, "config": <resolved ModelConfig>,
                             "backbone_weights": {"visual"|"audio": {"file", "name", "sha256"} or null},
                             "stored_frozen": [module names stored above]}
      trainer_state.json    (optional) counters, RNG states, ... for `caeav train --resume`
      optimizer.safetensors (optional) the optimiser's tensors; its param groups live in trainer_state.json

    save_checkpoint(model, cfg, "runs/x/last", trainer_state={"epoch": 3, "optimizer": opt.state_dict()})
    model, cfg = load_checkpoint("runs/x/best", device="cpu")

Writing is atomic (`caeav.files.staged_dir`): everything goes to a temporary sibling directory that is renamed into
place (a reader never sees a half-written checkpoint; a failed write removes it; after a crash between the two
renames the previous one is left as `<dir>.old-<pid>`, which `resolve_checkpoint_dir` finds). Nothing here pickles: tensors go to safetensors, the rest to JSON.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch
from torch import Tensor, nn

from caeav.config import ModelConfig
from caeav.errors import WeightsError
from caeav.files import sha256_file, staged_dir

FORMAT = "caeav-checkpoint"
VERSION = 1
MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.safetensors"
PathLike = Union[str, os.PathLike]

_SHA_CACHE: dict = {}


def file_sha256(path: PathLike) -> str:
    """sha256 of a (possibly large) file, remembered per (path, size, mtime) so epochs do not re-hash backbones."""
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        _SHA_CACHE[key] = sha256_file(path)
    return _SHA_CACHE[key]


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside DistributedDataParallel / DataParallel wrappers (so checkpoints never carry `module.`)."""
    while hasattr(model, "module") and isinstance(model.module, nn.Module):
        model = model.module
    return model


def _backbone_files(cfg: ModelConfig) -> dict:
    """Which backbone weight files the model expects: {"visual": {...} | None, "audio": {...} | None}."""
    out = {}
    for key, path in (("visual", cfg.visual.weights), ("audio", cfg.audio.weights)):
        if not path:
            out[key] = None
            continue
        if not os.path.isfile(path):
            raise WeightsError(f"{key} backbone weights {path} not found")
        out[key] = {"file": str(path), "name": os.path.basename(path), "sha256": file_sha256(path)}
    return out


def _stored_frozen(cfg: ModelConfig) -> list[str]:
    """Frozen encoder modules whose weights only the checkpoint can restore (no weight file configured)."""
    names = []
    if not cfg.visual.weights:
        names.append("visual")
    if not cfg.audio.weights:
        names += ["audio", "frontend"]  # the front end's bn0 comes from the HTS-AT checkpoint
    return names


def _model_state(model: nn.Module, cfg: ModelConfig) -> dict[str, Tensor]:
    state = dict(model.trainable_state_dict())
    prefixes = tuple(f"encoder.{name}." for name in _stored_frozen(cfg))
    if prefixes:
        state.update({k: v for k, v in model.state_dict().items() if k.startswith(prefixes)})
    return {k: v.detach().to("cpu").contiguous() for k, v in state.items()}


def _flatten_optimizer(opt_state: Mapping) -> tuple[dict[str, Tensor], dict]:
    """Optimiser state_dict → (tensors keyed "state.<param>.<name>", JSON part: param groups + scalar state)."""
    tensors, scalars = {}, {}
    for idx, slots in opt_state.get("state", {}).items():
        for name, value in slots.items():
            if isinstance(value, Tensor):
                tensors[f"state.{idx}.{name}"] = value.detach().to("cpu").contiguous()
            else:
                scalars[f"{idx}.{name}"] = value
    return tensors, {"param_groups": opt_state.get("param_groups", []), "scalars": scalars}


def _unflatten_optimizer(tensors: Mapping[str, Tensor], meta: Mapping) -> dict:
    state: dict = {}
    for key, value in tensors.items():
        _, idx, name = key.split(".", 2)
        state.setdefault(int(idx), {})[name] = value
    for key, value in meta.get("scalars", {}).items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    return {"state": state, "param_groups": meta.get("param_groups", [])}


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True))


def save_checkpoint(model: nn.Module, cfg: ModelConfig, directory: PathLike,
                    trainer_state: Optional[Mapping[str, Any]] = None) -> Path:
    """Write a checkpoint directory atomically (replacing an existing one). `trainer_state` is JSON-serialisable
    except for an optional "optimizer" entry (an optimiser `state_dict()`), stored as safetensors."""
    from safetensors.torch import save_file

    model = unwrap(model)
    with staged_dir(directory) as tmp:
        save_file(_model_state(model, cfg), str(tmp / MODEL_FILE))
        _write_json(tmp / CONFIG_FILE, {"format": FORMAT, "version": VERSION, "config": cfg.to_dict(),
                                        "backbone_weights": _backbone_files(cfg), "stored_frozen": _stored_frozen(cfg)})
        if trainer_state is not None:
            state = dict(trainer_state)
            opt = state.pop("optimizer", None)
            if opt is not None:
                tensors, state["optimizer"] = _flatten_optimizer(opt)
                save_file(tensors, str(tmp / OPTIMIZER_FILE))
            _write_json(tmp / STATE_FILE, state)
    return Path(directory)


def resolve_checkpoint_dir(directory: PathLike) -> Path:
    """`directory`, or the `<dir>.old-*` copy a crash between the two renames of `save_checkpoint` left behind."""
    path = Path(directory)
    if (path / CONFIG_FILE).is_file():
        return path
    leftovers = sorted(path.parent.glob(f"{path.name}.old-*"), key=lambda p: p.stat().st_mtime)
    for candidate in reversed(leftovers):
        if (candidate / CONFIG_FILE).is_file():
            return candidate
    raise WeightsError(f"{path} is not a caeav checkpoint (no {CONFIG_FILE})")


def read_checkpoint_config(directory: PathLike) -> tuple[ModelConfig, dict]:
    """(ModelConfig, the whole config.json) of a checkpoint directory."""
    path = resolve_checkpoint_dir(directory)
    try:
        meta = json.loads((path / CONFIG_FILE).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise WeightsError(f"{path / CONFIG_FILE}: unreadable ({exc})") from None
    if meta.get("format") != FORMAT:
        raise WeightsError(f"{path} is not a caeav checkpoint (format {meta.get('format')!r})")
    return ModelConfig.from_dict(meta["config"]), meta


def _check_backbone_files(meta: Mapping, path: Path) -> None:
    for key, entry in (meta.get("backbone_weights") or {}).items():
        if not entry:
            continue
        file = entry["file"]
        if not os.path.isfile(file):
            raise WeightsError(f"checkpoint {path} needs the {key} backbone weights {entry['name']} at {file}; "
                               f"put the file there or pass {key}.weights=PATH")
        if file_sha256(file) != entry["sha256"]:
            raise WeightsError(f"{file} is not the {key} backbone this checkpoint was trained with (sha256 differs)")


def load_checkpoint(directory: PathLike, device: Union[str, torch.device] = "cpu",
                    overrides: Optional[list[str]] = None) -> tuple[nn.Module, ModelConfig]:
    """Rebuild the model of a checkpoint directory on `device`: (model in eval mode, its ModelConfig).

    `overrides` (key=value) may point the backbone weight files elsewhere (`visual.weights=...`)."""
    from safetensors.torch import load_file

    from caeav.config import apply_overrides
    from caeav.model.cae_av import build_model

    path = resolve_checkpoint_dir(directory)
    cfg, meta = read_checkpoint_config(path)
    if overrides:
        cfg = ModelConfig.from_dict(apply_overrides(cfg.to_dict(), overrides))
        for key, section in (("visual", cfg.visual), ("audio", cfg.audio)):
            if meta["backbone_weights"].get(key) and section.weights:
                meta["backbone_weights"][key]["file"] = section.weights
    _check_backbone_files(meta, path)
    model = build_model(cfg, device="cpu", load_weights=True)
    try:
        state = load_file(str(path / MODEL_FILE))
    except (OSError, Exception) as exc:  # safetensors raises its own error types for corrupt files
        raise WeightsError(f"{path / MODEL_FILE}: unreadable ({exc})") from None
    result = model.load_state_dict(state, strict=False)
    from_files = tuple(f"encoder.{m}." for m in ("frontend", "visual", "audio") if m not in meta["stored_frozen"])
    expected_missing = {k for k in model.state_dict() if k.startswith(from_files)} if from_files else set()
    missing = [k for k in result.missing_keys if k not in expected_missing]
    if missing or result.unexpected_keys:
        what = f"missing {missing[:3]}" if missing else f"unexpected {result.unexpected_keys[:3]}"
        raise WeightsError(f"{path / MODEL_FILE} does not fit the model of its config ({what})")
    return model.to(device).eval(), cfg


def load_trainer_state(directory: PathLike) -> Optional[dict]:
    """The trainer state saved with a checkpoint (with "optimizer" rebuilt as a state_dict), or None."""
    from safetensors.torch import load_file

    path = resolve_checkpoint_dir(directory)
    if not (path / STATE_FILE).is_file():
        return None
    state = json.loads((path / STATE_FILE).read_text())
    if "optimizer" in state:
        tensors = load_file(str(path / OPTIMIZER_FILE)) if (path / OPTIMIZER_FILE).is_file() else {}
        state["optimizer"] = _unflatten_optimizer(tensors, state["optimizer"])
    return state
