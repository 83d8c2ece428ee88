"""Configuration as data (decisions D5).

A model configuration is a *preset* (`tiny`, `base`, `paper`: backbone sizes and module widths) combined with a
*task* (`ave`, `avvp`, `avqa`, `avs_s4`, `avs_ms3`: AVMoE settings of architecture.md §3.3, losses and schedules of
§8). Both are JSON files under `caeav/configs/`; this module only defines their schema and merges them. It imports no
torch, so the runtime can read configs too.

`key=value` overrides address any field by dotted path, e.g. `task.avmoe.num_cma=2` or `caste.topk_ratio=0.25`.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Optional

from caeav.errors import CaeavError

PRESETS = ("tiny", "base", "paper")
TASKS = ("ave", "avvp", "avqa", "avs_s4", "avs_ms3")
TASK_ALIASES = {"avs": "avs_s4", "s4": "avs_s4", "ms3": "avs_ms3"}
# cae_av: the paper's model. avmoe: the baseline it improves on (yingchengy/AVMOE) = the same backbones, adapters and
# heads without CASTE, the caption projector and CASE (the official state dicts differ by exactly those modules).
VARIANTS = ("cae_av", "avmoe")


class ConfigError(CaeavError, ValueError):
    """A preset, task or override that does not exist or does not parse."""


@dataclass
class SwinV2Config:
    """Visual backbone: a timm SwinTransformerV2 (frozen)."""

    img_size: int = 192
    patch_size: int = 4
    embed_dim: int = 192
    depths: tuple = (2, 2, 18, 2)
    num_heads: tuple = (6, 12, 24, 48)
    window_size: int = 12
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.1
    num_classes: int = 21841  # the ImageNet-22k head is kept (unused) so the published checkpoint loads strictly
    timm_name: Optional[str] = "swinv2_large_window12_192.ms_in22k"
    weights: Optional[str] = None  # local checkpoint file (.safetensors / .pth / .bin); None = random init


@dataclass
class HTSATConfig:
    """Audio backbone: HTS-AT, built as the transformers ClapAudio encoder stack (frozen)."""

    spec_size: int = 256
    patch_size: int = 4
    patch_stride: int = 4
    embed_dim: int = 96
    depths: tuple = (2, 2, 6, 2)
    num_heads: tuple = (4, 8, 16, 32)
    window_size: int = 8
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.1
    num_classes: int = 527
    weights: Optional[str] = None  # official HTSAT_AudioSet_Saved_*.ckpt; None = random init


@dataclass
class FrontEndConfig:
    """Log-mel front end inside the graph (decisions D6)."""

    sample_rate: int = 32000
    n_fft: int = 1024
    hop_length: int = 320
    n_mels: int = 64
    fmin: float = 50.0
    fmax: float = 14000.0
    freq_ratio: int = 4  # 1024 interpolated frames folded into 4 chunks stacked along frequency
    amin: float = 1e-10


@dataclass
class CASTEConfig:
    """Cross-modal agreement-gated spatio-temporal enrichment (architecture.md §4)."""

    gate_dim: int = 128
    gate_hidden: int = 64
    topk_ratio: float = 0.3
    temporal_kernel: int = 3
    init_std: float = 1e-3  # spatial-enrichment linears ~ N(0, init_std²)


@dataclass
class CaptionConfig:
    """Caption text tower and caption projector (architecture.md §5)."""

    text_dim: int = 768
    context_length: int = 77
    mapper_heads: int = 8
    dropout: float = 0.2
    bottleneck_dim: int = 48
    # text tower: "open_clip" (ViT-L-14 from a local file) or "tiny" (small random open_clip text transformer)
    tower: str = "open_clip"
    open_clip_name: str = "ViT-L-14"
    tower_width: int = 768
    tower_layers: int = 12
    tower_heads: int = 12
    vocab_size: int = 49408
    weights: Optional[str] = None


@dataclass
class CASEConfig:
    """Caption-aware selective enrichment (architecture.md §6)."""

    proj_dim: int = 512
    heads: int = 8
    topk_ratio: float = 0.3
    attn_dropout: float = 0.1
    dropout: float = 0.2
    tau_init: float = 0.2
    gumbel_tau_init: float = 1.0


@dataclass
class AVMoEConfig:
    """AVMoE adapter settings (architecture.md §3.3)."""

    num_cma: int = 1
    num_ua: int = 1
    reduction: int = 8
    groups: int = 2
    num_latent_tokens: int = 32
    use_bn: bool = True
    audio_gate: bool = True
    pre_ln: bool = True
    post_ln: bool = True
    ua_attention: str = "none"  # none | paramfree (AVVP) | mhsa (AVS v1) | latent (AVS v2)
    # mhsa only: "tokens" attends over the L tokens of each frame (caeav, decisions D2); "batch" reproduces the
    # authors' sequence-first call on [BT, L, C], which attends over the BT frames of the batch per token
    ua_mhsa_axis: str = "tokens"
    skip_num: int = 2  # stages whose (index+1) % skip_num == 0 get no adapters; <=1 = none skipped
    router_hidden: tuple = (128, 32)
    router_noise_std: float = 0.0
    # weight on E·KL(U || mean router probs), summed over MoE modules (0 = off): the authors' weight as their scripts
    # set it (AVVP 1, AVS-MS3 0.01), their per-call loss having the same gradient (`caeav.model.avmoe.load_balancing_loss`)
    lb_weight: float = 0.0


@dataclass
class LossConfig:
    """CAE-AV auxiliary losses (Eq. 22-25, architecture.md §8.1, decisions D7)."""

    alpha: float = 0.10
    beta: float = 0.05
    gamma: float = 0.003
    gamma_zero_epochs: int = 5
    gamma_ramp_epochs: int = 5
    entropy_sign: str = "literal"  # literal Eq. 24 (L_ent = -H) | sharpen (L_ent = +H)
    tau_min: float = 0.01


@dataclass
class TrainConfig:
    """Optimisation recipe (architecture.md §8.2)."""

    lr: float = 5e-4
    step_size: int = 3
    step_gamma: float = 0.35
    batch_size: int = 2
    accum_steps: int = 8
    epochs: int = 50
    early_stop: int = 20
    grad_clip: float = 0.0
    seed: int = 999
    precision: str = "auto"  # auto (bf16 autocast on GPUs that support it, else fp16; fp32 on CPU) | fp32 | bf16 | fp16
    checkpoint_every: int = 0  # also refresh last/ every N optimiser steps inside an epoch (0 = once per epoch)
    # caeav's additions, off by default (the paper's recipe): `caeav.train.augment`
    caption_dropout: float = 0.0  # per clip and modality: P(caption features -> the empty caption's)
    av_shuffle: float = 0.0  # per clip: P(its audio is swapped with another clip's of the batch)


@dataclass
class TaskConfig:
    name: str = "ave"
    segments: int = 10  # T
    audio_tile_seconds: int = 10  # each 1-s segment is tiled to this many seconds before the STFT
    input_size: int = 192  # frames as the loader delivers them; resized to visual.img_size inside the model if different
    num_classes: int = 29
    avmoe: AVMoEConfig = field(default_factory=AVMoEConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    head: dict = field(default_factory=dict)
    # the authors' AVVP model discards each HTS-AT block's output (architecture.md §2.5); decisions D2 runs the blocks
    authors_audio_bypass: bool = False


@dataclass
class STStreamConfig:
    """AVVP's spatio-temporal stream: a frozen R(2+1)D-18-family network over each 1-s segment
    (`caeav.model.st_stream`; frame sampling in `caeav.media.st_frames`). Defaults: LLP's feats/r2plus1d_18."""

    channels: tuple = (64, 128, 256, 512)  # widths of layer1..4; the feature is channels[-1] wide
    depths: tuple = (2, 2, 2, 2)  # BasicBlocks per layer
    stem_mid: int = 45  # channels between the stem's spatial and temporal convolutions
    frames: int = 8  # frames per 1-s segment
    fps: float = 8.0  # frame rate of the grid the frames are picked from (LLP: ffmpeg -r 8)
    size: int = 112  # square resize, no crop (LLP: Resize((112, 112)))
    mean: tuple = (0.43216, 0.394666, 0.37645)  # Kinetics-400
    std: tuple = (0.22803, 0.22145, 0.216989)
    weights: Optional[str] = None  # local weights file (torchvision layout); None = random init from `seed`
    weights_name: Optional[str] = "r2plus1d_18-91a641e6.pth"  # the published weights it needs; None: random is fine
    seed: int = 0


@dataclass
class ModelConfig:
    preset: str = "paper"
    variant: str = "cae_av"  # one of VARIANTS
    visual: SwinV2Config = field(default_factory=SwinV2Config)
    audio: HTSATConfig = field(default_factory=HTSATConfig)
    frontend: FrontEndConfig = field(default_factory=FrontEndConfig)
    caste: CASTEConfig = field(default_factory=CASTEConfig)
    caption: CaptionConfig = field(default_factory=CaptionConfig)
    case: CASEConfig = field(default_factory=CASEConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    st: STStreamConfig = field(default_factory=STStreamConfig)

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ConfigError(f"variant: {self.variant!r} is not one of {', '.join(VARIANTS)}")

    @property
    def uses_captions(self) -> bool:
        """Whether the model has a caption branch (CAE-AV) or ignores captions (the AVMoE baseline)."""
        return self.variant == "cae_av"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        return _build(cls, data, "")


def _build(cls, data: dict, where: str):
    """Build dataclass `cls` from a (possibly partial) dict, rejecting unknown keys."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected an object, got {type(data).__name__}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"{where or 'config'}: unknown field(s) {', '.join(unknown)}")
    kwargs = {}
    hints = typing.get_type_hints(cls)
    for name, value in data.items():
        default = getattr(cls(), name)
        path = f"{where}.{name}" if where else name
        if dataclasses.is_dataclass(default):
            kwargs[name] = _build(type(default), value, path)
            continue
        _check_type(path, value, hints[name])
        kwargs[name] = tuple(value) if isinstance(default, tuple) and isinstance(value, list) else value
    return cls(**kwargs)


_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false", tuple: "a list",
               dict: "an object"}


def _fits(value: Any, kind: type) -> bool:
    """Whether a JSON value fits a field annotated `kind` (an int is a float; a bool is not an int)."""
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is tuple:
        return isinstance(value, (list, tuple))
    return isinstance(value, kind)


def _check_type(path: str, value: Any, hint: Any) -> None:
    """ConfigError naming the key, the value and the expected type when `value` does not fit annotation `hint`
    (`int`, `float`, `str`, `bool`, `tuple`, `dict` or `Optional[...]` of one)."""
    union = typing.get_origin(hint) is typing.Union
    kinds = [k for k in typing.get_args(hint) if k is not type(None)] if union else [hint]
    optional = union and type(None) in typing.get_args(hint)
    if (value is None and optional) or any(_fits(value, k) for k in kinds):
        return
    want = " or ".join(_TYPE_NAMES.get(k, getattr(k, "__name__", str(k))) for k in kinds)
    raise ConfigError(f"{path}: expected {want}{' or null' if optional else ''}, got {json.dumps(value)}")


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "head":
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _read_json(kind: str, name: str) -> dict:
    path = resources.files("caeav") / "configs" / kind / f"{name}.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"no {kind[:-1]} named {name!r}") from None


def canonical_task(task: str) -> str:
    task = TASK_ALIASES.get(task, task)
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; choose one of {', '.join(TASKS)} (or avs = avs_s4)")
    return task


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `dotted.key=value` strings (values parsed as JSON where possible) to a config dict."""
    data = json.loads(json.dumps(data))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value")
        key, value = item.split("=", 1)
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"override {key!r}: no section {part!r}")
            node = node[part]
        if parts[-1] not in node:
            raise ConfigError(f"override {key!r}: no field {parts[-1]!r}")
        parsed = _parse_value(value)
        if isinstance(node[parts[-1]], str) and parsed is not None and not isinstance(parsed, str):
            parsed = value  # a string field takes the text as written (caption.model=1234)
        node[parts[-1]] = parsed
    return data


def load_config(preset: str = "tiny", task: str = "ave", overrides: Optional[list[str]] = None) -> ModelConfig:
    """Resolve `preset` + `task` (+ overrides) into a ModelConfig.

    Task files hold the task's defaults; a preset may adjust any task field under `"tasks": {task: {...}}`
    (e.g. `tiny` shortens training).
    """
    if preset not in PRESETS:
        raise ConfigError(f"unknown config {preset!r}; choose one of {', '.join(PRESETS)}")
    task = canonical_task(task)
    preset_data = _read_json("presets", preset)
    task_data = _merge(_read_json("tasks", task), preset_data.pop("tasks", {}).get(task, {}))
    data = _merge(preset_data, {"preset": preset, "task": task_data})
    data = ModelConfig.from_dict(data).to_dict()  # validate before overrides so their errors name real fields
    if overrides:
        data = apply_overrides(data, overrides)
    return ModelConfig.from_dict(data)
