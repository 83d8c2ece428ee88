"""The frozen caption text encoder E_clip (P §III-C, after Eq. 14): CLIP text transformer through open_clip.

E_clip maps each caption of Eq. 14 to a token sequence S_ori `[N, 77, D]`: the last hidden states of every position
after `ln_final`, with the causal mask CLIP was trained with, no padding mask and no text projection (decisions D4,
architecture.md §5; the authors' features are 768-d, i.e. CLIP ViT-L/14's text tower). Padding positions are kept and
attended downstream, as in the authors' code.

* `tower="open_clip"`: the text part of open_clip's `cfg.open_clip_name` (`ViT-L-14`) model config, built on its own
  (no vision tower, no download), QuickGELU as in OpenAI's weights, loaded from the local file `cfg.weights`.
  Accepted files: OpenAI's TorchScript `ViT-L-14.pt`, open_clip state dicts (`open_clip_pytorch_model.bin`,
  `.safetensors`, full CLIP or text-only) and Hugging Face `openai/clip-vit-large-patch14` weights (converted by
  `convert_hf_text_state_dict`).
* `tower="tiny"`: a small random text transformer of the same class (`cfg.tower_width/layers/heads`), for tests.

The tower is frozen: no parameter requires grad and it stays in eval mode whatever `train()` is called with (D3).
open_clip is imported lazily so that importing `caeav.model` stays light.
"""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path
from typing import Optional, Sequence, Union

import torch
from torch import Tensor, nn

from caeav.config import CaptionConfig, ConfigError
from caeav.errors import WeightsError

DOWNLOAD_HINT = (
    "download the OpenAI CLIP ViT-L/14 weights (open_clip `ViT-L-14` `openai`: ViT-L-14.pt, or Hugging Face "
    "timm/vit_large_patch14_clip_224.openai open_clip_pytorch_model.bin, or openai/clip-vit-large-patch14 "
    "model.safetensors) and set caption.weights=PATH"
)
TEXT_KEYS = ("token_embedding.", "positional_embedding", "transformer.", "ln_final.")


class TextTower(nn.Module):
    """Frozen open_clip `TextTransformer`: forward(token_ids `[N, 77]` long) → `[N, 77, D]` token features."""

    def __init__(self, text: nn.Module):
        super().__init__()
        self.text = text
        self.context_length = text.context_length
        self.width = text.width
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "TextTower":
        return super().train(False)  # frozen means frozen (D3)

    def forward(self, token_ids: Tensor) -> Tensor:
        return self.text(token_ids)[1]  # (pooled, tokens); pool_type "none" makes the pooled output free


def _tower_shape(cfg: CaptionConfig) -> dict:
    if cfg.tower == "tiny":
        return dict(context_length=cfg.context_length, vocab_size=cfg.vocab_size, width=cfg.tower_width,
                    heads=cfg.tower_heads, layers=cfg.tower_layers, mlp_ratio=4.0)
    if cfg.tower != "open_clip":
        raise ConfigError(f"caption.tower must be 'open_clip' or 'tiny', got {cfg.tower!r}")
    import open_clip

    model_cfg = open_clip.get_model_config(cfg.open_clip_name)
    if model_cfg is None:
        raise ConfigError(f"caption.open_clip_name {cfg.open_clip_name!r} is not an open_clip model config")
    text_cfg = model_cfg["text_cfg"]
    if text_cfg.get("hf_model_name") or text_cfg.get("embed_cls") or text_cfg.get("no_causal_mask"):
        raise ConfigError(f"caption.open_clip_name {cfg.open_clip_name!r} is not a plain CLIP text transformer")
    return dict(context_length=text_cfg.get("context_length", 77), vocab_size=text_cfg.get("vocab_size", 49408),
                width=text_cfg["width"], heads=text_cfg["heads"], layers=text_cfg["layers"],
                mlp_ratio=text_cfg.get("mlp_ratio", 4.0))


def build_text_tower(cfg: CaptionConfig, load_weights: bool = True) -> TextTower:
    """Build the frozen caption text tower of `cfg` (random init), then load `cfg.weights` for the open_clip tower.

    `load_weights=False` skips the file (parameter counts on the meta device, shape checks). The tiny tower never loads.
    """
    from open_clip.transformer import QuickGELU, TextTransformer

    shape = _tower_shape(cfg)
    if shape["width"] != cfg.text_dim:
        raise ConfigError(f"caption tower width {shape['width']} != caption.text_dim {cfg.text_dim}")
    if shape["context_length"] != cfg.context_length:
        raise ConfigError(f"caption tower context {shape['context_length']} != caption.context_length "
                          f"{cfg.context_length}")
    text = TextTransformer(**shape, output_dim=None, proj_type="none", pool_type="none", output_tokens=True,
                           act_layer=QuickGELU)
    tower = TextTower(text)
    if cfg.tower == "open_clip" and load_weights:
        load_text_weights(tower, cfg.weights)
    return tower


def load_text_weights(tower: TextTower, path: Optional[str]) -> None:
    """Load a local CLIP checkpoint's text tower into `tower`; every problem is one-line `WeightsError`."""
    if not path:
        raise WeightsError(f"caption.weights is not set: {DOWNLOAD_HINT}")
    if not Path(path).is_file():
        raise WeightsError(f"caption text-tower weights not found: {path}; {DOWNLOAD_HINT}")
    state = text_state_dict(_read_state_dict(Path(path)))
    try:
        result = tower.text.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatch
        first = str(err).strip().splitlines()[-1].strip()
        raise WeightsError(f"{path} does not fit the {tower.width}-wide caption text tower: {first}") from None
    if result.missing_keys or result.unexpected_keys:
        bad = (result.missing_keys + result.unexpected_keys)[:3]
        raise WeightsError(f"{path} is not a CLIP text tower checkpoint (e.g. missing/unexpected {bad}); "
                           f"{DOWNLOAD_HINT}")


def _read_state_dict(path: Path) -> dict:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        if zipfile.is_zipfile(path) and any(n.endswith("constants.pkl") for n in zipfile.ZipFile(path).namelist()):
            with warnings.catch_warnings():  # torch.jit is deprecated, but OpenAI ships its weights as TorchScript
                warnings.simplefilter("ignore", FutureWarning)
                return torch.jit.load(str(path), map_location="cpu").state_dict()
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unreadable, truncated, or not a checkpoint at all
        raise WeightsError(f"cannot read caption weights {path}: {type(err).__name__}: {err}".splitlines()[0]) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsError(f"caption weights {path} hold a {type(state).__name__}, not a state dict")
    return state


def text_state_dict(state: dict) -> dict:
    """Keep the text-tower tensors of a CLIP checkpoint, named as in open_clip's `TextTransformer`.

    Handles `module.` prefixes, open_clip's custom-text layout (`text.*`), OpenAI/open_clip CLIP (`token_embedding`,
    `transformer.resblocks.*`, ...; the vision tower's keys start with `visual.` and are dropped, as is
    `text_projection`) and Hugging Face CLIP (`text_model.*`, or bare `embeddings.*`/`encoder.*`).
    """
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    if any(k.startswith(("text_model.", "embeddings.token_embedding.")) for k in state):
        return convert_hf_text_state_dict(state)
    state = {k[len("text."):] if k.startswith("text.") else k: v for k, v in state.items()}
    return {k: v for k, v in state.items() if k.startswith(TEXT_KEYS)}


def convert_hf_text_state_dict(state: dict) -> dict:
    """Hugging Face `CLIPModel`/`CLIPTextModel` text weights → open_clip `TextTransformer` names (q/k/v fused).

    Keys carry a `text_model.` prefix in `CLIPModel` files (the hub's `openai/clip-vit-large-patch14`) and none in a
    transformers-5 `CLIPTextModel` state dict; both are accepted.
    """
    hf = "text_model." if any(k.startswith("text_model.") for k in state) else ""
    try:
        out = {
            "token_embedding.weight": state[hf + "embeddings.token_embedding.weight"],
            "positional_embedding": state[hf + "embeddings.position_embedding.weight"],
            "ln_final.weight": state[hf + "final_layer_norm.weight"],
            "ln_final.bias": state[hf + "final_layer_norm.bias"],
        }
        i = 0
        while f"{hf}encoder.layers.{i}.layer_norm1.weight" in state:
            src, dst = f"{hf}encoder.layers.{i}.", f"transformer.resblocks.{i}."
            for kind in ("weight", "bias"):
                out[f"{dst}attn.in_proj_{kind}"] = torch.cat(
                    [state[f"{src}self_attn.{p}_proj.{kind}"] for p in ("q", "k", "v")], dim=0)
                for a, b in (("ln_1", "layer_norm1"), ("ln_2", "layer_norm2"), ("attn.out_proj", "self_attn.out_proj"),
                             ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2")):
                    out[f"{dst}{a}.{kind}"] = state[f"{src}{b}.{kind}"]
            i += 1
    except KeyError as err:
        raise WeightsError(f"Hugging Face CLIP checkpoint lacks {err.args[0]}; {DOWNLOAD_HINT}") from None
    return out


def tokenize(texts: Union[str, Sequence[str]], context_length: int = 77) -> Tensor:
    """CLIP BPE tokens `[N, context_length]` long (open_clip's SimpleTokenizer, bundled vocabulary, offline).

    Lower-cased and cleaned as CLIP does; start/end tokens added; truncated (end token kept) or zero-padded.
    """
    import open_clip

    return open_clip.tokenize([texts] if isinstance(texts, str) else list(texts), context_length=context_length)


@torch.no_grad()
def encode_texts(tower: TextTower, texts: Union[str, Sequence[str]]) -> Tensor:
    """Tokenize and encode captions: `[N, context_length, D]` on the tower's device."""
    device = next(tower.parameters()).device
    return tower(tokenize(texts, tower.context_length).to(device))
