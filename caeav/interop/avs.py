"""AVS (S4 and MS3): the authors' `Pred_endecoder` (AVS-NET, byte-identical for S4 and MS3; AVMoE:
`model/PVT_AVSModel_v2.py`) ↔ caeav's AVS model (TPAVI decoder, `caeav.model.heads.avs`).

The decoder keeps the authors' names under `head.`. Dropped as unused by the authors' forward (architecture.md
§7.4): the PVT-v2-b5 `encoder_backbone` (1,052 entries, 81.4 M parameters), `conv1`-`conv4` (the PVT path's ASPP
convolutions), `x1_linear`-`x4_linear` (the un-suffixed projections; the forward uses `x*_linear_`), `path4`'s
first residual unit (path4 is called with one input), the template layer each TemporalAttention encoder
registers but never runs, and the cross-modal decoders of the four TemporalAttention
copies (`temporal_attn.audio_decoder.*`, `video_decoder.*`), whose outputs are never read.

On import the authors' behaviour is reproduced: their v1 unimodal self-attention attends over the batch axis
(`task.avmoe.ua_mhsa_axis=batch`, S4; MS3's v2 experts have no MHSA); the learned tokens are 87 long whatever
`num_tokens` says (read off `my_tokens`, `task.avmoe.num_latent_tokens`).
"""

from caeav.interop.rules import Drop, Rule

TASK = "avs"
SIGNATURE = "tpavi_b1."
ADAPTERS = ("vis_moe_adapter_blocks", "audio_moe_adapter_blocks")
HEAD = [Rule(f"{name}.{{rest}}", f"head.{name}.{{rest}}", explains="task.head")
        for name in ("audio_linear", "output_conv", "path1", "path2", "path3", "path4", "temporal_attn",
                     "tpavi_b1", "tpavi_b2", "tpavi_b3", "tpavi_b4", "x1_linear_", "x2_linear_", "x3_linear_",
                     "x4_linear_")]
DROPS = [
    Drop("encoder_backbone.{rest}", "unused", "PVT-v2-b5 encoder_backbone"),
    *[Drop(f"conv{n}.{{rest}}", "unused", "conv1-conv4") for n in range(1, 5)],
    *[Drop(f"x{n}_linear.{{rest}}", "unused", "x1_linear-x4_linear") for n in range(1, 5)],
    Drop("path4.resConfUnit1.{rest}", "unused", "path4.resConfUnit1"),
    Drop("temporal_attn.audio_decoder.{rest}", "unused", "temporal decoders"),
    Drop("temporal_attn.video_decoder.{rest}", "unused", "temporal decoders"),
    # the un-cloned template layer each encoder wrapper registers (AVE keeps them: `task.head.keep_unused_layers`)
    Drop("temporal_attn.audio_encoder.{n}.encoder_layer.{rest}", "unused", "template encoder layers"),
    Drop("temporal_attn.video_encoder.{n}.encoder_layer.{rest}", "unused", "template encoder layers"),
]
AUTHORS_OPTIONS = ["task.avmoe.ua_mhsa_axis=batch"]


def head_options(shapes) -> list:
    return []
