"""caeav checkpoints (decisions D9): a directory that restores a trained model without the training code.

    ckpt/
      model.safetensors     trainable weights (`CAEAV.trainable_state_dict()`), plus the frozen weights that no
                            file could restore (a backbone whose config names no weight file, e.g. `tiny`'s random ones)
      config.json           {"format": "caeav-checkpoint", "version": 1, "config": <resolved ModelConfig>,
                             "backbone_weights": {"visual"|"audio": {"file", "name", "sha256"} or null},
                             "stored_frozen": [module names stored above],
                             "sha256": {file name: sha256 of every other file of the directory}}
      trainer_state.json    (optional) counters, RNG states, ... for `caeav train --resume`
      optimizer.safetensors (optional) the optimiser's tensors; its param groups live in trainer_state.json

    save_checkpoint(model, cfg, "runs/x/last", trainer_state={"epoch": 3, "optimizer": opt.state_dict()})
    model, cfg = load_checkpoint("runs/x/best", device="cpu")

Writing is atomic (`caeav.files.staged_dir`): everything goes to a temporary sibling directory that is renamed into
place (a reader never sees a half-written checkpoint; a failed write removes it; after a crash between the two
renames the previous one is left as `<dir>.old-<pid>`, which `resolve_checkpoint_dir` finds). Nothing here pickles:
tensors go to safetensors, the rest to JSON.

Integrity: `config.json` is written last and records the sha256 of every other file; each loader checks the files it
reads (`verify_files`: the weights for `load_checkpoint`, `load_model_weights`, the trainer state and optimiser for
`load_trainer_state`), so a damaged file is refused with one line naming it instead of being evaluated, exported or
resumed. Checkpoints written before hashes existed (no "sha256" entry) load without a check. Every unreadable file is
a `WeightsError`, never a raw safetensors or JSON error.
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
    except for an optional "optimizer" entry (an optimiser `state_dict()`), stored as safetensors. `config.json`
    comes last, with the sha256 of the files written before it."""
    from safetensors.torch import save_file

    model = unwrap(model)
    with staged_dir(directory) as tmp:
        save_file(_model_state(model, cfg), str(tmp / MODEL_FILE))
        if trainer_state is not None:
            state = dict(trainer_state)
            opt = state.pop("optimizer", None)
            if opt is not None:
                tensors, state["optimizer"] = _flatten_optimizer(opt)
                save_file(tensors, str(tmp / OPTIMIZER_FILE))
            _write_json(tmp / STATE_FILE, state)
        hashes = {p.name: sha256_file(p) for p in sorted(tmp.iterdir())}
        _write_json(tmp / CONFIG_FILE, {"format": FORMAT, "version": VERSION, "config": cfg.to_dict(),
                                        "backbone_weights": _backbone_files(cfg), "stored_frozen": _stored_frozen(cfg),
                                        "sha256": hashes})
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
    meta = _read_json(path / CONFIG_FILE)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise WeightsError(f"{path} is not a caeav checkpoint (format {found!r})")
    if not isinstance(meta.get("config"), dict):
        raise WeightsError(f"{path / CONFIG_FILE}: unreadable (no model config); retrain or restore it")
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


def verify_files(path: Path, meta: Mapping, names) -> None:
    """Check the files `names` of checkpoint `path` against the sha256 its config.json recorded at save time
    (WeightsError naming the first damaged or missing one); a checkpoint without hashes is not checked."""
    recorded = meta.get("sha256") or {}
    for name in names:
        want = recorded.get(name)
        if want is None:
            continue
        file = path / name
        if not file.is_file():
            raise WeightsError(f"{file} is missing: the checkpoint is incomplete; retrain or restore it")
        if sha256_file(file) != want:
            raise WeightsError(f"{file} fails its checksum: the file is damaged; retrain or restore it")


def _read_tensors(file: Path) -> dict[str, Tensor]:
    """A safetensors file as {name: tensor}; WeightsError (one line) when it is missing or unreadable."""
    from safetensors.torch import load_file

    try:
        return load_file(str(file))
    except Exception as exc:  # safetensors raises its own error types (SafetensorError) for corrupt files
        raise WeightsError(f"{file}: unreadable ({' '.join(str(exc).split())}); retrain or restore it") from None


def _read_json(file: Path) -> Any:
    """A JSON file of a checkpoint; WeightsError (one line) when it is missing or unreadable."""
    try:
        return json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WeightsError(f"{file}: unreadable ({exc}); retrain or restore it") from None


def load_model_weights(model: nn.Module, directory: PathLike) -> Path:
    """Load checkpoint `directory`'s weights into `model` (built from the same config) after checking their sha256,
    strictly: every key the file should hold must be there with its shape, and nothing else (a backbone the config
    loads from its own weight file is the only part the file may lack). `eval`, `export`, `--engine torch` and
    `train --resume` all load through here. Returns the checkpoint directory used."""
    path = resolve_checkpoint_dir(directory)
    _, meta = read_checkpoint_config(path)
    verify_files(path, meta, (MODEL_FILE,))
    state = _read_tensors(path / MODEL_FILE)
    own = unwrap(model).state_dict()
    wrong = [k for k, v in state.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if wrong:
        raise WeightsError(f"{path / MODEL_FILE} does not fit the model of this config (shape of {wrong[:3]} "
                           f"differs)")
    result = unwrap(model).load_state_dict(state, strict=False)
    from_files = tuple(f"encoder.{m}." for m in ("frontend", "visual", "audio")
                       if m not in meta.get("stored_frozen", ()))
    missing = [k for k in result.missing_keys if not (from_files and k.startswith(from_files))]
    if missing or result.unexpected_keys:
        what = f"missing {missing[:3]}" if missing else f"unexpected {result.unexpected_keys[:3]}"
        raise WeightsError(f"{path / MODEL_FILE} does not fit the model of this config ({what})")
    return path


def load_checkpoint(directory: PathLike, device: Union[str, torch.device] = "cpu",
                    overrides: Optional[list[str]] = None) -> tuple[nn.Module, ModelConfig]:
    """Rebuild the model of a checkpoint directory on `device`: (model in eval mode, its ModelConfig).

    `overrides` (key=value) may point the backbone weight files elsewhere (`visual.weights=...`)."""
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
    load_model_weights(model, path)
    return model.to(device).eval(), cfg


def load_trainer_state(directory: PathLike) -> Optional[dict]:
    """The trainer state saved with a checkpoint (with "optimizer" rebuilt as a state_dict), or None; its files are
    checked against their sha256 first."""
    path = resolve_checkpoint_dir(directory)
    if not (path / STATE_FILE).is_file():
        return None
    _, meta = read_checkpoint_config(path)
    verify_files(path, meta, (STATE_FILE, OPTIMIZER_FILE))
    state = _read_json(path / STATE_FILE)
    if not isinstance(state, dict):
        raise WeightsError(f"{path / STATE_FILE}: unreadable (not a JSON object); retrain or restore it")
    if "optimizer" in state:
        tensors = _read_tensors(path / OPTIMIZER_FILE) if (path / OPTIMIZER_FILE).is_file() else {}
        state["optimizer"] = _unflatten_optimizer(tensors, state["optimizer"])
    return state
