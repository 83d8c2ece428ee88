"""Where the exported weights come from: a caeav checkpoint directory (decisions D9) or seeded random weights.

A bundle's manifest records its source (`{"kind": "checkpoint", "path", "sha256"}` or
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


def checkpoint_source(directory) -> dict:
    from caeav.export.manifest import sha256_file
    from caeav.model.checkpoint import MODEL_FILE, resolve_checkpoint_dir

    path = resolve_checkpoint_dir(directory).resolve()
    return {"kind": "checkpoint", "path": str(path), "sha256": sha256_file(path / MODEL_FILE)}


def random_source(cfg, seed: int, overrides: Optional[list] = None) -> dict:
    return {"kind": "random", "preset": cfg.preset, "task": cfg.task.name, "seed": int(seed),
            "overrides": list(overrides or [])}


def rebuild(source: dict, config: Optional[dict] = None) -> tuple[nn.Module, object]:
    """The PyTorch model a manifest's `source` describes: (model, ModelConfig)."""
    from caeav.config import ModelConfig
    from caeav.errors import BundleError

    if source.get("kind") == "checkpoint":
        if not Path(source["path"]).is_dir():
            raise BundleError(f"the bundle was exported from checkpoint {source['path']}, which is gone")
        return checkpoint_model(source["path"])
    if source.get("kind") == "random":
        cfg = ModelConfig.from_dict(config)
        return random_model(cfg, int(source["seed"])), cfg
    raise BundleError(f"unknown bundle source {source!r}")
