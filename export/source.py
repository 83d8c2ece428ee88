"""Where the exported weights come from: a caeav checkpoint directory (decisions D9) or seeded random weights.

A bundle's manifest records its source (`{"kind": "checkpoint", "path": "checkpoint", "sha256"}` — the path is the
bundle's own copy of the weights, relative to the bundle, so a bundle works wherever it is copied — or
`{"kind": "random", "preset", "task", "seed", "overrides"}`) so `caeav parity` can rebuild the same PyTorch model.

Random weights for export tests: a fresh init leaves LayerNorms at identity and several gates, up-projections and
biases at exactly zero. With identity LayerNorms every token of CASE's v̄ has the same saliency ‖v̄_i‖² = C, so the
top-K selection is decided by rounding noise, and zero up-projections switch whole paths off. `activate_all_paths`
gives every LayerNorm a random affine map and every all-zero (or all-equal) parameter small random values, so that
parity exercises the real paths and its predictions are not coin flips.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from torch import nn

RANDOM_SEED = 0


@torch.no_grad()
def activate_all_paths(model: nn.Module, seed: int = RANDOM_SEED) -> nn.Module:
    """Randomise LayerNorm affine parameters and every constant-valued parameter of `model` (module doc), in place."""
    gen = torch.Generator().manual_seed(seed)

    def randn(p):
        return torch.randn(p.shape, generator=gen, dtype=torch.float32).to(p.dtype)

    norms = set()
    for module in model.modules():
        if isinstance(module, nn.LayerNorm) and module.elementwise_affine:
            module.weight.copy_(1.0 + 0.2 * randn(module.weight))
            if module.bias is not None:
                module.bias.copy_(0.1 * randn(module.bias))
            norms.update((id(module.weight), id(module.bias)))
    for name, p in model.named_parameters():
        if id(p) in norms or p.numel() < 2 or name.endswith("tau"):
            continue
        if bool((p == p.flatten()[0]).all()):
            p.copy_(p + 0.05 * randn(p))
    return model


def random_model(cfg, seed: int = RANDOM_SEED, load_weights: bool = False) -> nn.Module:
    """CAE-AV for `cfg` with seeded random weights and every path active (eval mode)."""
    from caeav.model.cae_av import build_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(cfg, device="cpu", load_weights=load_weights)
    return activate_all_paths(model, seed).eval()


def text_tower(cfg, load_weights: bool = True) -> nn.Module:
    """The caption text tower of `cfg.caption`: the seeded `tiny` tower the caption cache uses, or CLIP ViT-L/14 from
    `caption.weights` (random, seeded, when `load_weights` is False)."""
    if cfg.caption.tower == "tiny" or load_weights:
        from caeav.captions.encode import build_encoder

        tower, _ = build_encoder(cfg.caption)
        return tower.eval()
    from caeav.captions.encode import TINY_SEED
    from caeav.model.text_tower import build_text_tower

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        return build_text_tower(cfg.caption, load_weights=False).eval()


def text_encoder_id(tower: nn.Module, cfg) -> str:
    """The id the caption cache stores with its features (`caeav.captions.encode.encoder_id`)."""
    from caeav.captions.encode import encoder_id

    return encoder_id(tower, cfg.caption)


def checkpoint_model(directory) -> tuple[nn.Module, object]:
    """(model in eval mode, ModelConfig) of a caeav checkpoint directory (`caeav.model.checkpoint`)."""
    from caeav.model.checkpoint import load_checkpoint

    return load_checkpoint(directory, device="cpu")


BUNDLE_CHECKPOINT = "checkpoint"  # the bundle's own copy of the weights it was exported from (relative path)
CHECKPOINT_FILES = ("model.safetensors", "config.json")  # what inference needs; no optimizer or trainer state


def checkpoint_source(directory, embedded: bool = True) -> dict:
    """The manifest `source` of a bundle exported from checkpoint `directory`: never a path of the export machine.
    With `embedded` the bundle carries the weights in `checkpoint/` (`embed_checkpoint`) and the source names that
    folder relative to the bundle; without, only the sha256 of the weights (pass `--checkpoint` to `caeav parity`)."""
    from caeav.export.manifest import sha256_file
    from caeav.model.checkpoint import MODEL_FILE, resolve_checkpoint_dir

    path = resolve_checkpoint_dir(directory)
    source = {"kind": "checkpoint", "sha256": sha256_file(path / MODEL_FILE)}
    if embedded:
        source["path"] = BUNDLE_CHECKPOINT
    return source


def embed_checkpoint(directory, bundle_dir) -> dict:
    """Copy the inference files of checkpoint `directory` into `bundle_dir/checkpoint/`; returns their manifest
    `files` entries ({rel: {file, sha256, bytes}}), so `verify_bundle` checks them like the graphs."""
    import shutil

    from caeav.export.manifest import sha256_file
    from caeav.model.checkpoint import resolve_checkpoint_dir

    src, dest = resolve_checkpoint_dir(directory), Path(bundle_dir) / BUNDLE_CHECKPOINT
    dest.mkdir(parents=True, exist_ok=True)
    entries = {}
    for name in CHECKPOINT_FILES:
        shutil.copyfile(src / name, dest / name)
        rel = f"{BUNDLE_CHECKPOINT}/{name}"
        entries[rel] = {"file": rel, "sha256": sha256_file(dest / name), "bytes": (dest / name).stat().st_size}
    return entries


def random_source(cfg, seed: int, overrides: Optional[list] = None) -> dict:
    return {"kind": "random", "preset": cfg.preset, "task": cfg.task.name, "seed": int(seed),
            "overrides": list(overrides or [])}


def _source_checkpoint(bundle, source: dict, checkpoint=None) -> Path:
    """The checkpoint directory holding the weights of `source`: `checkpoint` if given (its weights must be the
    exported ones), else the bundle's own copy, else a legacy absolute path if it still exists here."""
    from caeav.errors import BundleError
    from caeav.export.manifest import sha256_file
    from caeav.model.checkpoint import MODEL_FILE, resolve_checkpoint_dir

    want = source.get("sha256")
    if checkpoint is not None:
        path = resolve_checkpoint_dir(checkpoint)
        if want and sha256_file(path / MODEL_FILE) != want:
            raise BundleError(f"--checkpoint {checkpoint}: its weights are not the ones this bundle was exported from "
                              f"(sha256 of {MODEL_FILE} differs)")
        return path
    candidates = []
    if bundle is not None:
        rel = source.get("path") if source.get("path") and not Path(source["path"]).is_absolute() else None
        candidates.append(Path(bundle) / (rel or BUNDLE_CHECKPOINT))
    if source.get("path") and Path(source["path"]).is_absolute():  # bundles of format 1 before relocation
        candidates.append(Path(source["path"]))
    for path in candidates:
        if (path / MODEL_FILE).is_file() and (not want or sha256_file(path / MODEL_FILE) == want):
            return path
    where = f"{bundle}/{BUNDLE_CHECKPOINT}" if bundle is not None else "the bundle"
    raise BundleError(f"{where}: the weights this bundle was exported from are not in it (exported with "
                      "--no-checkpoint, or removed); pass --checkpoint DIR with that caeav checkpoint")


def rebuild(source: dict, config: Optional[dict] = None, bundle=None, checkpoint=None) -> tuple[nn.Module, object]:
    """The PyTorch model a manifest's `source` describes: (model, ModelConfig). `bundle`: the bundle directory
    (relative checkpoint paths are resolved against it); `checkpoint`: a checkpoint directory given by the user."""
    from caeav.config import ModelConfig
    from caeav.errors import BundleError

    if source.get("kind") == "checkpoint":
        return checkpoint_model(_source_checkpoint(bundle, source, checkpoint))
    if source.get("kind") == "random":
        if checkpoint is not None:
            return checkpoint_model(checkpoint)
        cfg = ModelConfig.from_dict(config)
        return random_model(cfg, int(source["seed"])), cfg
    raise BundleError(f"unknown bundle source {source!r}")
