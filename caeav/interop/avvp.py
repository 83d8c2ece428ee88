"""AVVP: the authors' `MGN_Net` (AVVP-NET; AVMoE: `nets/mgn.py`) ↔ caeav's AVVP model with the MGN head.

The MGN head keeps the authors' names under `head.` (`audio_cug`, `visual_cug`, `av_mcg`, the class tokens, the
`fc_*` layers). The authors' model reads precomputed R(2+1)D-18 features, so their checkpoints hold no weights for
caeav's frozen `st_stream` (the torchvision r2plus1d_18 layout): like an absent backbone, it loads from
`st.weights=` (torchvision's Kinetics-400 file). On import the authors' audio path is reproduced
(`task.authors_audio_bypass=true`, architecture.md §2.5): their HTS-AT blocks' outputs are discarded.
"""

from caeav.interop.rules import Rule

TASK = "avvp"
SIGNATURE = "audio_cug."
ADAPTERS = ("vis_adapter_blocks", "audio_adapter_blocks")
UA_GATE = "gate_av"  # the parameter-free unimodal attention's gate (caeav: ua.*.gate_self)
HEAD = [
    Rule("audio_token", "head.audio_token", explains="task.num_classes"),
    Rule("visual_token", "head.visual_token", explains="task.num_classes"),
    Rule("fc_st.{rest}", "head.fc_st.{rest}", explains="task.head.st_dim"),
    *[Rule(f"{name}.{{rest}}", f"head.{name}.{{rest}}", explains="task.head (dim, depth_*, num_classes)")
      for name in ("audio_cug", "visual_cug", "av_mcg", "fc_a", "fc_v", "fc_fusion", "fc_prob", "fc_prob_a",
                   "fc_prob_v", "fc_cls")],
]
DROPS = []
AUTHORS_OPTIONS = ["task.authors_audio_bypass=true"]


def head_options(shapes) -> list:
    return [("task.num_classes", int(shapes["audio_token"][0]), "audio_token")] if "audio_token" in shapes else []
