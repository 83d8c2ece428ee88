"""Name rules shared by every task: the two frozen backbones, the AVMoE adapters, CASTE, the caption projector and
CASE (architecture.md §2-§6), as the authors' models name them (their `swin`, `htsat`, `*_adapter_blocks_p1/p2`,
`*_caste_blocks_p1`, `mapper`, `frame_adapter_v`, `wav_adapter_a`, `case`).

Where caeav kept the authors' module names (CASE, CASTE's insides, the heads) a rule is a plain prefix change; the
renames are listed one per line so a reader can check them against `caeav.model`. The per-task modules
(`caeav.interop.ave`, ...) add their head and the parts they drop.
"""

from __future__ import annotations

from caeav.interop.rules import Drop, Rule, prefixed

VISUAL_SHAPES = "the visual backbone (visual.* of the preset: pass --config paper)"
AUDIO_SHAPES = "the audio backbone (audio.* of the preset: pass --config paper)"

# ------------------------------------------------------------------------------------------------ Swin-V2 (visual)
# The authors build Swin-V2 with timm 0.6, caeav with timm 1.x. The two layouts differ in two names only: timm 0.6
# merges patches at the *end* of stage n (`layers.n.downsample`), timm 1.x at the *start* of stage n+1 (the same
# Linear + LayerNorm, so the tensors are unchanged: the rule shifts the index), and the 22k classifier is `head` in
# 0.6, `head.fc` in 1.x. This is what timm 1.x's own `checkpoint_filter_fn` does for Swin-V2.
SWIN = [
    Rule("swin.layers.{n}.downsample.{rest}", "encoder.visual.layers.{n+1}.downsample.{rest}", explains=VISUAL_SHAPES),
    Rule("swin.head.{rest}", "encoder.visual.head.fc.{rest}", explains="visual.num_classes"),
    Rule("swin.{rest}", "encoder.visual.{rest}", explains=VISUAL_SHAPES),
]
SWIN_DROPS = [
    # timm 0.6 stores the shifted-window masks; timm 1.x rebuilds them (non-persistent buffers)
    Drop("swin.layers.{n}.blocks.{m}.attn_mask", "recomputed", "Swin attention masks"),
]

# ------------------------------------------------------------------------------------------------ HTS-AT (audio)
# caeav runs HTS-AT as the transformers ClapAudio encoder stack (decisions D4); block names differ, the fused qkv
# Linear is three Linears here (the one real layout change, `transforms.split_qkv`), and the front end's bn0 lives
# in `encoder.frontend`. The relative-position index buffers are copied (they are the same table).
_HTSAT_BLOCK = [
    Rule("norm1.{rest}", "layernorm_before.{rest}"),
    Rule("attn.qkv.{rest}", "attention.self.{part}.{rest}", transform="split_qkv", parts=("query", "key", "value")),
    Rule("attn.relative_position_bias_table", "attention.self.relative_position_bias_table"),
    Rule("attn.relative_position_index", "attention.self.relative_position_index"),
    Rule("attn.proj.{rest}", "attention.output.dense.{rest}"),
    Rule("norm2.{rest}", "layernorm_after.{rest}"),
    Rule("mlp.fc1.{rest}", "intermediate.dense.{rest}"),
    Rule("mlp.fc2.{rest}", "output.dense.{rest}"),
]
HTSAT = [
    Rule("htsat.bn0.{rest}", "encoder.frontend.bn0.{rest}", explains="frontend.n_mels"),
    *prefixed(_HTSAT_BLOCK, "htsat.layers.{n}.blocks.{m}.", "encoder.audio.layers.{n}.blocks.{m}.", AUDIO_SHAPES),
    Rule("htsat.{rest}", "encoder.audio.{rest}", explains=AUDIO_SHAPES),
]
HTSAT_DROPS = [
    # torchlibrosa's STFT kernels and mel matrix are parameters in the authors' model; caeav computes the same
    # tables in its front end (decisions D6, `caeav.model.frontend_tables`)
    Drop("htsat.spectrogram_extractor.{rest}", "recomputed", "STFT/mel tables"),
    Drop("htsat.logmel_extractor.{rest}", "recomputed", "STFT/mel tables"),
    Drop("htsat.layers.{n}.blocks.{m}.attn_mask", "recomputed", "HTS-AT attention masks"),
]

BACKBONE_PREFIXES = {"visual": ("swin.",), "audio": ("htsat.",)}

# ------------------------------------------------------------------------------------------------ AVMoE adapters
# Module-relative: the authors' `MoEAdapter` (AVE-NET:438-489) → `caeav.model.avmoe.MoEAdapter`.
_EXPERT = [
    Rule("my_tokens", "latent", explains="task.avmoe.num_latent_tokens"),
    Rule("down_sampler.{rest}", "down.{rest}", explains="task.avmoe.reduction / task.avmoe.groups"),
    Rule("up_sampler.{rest}", "up.{rest}", explains="task.avmoe.reduction / task.avmoe.groups"),
    Rule("bn1.{rest}", "bn_down.{rest}", explains="task.avmoe.reduction"),
    Rule("bn2.{rest}", "bn_up.{rest}"),
    Rule("ln_before.{rest}", "ln_pre.{rest}"),
    Rule("ln_post.{rest}", "ln_post.{rest}"),
    Rule("self_attention.{rest}", "mhsa.{rest}"),
    Rule("gate", "gate"),
]
_ADAPTER = [
    Rule("conv_adapter.{rest}", "token_mix.{rest}", explains="the token counts of both backbones (visual.img_size, "
                                                              "audio.spec_size)"),
    Rule("fc.{rest}", "channel_map.{rest}"),
    Rule("router.{rest}", "router.{rest}", explains="task.avmoe.num_cma / task.avmoe.num_ua"),
    Rule("multimodal_experts.{e}.gate_av", "cma.{e}.gate_av"),
    *prefixed(_EXPERT, "multimodal_experts.{e}.", "cma.{e}."),
    *prefixed(_EXPERT, "singlemodal_experts.{e}.", "ua.{e}."),
]


def adapters(visual: str, audio: str, ua_gate: str = "gate_self") -> list[Rule]:
    """Rules for the 2 × 2 adapter lists; `visual`/`audio` are the authors' list names without `_p1`/`_p2`
    (AVE/AVS `vis_moe_adapter_blocks`, AVVP/AVQA `vis_adapter_blocks`). The unimodal expert's own attention gate is
    `ua_gate` in the authors' code: `gate_av` in AVVP (parameter-free attention), `gate_self` in AVS v2 (latent
    tokens); caeav calls both `gate_self` (`caeav.model.experts.UnimodalExpert`)."""
    table = [Rule(f"singlemodal_experts.{{e}}.{ua_gate}", "ua.{e}.gate_self"), *_ADAPTER]
    rules = []
    for p in ("p1", "p2"):
        rules += prefixed(table, f"{visual}_{p}.{{i}}.", f"encoder.visual_moe_{p}.{{i}}.")
        rules += prefixed(table, f"{audio}_{p}.{{i}}.", f"encoder.audio_moe_{p}.{{i}}.")
    return rules


# ------------------------------------------------------------------------------------------------ CAE-AV only
# CASTE (AVE-NET:939-980): the gate's projections are named after the modality in the authors' code (`v_proj`,
# `a_proj` in both the visual and the audio instance); caeav names them after the stream (`self_proj`, `other_proj`).
_CASTE = [
    Rule("gate.v_proj.{rest}", "gate.self_proj.{rest}"),
    Rule("gate.a_proj.{rest}", "gate.other_proj.{rest}"),
    Rule("{rest}", "{rest}"),
]
CASTE = [*prefixed(_CASTE, "vis_caste_blocks_p1.{s}.", "encoder.visual_caste.{s}.", VISUAL_SHAPES),
         *prefixed(_CASTE, "audio_caste_blocks_p1.{s}.", "encoder.audio_caste.{s}.", AUDIO_SHAPES)]

# Caption projector (AVE-NET:492-550,1200-1204): the shared caption self-attention `mapper` and the two bottlenecks.
CAPTIONS = [
    Rule("mapper.mhatt.{rest}", "caption_projector.mapper.attention.{rest}", explains="caption.text_dim"),
    Rule("mapper.norm1.{rest}", "caption_projector.mapper.norm.{rest}", explains="caption.text_dim"),
    Rule("frame_adapter_v.{rest}", "caption_projector.bottleneck_v.{rest}", explains="caption.bottleneck_dim"),
    Rule("wav_adapter_a.{rest}", "caption_projector.bottleneck_a.{rest}", explains="caption.bottleneck_dim"),
]

# CASE (AVE-NET:592-781): caeav kept every name.
CASE = [Rule("case.{rest}", "case.{rest}", explains="case.proj_dim / caption.text_dim")]

CAE_AV_ONLY = (CASTE, CAPTIONS, CASE)  # what the AVMoE variant lacks (the official avmoe maps differ only there)
