"""Backbone weights from local files (decisions D4: nothing downloads, ever).

* Swin-V2: a timm checkpoint (`.safetensors`, `.pth`, `.bin`; bare or wrapped in `model` / `state_dict`), in the
  current timm layout or the timm 0.6 / Microsoft layout (merging at the end of a stage, `head.weight`), converted by
  timm's own `checkpoint_filter_fn`.
* R(2+1)D-18 (AVVP's spatio-temporal stream, `caeav.model.st_stream`): torchvision's Kinetics-400 file
  `r2plus1d_18-91a641e6.pth` (or any state dict in torchvision's `VideoResNet` layout); its `fc` is dropped (the stream
  ends at the pooled 512-d feature, as LLP's extraction).
* HTS-AT: the official AudioSet checkpoint (`HTSAT_AudioSet_Saved_*.ckpt`, a PyTorch Lightning file whose
  `state_dict` keys start with `sed_model.`), mapped onto the ClapAudio module names of `caeav.model.backbones.HTSAT`
  plus our front end's `bn0`. The torchlibrosa STFT/mel "parameters" are skipped: our front end computes them.

Every failure is a `WeightsError` with one line naming the file and what was expected.
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from typing import Mapping, Optional

import torch
from torch import Tensor, nn

from caeav.config import STStreamConfig, SwinV2Config
from caeav.errors import WeightsError

HTSAT_PREFIX = "sed_model."
HTSAT_EXPECTED = (
    "the official HTS-AT AudioSet checkpoint HTSAT_AudioSet_Saved_*.ckpt (HTS-Audio-Transformer release by "
    "RetroCirce; keys 'sed_model.*'), passed as audio.weights=PATH"
)
_WRAPPERS = ("state_dict", "model", "module")


def unwrap_wrappers(obj: object, wrappers: tuple = _WRAPPERS) -> object:
    """The mapping inside `obj` found by descending through `wrappers` keys (`{"state_dict": {...}}`, Lightning's and
    timm's files) while the mapping holds no tensor of its own; `obj` itself when there is nothing to descend."""
    while isinstance(obj, Mapping) and not any(isinstance(v, Tensor) for v in obj.values()):
        inner = next((obj[k] for k in wrappers if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    return obj

# ---------------------------------------------------------------------------------------------------- reading files


class _Stub:
    """Stands in for classes a checkpoint pickled but that are not installed here (e.g. Lightning callbacks)."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


class _LenientUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            return _Stub


class _LenientPickle:
    """A `pickle_module` for `torch.load` that tolerates missing classes outside the tensors."""

    Unpickler = _LenientUnpickler
    __name__ = "pickle"

    @staticmethod
    def load(file, **kwargs):
        return _LenientUnpickler(file, **kwargs).load()


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def read_state_dict(path, expected: str) -> dict[str, Tensor]:
    """Read a tensor dict from `.safetensors` or a torch file, unwrapping `state_dict` / `model` / `module`.

    Torch files load with `weights_only=True` first; a training checkpoint that also pickles other objects (Lightning's
    `.ckpt`, Microsoft's `.pth` with its config) is then read with a full unpickler that stubs unknown classes, after a
    warning — only ever for a file the user named.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such file; expected {expected}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(path))
        else:
            try:
                obj = torch.load(path, map_location="cpu", weights_only=True)
            except pickle.UnpicklingError as exc:
                if "weights only" not in str(exc).lower():
                    raise
                warnings.warn(f"{path}: not a plain weights file, reading it with the full unpickler", stacklevel=3)
                obj = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_LenientPickle)
    except WeightsError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader failure is the file's problem
        raise WeightsError(f"{path}: cannot read it ({_one_line(exc)}); expected {expected}") from None
    obj = unwrap_wrappers(obj)
    if not isinstance(obj, Mapping) or not obj:
        raise WeightsError(f"{path}: holds no state dict; expected {expected}")
    state = {k: v for k, v in obj.items() if isinstance(v, Tensor)}
    if not state:
        raise WeightsError(f"{path}: holds no tensors; expected {expected}")
    return state


def _check_fit(path, target: Mapping[str, Tensor], source: Mapping[str, Tensor], expected: str, what: str) -> None:
    """Every target tensor present with its shape, nothing extra; else one line saying what does not fit."""
    missing = [k for k in target if k not in source]
    unexpected = [k for k in source if k not in target]
    bad = [k for k in target if k in source and tuple(source[k].shape) != tuple(target[k].shape)]
    if not (missing or unexpected or bad):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    if bad:
        k = bad[0]
        parts.append(f"{len(bad)} of another shape (e.g. {k}: file {tuple(source[k].shape)}, "
                     f"model {tuple(target[k].shape)})")
    raise WeightsError(f"{path}: does not fit the {what}: {', '.join(parts)}; expected {expected}")


# ---------------------------------------------------------------------------------------------------- Swin-V2 (timm)


def swinv2_expected(cfg: Optional[SwinV2Config]) -> str:
    """What a visual checkpoint for `cfg` is, and where it comes from (for error messages)."""
    name = cfg.timm_name if cfg is not None else None
    if not name:
        return "a timm SwinTransformerV2 checkpoint matching the visual.* settings of this config"
    arch, _, tag = name.partition(".")
    data = {"ms_in22k": " ImageNet-22k", "ms_in1k": " ImageNet-1k", "ms_in22k_ft_in1k": " ImageNet-22k→1k"}.get(tag, "")
    return (f"{arch}{data} weights (timm: {name}): download model.safetensors from the timm/{name} model page on the "
            f"Hugging Face Hub and pass visual.weights=PATH")


def load_swinv2_weights(swin: nn.Module, path, cfg: Optional[SwinV2Config] = None) -> None:
    """Load a timm Swin-V2 checkpoint into `swin` (strict: every key, every shape)."""
    from timm.models.swin_transformer_v2 import checkpoint_filter_fn

    expected = swinv2_expected(cfg)
    state = read_state_dict(path, expected)
    try:
        state = checkpoint_filter_fn(state, swin)
    except Exception as exc:  # noqa: BLE001
        raise WeightsError(f"{path}: timm cannot convert it ({_one_line(exc)}); expected {expected}") from None
    target = swin.state_dict()
    file_classes, model_classes = (d["head.fc.weight"].shape[0] if "head.fc.weight" in d else 0 for d in (state, target))
    if file_classes != model_classes:
        raise WeightsError(f"{path}: its classifier has {file_classes} classes (0: none), the model {model_classes}: "
                           f"set visual.num_classes={file_classes}")
    _check_fit(path, target, state, expected, "visual backbone (SwinTransformerV2)")
    swin.load_state_dict(state, strict=True)


# ---------------------------------------------------------------------------------------------------- R(2+1)D-18

ST_DOWNLOAD = "https://download.pytorch.org/models/r2plus1d_18-91a641e6.pth"


def st_expected(cfg: Optional[STStreamConfig]) -> str:
    """What the stream's weights file is and where it comes from (for error messages)."""
    name = cfg.weights_name if cfg is not None else "r2plus1d_18-91a641e6.pth"
    if name == "r2plus1d_18-91a641e6.pth":
        return (f"torchvision's Kinetics-400 R(2+1)D-18 weights {name}: download {ST_DOWNLOAD} and pass "
                f"st.weights=PATH")
    what = name or "an R(2+1)D state dict matching the st.* widths of this config"
    return f"{what} (torchvision's VideoResNet layout), passed as st.weights=PATH"


def load_st_weights(stream: nn.Module, path, cfg: Optional[STStreamConfig] = None) -> None:
    """Load a torchvision-layout R(2+1)D checkpoint into `stream` (strict on everything but the dropped `fc.*`)."""
    expected = st_expected(cfg)
    state = {k: v for k, v in read_state_dict(path, expected).items() if not k.startswith("fc.")}
    target = stream.state_dict()
    for key, value in target.items():  # files saved before BatchNorm counted its batches
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = value
    _check_fit(path, target, state, expected, "R(2+1)D-18 stream")
    stream.load_state_dict(state, strict=True)


# ---------------------------------------------------------------------------------------------------- HTS-AT (official)

# official block-relative key → ClapAudio block-relative key (attn.qkv is split into query/key/value separately)
_BLOCK_KEYS = {
    "norm1.": "layernorm_before.",
    "attn.relative_position_bias_table": "attention.self.relative_position_bias_table",
    "attn.proj.": "attention.output.dense.",
    "norm2.": "layernorm_after.",
    "mlp.fc1.": "intermediate.dense.",
    "mlp.fc2.": "output.dense.",
}
_QKV = ("query", "key", "value")
_SKIPPED_PREFIXES = ("spectrogram_extractor.", "logmel_extractor.")  # fixed front end (decisions D6)
_SKIPPED_SUFFIXES = ("relative_position_index", "attn_mask")  # buffers rebuilt at construction
_DIRECT = ("patch_embed.", "norm.", "tscam_conv.", "head.")


def htsat_official_to_caeav(state: Mapping[str, Tensor]) -> tuple[dict, dict, list]:
    """Official HTS-AT keys → (`HTSAT` state dict, front-end `bn0` state dict, unknown keys).

    `sed_model.` prefixes are stripped; `layers.i.downsample.*` keep their names (ClapAudio's merge is also
    LN(4C) → Linear(4C→2C), same concat order); `attn.qkv` rows [0:C], [C:2C], [2C:3C] become query, key, value.
    """
    audio, bn0, unknown = {}, {}, []
    for key, value in state.items():
        key = key[len(HTSAT_PREFIX):] if key.startswith(HTSAT_PREFIX) else key
        if key.startswith(_SKIPPED_PREFIXES) or key.endswith(_SKIPPED_SUFFIXES):
            continue
        if key.startswith("bn0."):
            bn0[key[4:]] = value
        elif key.startswith(_DIRECT) or ".downsample." in key:
            audio[key] = value
        elif ".blocks." in key:
            head, rest = key.split(".blocks.", 1)
            block, rest = rest.split(".", 1)
            base = f"{head}.blocks.{block}."
            if rest.startswith("attn.qkv."):
                kind = rest[len("attn.qkv."):]
                for name, chunk in zip(_QKV, value.chunk(3, dim=0)):
                    audio[f"{base}attention.self.{name}.{kind}"] = chunk.clone()
                continue
            new = next((n + rest[len(o):] for o, n in _BLOCK_KEYS.items() if rest.startswith(o)), None)
            if new is None:
                unknown.append(key)
            else:
                audio[base + new] = value
        else:
            unknown.append(key)
    return audio, bn0, unknown


def htsat_caeav_to_official(audio: Mapping[str, Tensor], bn0: Optional[Mapping[str, Tensor]] = None,
                            prefix: str = HTSAT_PREFIX) -> dict[str, Tensor]:
    """The inverse map: an `HTSAT` (+ `bn0`) state dict in the official key layout (for round trips and tests)."""
    out = {}
    inverse = {n: o for o, n in _BLOCK_KEYS.items()}
    for key, value in audio.items():
        if key.endswith(_SKIPPED_SUFFIXES):
            continue
        if ".attention.self.query." in key:
            kind = key.rsplit(".", 1)[1]
            base = key.split(".attention.self.query.")[0]
            parts = [audio[f"{base}.attention.self.{n}.{kind}"] for n in _QKV]
            out[f"{prefix}{base}.attn.qkv.{kind}"] = torch.cat(parts, dim=0)
            continue
        if ".attention.self.key." in key or ".attention.self.value." in key:
            continue
        if ".blocks." in key:
            head, rest = key.split(".blocks.", 1)
            block, rest = rest.split(".", 1)
            rest = next((o + rest[len(n):] for n, o in inverse.items() if rest.startswith(n)), rest)
            key = f"{head}.blocks.{block}.{rest}"
        out[prefix + key] = value
    for key, value in (bn0 or {}).items():
        out[f"{prefix}bn0.{key}"] = value
    return out


def load_htsat_weights(htsat: nn.Module, path, bn0: Optional[nn.Module] = None) -> None:
    """Load the official HTS-AT checkpoint into `htsat` (strict) and, when given, its `bn0` into our front end's."""
    state = read_state_dict(path, HTSAT_EXPECTED)
    if not any(k.startswith(HTSAT_PREFIX) or k.startswith("layers.") for k in state):
        raise WeightsError(f"{path}: has no HTS-AT keys ('{HTSAT_PREFIX}layers.*'); expected {HTSAT_EXPECTED}")
    audio, bn0_state, unknown = htsat_official_to_caeav(state)
    if unknown:
        raise WeightsError(f"{path}: {len(unknown)} keys HTS-AT does not have (e.g. {unknown[0]}); "
                           f"expected {HTSAT_EXPECTED}")
    target = {k: v for k, v in htsat.state_dict().items() if not k.endswith(_SKIPPED_SUFFIXES)}
    _check_fit(path, target, audio, HTSAT_EXPECTED, "audio backbone (HTS-AT)")
    if bn0 is not None:
        bn0_target = bn0.state_dict()
        if "num_batches_tracked" in bn0_target and "num_batches_tracked" not in bn0_state:
            bn0_state["num_batches_tracked"] = bn0_target["num_batches_tracked"]
        _check_fit(path, bn0_target, bn0_state, HTSAT_EXPECTED, "front end's bn0")
    missing, unexpected = htsat.load_state_dict(audio, strict=False)
    assert not unexpected and all(k.endswith(_SKIPPED_SUFFIXES) for k in missing), (missing, unexpected)
    if bn0 is not None:
        bn0.load_state_dict(bn0_state, strict=True)


def load_backbone_weights(encoder: nn.Module, visual=None, audio=None) -> None:
    """Load both backbones of a `CAEAVEncoder` from the files named here or in its config."""
    encoder.load_backbone_weights(visual=visual, audio=audio)
