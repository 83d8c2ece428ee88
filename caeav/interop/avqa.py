"""AVQA: the authors' `AVQA_Fusion_Net` (AVQA-NET; AVMoE: `net_grd_avst/net_avst_v2.py`) ↔ caeav's AVST head.

The head keeps the authors' names under `head.`. Their checkpoints carry DataParallel's `module.` prefix (stripped by
the reader). Dropped as unused by the authors' forward: `fc_a1_pure`, `fc_a2_pure`, `norm3`.

Answer layer: the authors' script builds `fc_ans` with 50 outputs for the 42 answers of `ans_vocab.txt`. caeav keeps
the shape (import sets `task.num_classes` from the tensor, 50), so predictions equal the authors' (argmax over all 50,
as their test loop does) and the round trip is exact; outputs 42-49 name no answer (the runtime calls them
"answer 42", ...; the metric counts them wrong, like the authors').
On import the authors' question padding is reproduced: `task.head.question_pads=trailing`.
"""

from caeav.interop.rules import Drop, Rule

TASK = "avqa"
SIGNATURE = "question_encoder."
ADAPTERS = ("vis_adapter_blocks", "audio_adapter_blocks")
HEAD = [
    Rule("fc_ans.{rest}", "head.fc_ans.{rest}", explains="task.num_classes"),
    Rule("question_encoder.word2vec.{rest}", "head.question_encoder.word2vec.{rest}",
         explains="task.head.vocab_size / task.head.word_dim"),
    *[Rule(f"{name}.{{rest}}", f"head.{name}.{{rest}}", explains="task.head")
      for name in ("question_encoder", "attn_a", "attn_v", "fc1", "fc2", "fc3", "fc4", "fc_a1", "fc_a2", "fc_fusion",
                   "fc_gl", "linear11", "linear12", "linear21", "linear22", "norm1", "norm2")],
]
DROPS = [Drop(f"{name}.{{rest}}", "unused", name) for name in ("fc_a1_pure", "fc_a2_pure", "norm3")]
AUTHORS_OPTIONS = ["task.head.question_pads=trailing"]


def head_options(shapes) -> list:
    """(option, value, evidence key) read off the head's tensors."""
    out = []
    if "fc_ans.weight" in shapes:
        out.append(("task.num_classes", int(shapes["fc_ans.weight"][0]), "fc_ans.weight"))
    if "question_encoder.word2vec.weight" in shapes:
        out.append(("task.head.vocab_size", int(shapes["question_encoder.word2vec.weight"][0]),
                    "question_encoder.word2vec.weight"))
    return out
