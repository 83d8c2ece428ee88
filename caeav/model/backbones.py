"""The two frozen backbones and the per-block steps of the lock-step walk (architecture.md §2.1-2.4, decisions D4).

* Visual: timm's `SwinTransformerV2` built from `SwinV2Config` (current timm layout: NHWC tensors, the patch merging
  *opens* stage s as `layers[s].downsample`, Identity for stage 0). Residual post-norm blocks:
  x ← x + DropPath(LN1(WindowAttn(x))); x ← x + DropPath(LN2(MLP(x))).
* Audio: HTS-AT, assembled from the transformers ClapAudio encoder stack (`patch_embed` and `layers` of
  `ClapAudioEncoder`: Swin-V1 pre-norm blocks, merging LN(4C) → Linear(4C→2C) at the *end* of each stage). Its own
  mel front end, `batch_norm` and fusion are not used: our front end (`caeav.model.frontend`) makes the 256×256 image.
  HTS-AT's final `norm`, `tscam_conv` and `head` are kept (unused in the forward pass) so the official checkpoint
  loads whole and parameter counts match the paper's table (architecture.md §10).

ClapAudio blocks serve the walk with one repair: where a stage's grid is smaller than the window, HTS-AT builds the
window attention for the clamped window, while ClapAudio keeps the configured one and clamps only at run time (its
position-bias table then has the wrong size). `build_audio_backbone` clamps once at build time and rebuilds those
attention modules; with the paper's sizes (last grid 8 = window 8) nothing is rebuilt.

The walk sees both streams as tokens `[BT, L, C]` (row-major over the H×W grid); the functions below hide the layout
differences. `BT` is always `-1` in reshapes (export with dynamic batch).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from caeav.config import ConfigError, HTSATConfig, SwinV2Config


@dataclass(frozen=True)
class StageShape:
    """One backbone stage as the walk sees it: grid (H, W), channels C, tokens L = H·W."""

    height: int
    width: int
    dim: int

    @property
    def tokens(self) -> int:
        return self.height * self.width

    @property
    def hw(self) -> tuple[int, int]:
        return (self.height, self.width)


# ---------------------------------------------------------------------------------------------------- visual (SwinV2)


def build_visual_backbone(cfg: SwinV2Config):
    """timm `SwinTransformerV2` for `cfg` (random weights; `caeav.model.weights` loads a checkpoint).

    Random LayerNorms get generic affine parameters (`randomize_layer_norms`); a loaded checkpoint overwrites them.
    """
    from timm.models.swin_transformer_v2 import SwinTransformerV2

    if len(cfg.depths) != len(cfg.num_heads):
        raise ConfigError(f"visual.depths {cfg.depths} and visual.num_heads {cfg.num_heads} differ in length")
    swin = SwinTransformerV2(
        img_size=cfg.img_size,
        patch_size=cfg.patch_size,
        embed_dim=cfg.embed_dim,
        depths=tuple(cfg.depths),
        num_heads=tuple(cfg.num_heads),
        window_size=cfg.window_size,
        mlp_ratio=cfg.mlp_ratio,
        drop_path_rate=cfg.drop_path_rate,
        num_classes=cfg.num_classes,
    )
    randomize_layer_norms(swin)
    return swin


def randomize_layer_norms(module: nn.Module, gain_std: float = 0.1, bias_std: float = 0.02) -> None:
    """LayerNorm gains 1 + N(0, gain_std²), biases N(0, bias_std²), for backbones without a checkpoint.

    Two degenerate cases of the libraries' inits matter to CAE-AV: timm zero-initialises SwinV2's post-norm gains
    (every block starts as an identity), and unit gains with zero biases give every LN-output token the same ‖x‖² = C,
    so CASTE's top-K saliency on a stage's first block (fed by patch embedding / merge LNs) would be decided by
    rounding noise — flaky export parity on the random `tiny` preset. Real weights have neither problem.
    """
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.LayerNorm) and m.elementwise_affine:
                m.weight.normal_(1.0, gain_std)
                m.bias.normal_(0.0, bias_std)


def visual_stage_shapes(swin) -> list[StageShape]:
    """Grid and width of every Swin stage (after that stage's opening merge)."""
    shapes = []
    for stage in swin.layers:
        height, width = stage.output_resolution
        shapes.append(StageShape(int(height), int(width), int(stage.blocks[0].dim)))
    return shapes


def swin_patch_embed(swin, frames: Tensor) -> Tensor:
    """`[BT, 3, H, W]` → `[BT, L_0, C_0]` (conv 4×4/4 + LN)."""
    x = swin.patch_embed(frames)  # NHWC
    return x.flatten(1, 2)


def swin_merge(stage, x: Tensor, hw: tuple[int, int]) -> Tensor:
    """The merge that opens `stage` (2×2 concat → Linear(4C→2C) → LN): `[BT, H·W, C]` → `[BT, H·W/4, 2C]`.

    Identity for stage 0. `hw` is the grid of the incoming tokens (the previous stage's grid).
    """
    if isinstance(stage.downsample, nn.Identity):
        return x
    x = stage.downsample(x.reshape(-1, hw[0], hw[1], x.shape[-1]))
    return x.flatten(1, 2)


def swin_attention_branch(block, x: Tensor, hw: tuple[int, int]) -> Tensor:
    """DropPath(LN1(WindowAttn(x))) of one SwinV2 block, the residual branch only: `[BT, L, C]` → `[BT, L, C]`."""
    channels = x.shape[-1]
    y = block._attn(x.reshape(-1, hw[0], hw[1], channels))
    return block.drop_path1(block.norm1(y)).reshape(-1, hw[0] * hw[1], channels)


def swin_mlp_branch(block, x: Tensor) -> Tensor:
    """DropPath(LN2(MLP(x))) of one SwinV2 block, the residual branch only: `[BT, L, C]` → `[BT, L, C]`."""
    return block.drop_path2(block.norm2(block.mlp(x)))


def swin_block(block, x: Tensor, hw: tuple[int, int]) -> Tensor:
    """A whole (unadapted) SwinV2 block on tokens `[BT, L, C]`."""
    x = x + swin_attention_branch(block, x, hw)
    return x + swin_mlp_branch(block, x)


# ---------------------------------------------------------------------------------------------------- audio (HTS-AT)


class HTSAT(nn.Module):
    """HTS-AT as ClapAudio modules: `patch_embed`, `layers` (4 `ClapAudioStage`s), plus the unused `norm`,
    `tscam_conv` and `head` of the official model (kept for strict checkpoint loading and parameter counts).

    `forward(spec [BT, 1, S, S])` runs the plain stack through the library's own stage forwards and returns the
    last-stage tokens `[BT, L_3, C_3]` without the final norm (what CAE-AV consumes); the encoder walks the same
    modules block by block instead.
    """

    def __init__(self, cfg: HTSATConfig, freq_ratio: int = 4):
        super().__init__()
        from transformers.models.clap.modeling_clap import ClapAudioConfig, ClapAudioEncoder

        if len(cfg.depths) != len(cfg.num_heads):
            raise ConfigError(f"audio.depths {cfg.depths} and audio.num_heads {cfg.num_heads} differ in length")
        clap_cfg = ClapAudioConfig(
            spec_size=cfg.spec_size,
            patch_size=cfg.patch_size,
            patch_stride=(cfg.patch_stride, cfg.patch_stride),
            patch_embeds_hidden_size=cfg.embed_dim,
            depths=list(cfg.depths),
            num_attention_heads=list(cfg.num_heads),
            window_size=cfg.window_size,
            mlp_ratio=cfg.mlp_ratio,
            drop_path_rate=cfg.drop_path_rate,
            hidden_dropout_prob=0.0,  # HTS-AT: drop_rate = attn_drop_rate = 0
            attention_probs_dropout_prob=0.0,
            qkv_bias=True,
            hidden_act="gelu",
            enable_fusion=False,
            num_classes=cfg.num_classes,
        )
        stack = ClapAudioEncoder(clap_cfg)  # its batch_norm (mel bins) is dropped with `stack`
        self.patch_embed = stack.patch_embed
        self.layers = stack.layers
        self.resolutions = [tuple(int(n) for n in r) for r in stack.input_resolutions]
        self.dims = [int(cfg.embed_dim * 2**i) for i in range(len(cfg.depths))]
        self.num_features = self.dims[-1]
        _clamp_windows(self, clap_cfg)
        self.norm = nn.LayerNorm(self.num_features)
        self.num_classes = cfg.num_classes
        if cfg.num_classes > 0:
            # HTS-AT's token-semantic head: kernel (SF, 3), SF = final frequency rows per mel chunk
            sf = max(1, self.resolutions[-1][0] // freq_ratio)
            self.tscam_conv = nn.Conv2d(self.num_features, cfg.num_classes, kernel_size=(sf, 3), padding=(0, 1))
            self.head = nn.Linear(cfg.num_classes, cfg.num_classes)
        _init_htsat_weights(self)

    def stage_shapes(self) -> list[StageShape]:
        return [StageShape(h, w, d) for (h, w), d in zip(self.resolutions, self.dims)]

    def core_parameters(self):
        """Patch embed + the 4 stages (what the walk uses; the paper's "HTS-AT core")."""
        yield from self.patch_embed.parameters()
        yield from self.layers.parameters()

    def forward(self, spec: Tensor) -> Tensor:
        x = self.patch_embed(spec)
        for stage, hw in zip(self.layers, self.resolutions):
            x = stage(x, hw)[0]
        return x


def _clamp_windows(htsat: HTSAT, clap_cfg) -> None:
    """Clamp each block's window to its grid at build time, as HTS-AT does (no shift when grid ≤ window)."""
    from transformers.models.clap.modeling_clap import ClapAudioAttention

    for stage, (height, width), dim, heads in zip(
        htsat.layers, htsat.resolutions, htsat.dims, clap_cfg.num_attention_heads
    ):
        for block in stage.blocks:
            configured = int(block.window_size)
            block.set_shift_and_window_size((height, width))
            block.window_size, block.shift_size = int(block.window_size), int(block.shift_size)
            if block.window_size != configured:
                block.attention = ClapAudioAttention(clap_cfg, dim, heads, window_size=block.window_size)


def _init_htsat_weights(htsat: HTSAT) -> None:
    """HTS-AT's own init (trunc-normal 0.02 for linears and position-bias tables) for random-weight use; LayerNorms
    as `randomize_layer_norms`."""
    for name, module in htsat.named_modules():
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        table = getattr(module, "relative_position_bias_table", None)
        if isinstance(table, nn.Parameter):
            nn.init.trunc_normal_(table, std=0.02)
    randomize_layer_norms(htsat)


def build_audio_backbone(cfg: HTSATConfig, freq_ratio: int = 4) -> HTSAT:
    """HTS-AT from `HTSATConfig` (random weights; `caeav.model.weights` loads the official checkpoint)."""
    return HTSAT(cfg, freq_ratio=freq_ratio)


def htsat_patch_embed(htsat: HTSAT, spec: Tensor) -> Tensor:
    """`[BT, 1, S, S]` → `[BT, L_0, C_0]` (conv 4×4/4 + LN)."""
    return htsat.patch_embed(spec)


def htsat_block(block, x: Tensor, hw: tuple[int, int]) -> Tensor:
    """One whole pre-norm HTS-AT block (attention + MLP) on tokens `[BT, L, C]`; window fixed at build time."""
    return block(x, hw, always_partition=True)[0]


def htsat_merge(stage, x: Tensor, hw: tuple[int, int]) -> Tensor:
    """The merge that closes `stage` (2×2 concat → LN(4C) → Linear(4C→2C)); identity after the last stage."""
    if stage.downsample is None:
        return x
    return stage.downsample(x, hw)
