"""CAE-AV audio-visual encoder: the frozen backbones walked in lock-step with CASTE and AVMoE (P §III-A/B, Eq. 9-13;
architecture.md §2.4-2.6, decisions D1-D3, D8).

`CAEAVEncoder(cfg).forward(frames [B,T,3,H,W], wave [B,T,32000])` → `EncoderOutput`:

1. Frames are resized to `visual.img_size` (bicubic) when they arrive at another size (AVS: 224 → 192); the
   waveform goes through the log-mel front end (`AudioFrontEnd`) to `[BT, 1, 256, 256]`.
2. Patch embeddings, then the 4 stages zipped (Swin stage s ↔ HTS-AT stage s). Inside stage s the HTS-AT block j is
   paired with Swin block r·j + (r−1), r = swin_depth/htsat_depth (paper stage 2: r = 3 → Swin blocks 2, 5, …, 17);
   the other Swin blocks run plain (branch C). Stages with (s+1) % skip_num == 0 (skip_num > 1) carry no adapters.
3. Paired block in an adapter stage (branch A), with v0, a0 the streams entering it and i its adapter position:
     first paired block of the stage: v1 = v0 + CASTE_v(v0, a0), a1 = a0 + CASTE_a(a0, v0); else v1, a1 = v0, a0
     r_a = Φ_a^p1(a1, v1); r_v = Φ_v^p1(v1, a1)
     v = v0 + DropPath(LN1(Attn(v0))) + r_v          (CASTE reaches the stream only through p1, P Eq. 10-12)
     a = HTSATBlock(a0) + r_a
     r_a = Φ_a^p2(a, v); r_v = Φ_v^p2(v, a)
     v = v + DropPath(LN2(MLP(v))) + r_v;  a = a + r_a
   Paired block in a skipped stage (branch B): v = v0 + attn branch; a = HTSATBlock(a0); on the first paired block
   v += CASTE_v(v0, a0), a += CASTE_a(a0, v0); then v += MLP branch.
   AVVP runs branch A like every task (decisions D2: the authors' audio-block bypass is a bug, not reproduced by
   default). `task.authors_audio_bypass` reproduces it (architecture.md §2.5, AVVP-NET:1109-1110): the HTS-AT block's
   output is discarded and the audio continues from its pre-block value, a = a1 + r_a (branch A; so the first block's
   CASTE residual stays in the stream) and a = a0 (branch B).
4. Merges: Swin's opens stage s+1, HTS-AT's closes stage s — the same point between two stages.

Frozen means frozen (D3): the front end and both backbones have `requires_grad=False` and stay in eval mode when
`.train()` is called (no DropPath, no SpecAugment, no BatchNorm statistics updates); adapters and CASTE train.
Export (D8): no data-dependent control flow; every reshape uses -1 for BT; T comes from the config.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch.nn.functional as F
from torch import Tensor, nn

from caeav.config import ConfigError, ModelConfig
from caeav.model.avmoe import MoEAdapter
from caeav.model.backbones import (
    build_audio_backbone,
    build_visual_backbone,
    htsat_block,
    htsat_merge,
    htsat_patch_embed,
    swin_attention_branch,
    swin_block,
    swin_merge,
    swin_mlp_branch,
    swin_patch_embed,
    visual_stage_shapes,
)
from caeav.model.caste import CASTE
from caeav.model.frontend import AudioFrontEnd

FROZEN = ("frontend", "visual", "audio")


@dataclass
class EncoderOutput:
    """What the encoder hands to CASE and the heads.

    v: `[BT, L_v, C_v]` final-stage visual tokens, *not* normed (the caller applies `encoder.visual_norm` after CASE).
    a: `[BT, L_a, C_a]` final-stage audio tokens (HTS-AT's final norm is never applied).
    visual_stages: the 4 per-stage visual features before merging `[BT, L_s, C_s]`; stage 3 is passed through
      `visual_norm` (the AVS decoder's inputs, architecture.md §2.6).
    router_probs: `[BT, E]` of every MoE call, in call order (load-balancing loss).
    """

    v: Tensor
    a: Tensor
    visual_stages: list = field(default_factory=list)
    router_probs: list = field(default_factory=list)


@dataclass(frozen=True)
class WalkStep:
    """One Swin block of the walk. `htsat_block` None: unpaired (branch C). `position` None on a paired block: the
    stage is skipped (branch B); else the adapter position i (branch A). `first`: first paired block of the stage."""

    stage: int
    swin_block: int
    htsat_block: Optional[int]
    position: Optional[int]
    first: bool


def adapter_stage(stage: int, skip_num: int) -> bool:
    """Stages with (s+1) % skip_num == 0 carry no adapters when skip_num > 1 (AVE-NET:1129-1131)."""
    return not (skip_num > 1 and (stage + 1) % skip_num == 0)


def plan_walk(swin_depths, htsat_depths, skip_num: int) -> list[list[WalkStep]]:
    """The lock-step schedule: per stage, one `WalkStep` per Swin block, in order."""
    if len(swin_depths) != len(htsat_depths):
        raise ConfigError(f"visual.depths {tuple(swin_depths)} and audio.depths {tuple(htsat_depths)} differ in length")
    plan, position = [], 0
    for s, (d_v, d_a) in enumerate(zip(swin_depths, htsat_depths)):
        if d_a < 1 or d_v % d_a:
            raise ConfigError(f"stage {s}: Swin depth {d_v} is not a multiple of HTS-AT depth {d_a}")
        r = d_v // d_a
        steps = []
        for b in range(d_v):
            if b % r != r - 1:
                steps.append(WalkStep(s, b, None, None, False))
                continue
            j = b // r
            pos = position if adapter_stage(s, skip_num) else None
            position += pos is not None
            steps.append(WalkStep(s, b, j, pos, j == 0))
        plan.append(steps)
    return plan


class CAEAVEncoder(nn.Module):
    """Front end + frozen Swin-V2 + frozen HTS-AT, walked in lock-step with CASTE (4+4) and AVMoE (2 per modality per
    adapter position). Submodules: `frontend`, `visual` (timm SwinTransformerV2), `audio` (`HTSAT`),
    `visual_caste`/`audio_caste` (one per stage), `visual_moe_p1/p2`, `audio_moe_p1/p2` (one per position)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.segments = cfg.task.segments
        self.img_size = cfg.visual.img_size
        self.frontend = AudioFrontEnd(
            cfg.frontend,
            spec_size=cfg.audio.spec_size,
            tile_seconds=cfg.task.audio_tile_seconds,
            segment_samples=cfg.frontend.sample_rate,
        )
        self.visual = build_visual_backbone(cfg.visual)
        self.audio = build_audio_backbone(cfg.audio, freq_ratio=cfg.frontend.freq_ratio)
        self.visual_shapes = visual_stage_shapes(self.visual)
        self.audio_shapes = self.audio.stage_shapes()
        moe = cfg.task.avmoe
        self.plan = plan_walk(cfg.visual.depths, cfg.audio.depths, moe.skip_num)
        self.audio_bypass = bool(cfg.task.authors_audio_bypass)

        vs, aus = self.visual_shapes, self.audio_shapes
        self.visual_caste = self.audio_caste = None  # the AVMoE baseline (`variant=avmoe`) has no CASTE
        if cfg.variant == "cae_av":
            self.visual_caste = nn.ModuleList(
                CASTE(v.dim, a.dim, v.tokens, self.segments, cfg.caste) for v, a in zip(vs, aus)
            )
            self.audio_caste = nn.ModuleList(
                CASTE(a.dim, v.dim, a.tokens, self.segments, cfg.caste) for v, a in zip(vs, aus)
            )
        stages = [step.stage for steps in self.plan for step in steps if step.position is not None]

        def adapters(self_shapes, other_shapes, gated):
            return nn.ModuleList(
                MoEAdapter(self_shapes[s].dim, self_shapes[s].tokens, other_shapes[s].dim, other_shapes[s].tokens,
                           moe, gated)
                for s in stages
            )

        self.visual_moe_p1 = adapters(vs, aus, True)
        self.visual_moe_p2 = adapters(vs, aus, True)
        self.audio_moe_p1 = adapters(aus, vs, moe.audio_gate)
        self.audio_moe_p2 = adapters(aus, vs, moe.audio_gate)

        for name in FROZEN:
            getattr(self, name).requires_grad_(False)
        self.train(self.training)

    # ------------------------------------------------------------------------------------------------ bookkeeping

    @property
    def visual_norm(self) -> nn.Module:
        """Swin's final LayerNorm (frozen); the caller applies it to v after CASE (architecture.md §2.6)."""
        return self.visual.norm

    @property
    def num_positions(self) -> int:
        return len(self.visual_moe_p1)

    def frozen_modules(self) -> dict:
        return {name: getattr(self, name) for name in FROZEN}

    def train(self, mode: bool = True) -> "CAEAVEncoder":
        """Adapters follow `mode`; the front end and backbones always stay in eval mode (decisions D3)."""
        super().train(mode)
        for module in self.frozen_modules().values():
            module.eval()
        return self

    def frozen_parameter_names(self) -> list[str]:
        return [n for n, _ in self.named_parameters() if n.split(".", 1)[0] in FROZEN]

    def trainable_parameter_names(self) -> list[str]:
        return [n for n, _ in self.named_parameters() if n.split(".", 1)[0] not in FROZEN]

    def parameter_counts(self) -> dict[str, int]:
        """Parameters per component (architecture.md §10 rows)."""

        def count(params):
            return sum(p.numel() for p in params)

        audio_core = count(self.audio.core_parameters())
        return {
            "visual_backbone": count(self.visual.parameters()),
            "audio_backbone_core": audio_core,
            "audio_backbone_rest": count(self.audio.parameters()) - audio_core,
            "frontend": count(self.frontend.parameters()),
            "caste": sum(count(m.parameters()) for m in (self.visual_caste, self.audio_caste) if m is not None),
            "avmoe": sum(count(getattr(self, f"{m}_moe_{p}").parameters()) for m in ("visual", "audio")
                         for p in ("p1", "p2")),
        }

    def load_backbone_weights(self, visual: Optional[str] = None, audio: Optional[str] = None) -> None:
        """Load the backbone checkpoints named here or in the config (`visual.weights`, `audio.weights`)."""
        from caeav.model.weights import load_htsat_weights, load_swinv2_weights

        visual = visual or self.cfg.visual.weights
        audio = audio or self.cfg.audio.weights
        if visual:
            load_swinv2_weights(self.visual, visual, self.cfg.visual)
        if audio:
            load_htsat_weights(self.audio, audio, bn0=self.frontend.bn0)

    # ------------------------------------------------------------------------------------------------ forward

    def forward(self, frames: Tensor, wave: Tensor) -> EncoderOutput:
        x = frames.flatten(0, 1)  # [BT, 3, H, W], video-major rows
        if tuple(x.shape[-2:]) != (self.img_size, self.img_size):  # static shape, not data
            x = F.interpolate(x, size=(self.img_size, self.img_size), mode="bicubic", align_corners=False)
        v = swin_patch_embed(self.visual, x)
        a = htsat_patch_embed(self.audio, self.frontend(wave))
        visual_stages, probs = [], []
        for s, steps in enumerate(self.plan):
            if s > 0:
                v = swin_merge(self.visual.layers[s], v, self.visual_shapes[s - 1].hw)
                a = htsat_merge(self.audio.layers[s - 1], a, self.audio_shapes[s - 1].hw)
            for step in steps:
                v, a = self._step(step, v, a, probs)
            visual_stages.append(v)
        visual_stages[-1] = self.visual_norm(visual_stages[-1])
        return EncoderOutput(v=v, a=a, visual_stages=visual_stages, router_probs=probs)

    def _step(self, step: WalkStep, v: Tensor, a: Tensor, probs: list) -> tuple[Tensor, Tensor]:
        s = step.stage
        v_block = self.visual.layers[s].blocks[step.swin_block]
        v_hw = self.visual_shapes[s].hw
        if step.htsat_block is None:  # (C) unpaired Swin block
            return swin_block(v_block, v, v_hw), a
        a_block = self.audio.layers[s].blocks[step.htsat_block]
        a_hw = self.audio_shapes[s].hw
        v0, a0 = v, a
        if step.position is None:  # (B) skipped stage: CASTE straight into the stream
            v = v0 + swin_attention_branch(v_block, v0, v_hw)
            a = a0 if self.audio_bypass else htsat_block(a_block, a0, a_hw)
            if step.first:
                v, a = self._enrich(s, v, a, v0, a0)
            return v + swin_mlp_branch(v_block, v), a
        # (A) adapter position i
        i = step.position
        v1, a1 = self._enrich(s, v0, a0, v0, a0) if step.first else (v0, a0)
        r_a, p_a = self.audio_moe_p1[i](a1, v1)
        r_v, p_v = self.visual_moe_p1[i](v1, a1)
        probs += [p_a, p_v]
        v = v0 + swin_attention_branch(v_block, v0, v_hw) + r_v
        a = (a1 if self.audio_bypass else htsat_block(a_block, a0, a_hw)) + r_a
        r_a, p_a = self.audio_moe_p2[i](a, v)
        r_v, p_v = self.visual_moe_p2[i](v, a)
        probs += [p_a, p_v]
        v = v + swin_mlp_branch(v_block, v) + r_v
        return v, a + r_a

    def _enrich(self, s: int, v: Tensor, a: Tensor, v0: Tensor, a0: Tensor) -> tuple[Tensor, Tensor]:
        """v + CASTE_v^s(v0, a0), a + CASTE_a^s(a0, v0) (P Eq. 9-13, both from the pre-block streams); unchanged in
        the AVMoE baseline, whose walk is CAE-AV's without CASTE (AVE-BASE `forward_swin`)."""
        if self.visual_caste is None:
            return v, a
        return v + self.visual_caste[s](v0, a0), a + self.audio_caste[s](a0, v0)
