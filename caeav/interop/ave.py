"""AVE: the authors' `MMIL_Net` (AVE-NET; AVMoE: `nets/net_trans_v3.py`) ↔ caeav's AVE model with the CMBS head.

The head keeps the authors' names under `head.`: `temporal_attn.*` (CMBS's TemporalAttention, including the unused
template encoder/decoder layers they register, which caeav also keeps: `task.head.keep_unused_layers`) and `CMBS.*`.
Nothing is dropped. The AVE checkpoints are saved without a `module.` prefix.
"""

from caeav.interop.rules import Rule

TASK = "ave"
SIGNATURE = "CMBS."  # a key prefix only this task's checkpoints have
ADAPTERS = ("vis_moe_adapter_blocks", "audio_moe_adapter_blocks")
HEAD = [
    Rule("CMBS.localize_module.event_classifier.{rest}", "head.CMBS.localize_module.event_classifier.{rest}",
         explains="task.num_classes"),
    Rule("temporal_attn.{rest}", "head.temporal_attn.{rest}", explains="task.head"),
    Rule("CMBS.{rest}", "head.CMBS.{rest}", explains="task.num_classes"),
]
DROPS = []
AUTHORS_OPTIONS = []


def head_options(shapes) -> list:
    """(option, value, evidence key) read off the head's tensors: 28 event classes + background."""
    key = "CMBS.localize_module.event_classifier.weight"
    return [("task.num_classes", int(shapes[key][0]) + 1, key)] if key in shapes else []
