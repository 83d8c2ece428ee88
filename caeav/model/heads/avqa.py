"""AVQA head: AVST-style question answering with audio-guided visual grounding (architecture.md §7.3; AVQA-NET).

Origin: AVST of MUSIC-AVQA (Li et al., "Learning to Answer Questions in Dynamic Audio-Visual Scenarios", CVPR 2022),
widened by the CAE-AV authors to the Swin-V2-L width D = C_v (1536). Inputs per clip:

* f_v `[B, T, C_v]`: the token mean of the swin-normed CASE visual tokens (equal to the average pool of `visual_maps`,
  which is what the authors compute; the head takes it from here instead of pooling again);
* f_a `[B, T, C_a]`: the token mean of the CASE audio tokens;
* visual_maps `[B, T, C_v, h, w]`: the same swin-normed tokens as a spatial map (6×6 for `paper`);
* question `[B, Lq]` int64 token ids: MUSIC-AVQA's question vocabulary of 93 entries with `<pad>` = 0 included
  (`ques_vocab.txt` lists it twice; index = first occurrence). Tokens are the question words with the final `?`
  dropped and each `<...>` placeholder replaced by the next `templ_values` entry, padded at the end with `<pad>` to 14.
  The LSTM runs over the padding (no packing, no mask). Deviation from AVST (default `question_pads="leading"`): the
  head first moves the pads in front of the words, so the final LSTM state follows the last word instead of up to 6
  trailing pads; `question_pads="trailing"` reproduces AVST (use it with the authors' weights). See `QuestionEncoder`;
* visual_neg (training only, optional): the frames of another video through the plain frozen Swin + its final norm,
  as `[B, T, C_v, h, w]` maps (faithful) or pooled `[B, T, C_v]` (read as a 1×1 map, so the grounding step sees a
  single location: an approximation). Without it no match outputs are produced and the match loss is skipped.

Steps (D = C_v):
1. Question: Embedding(93, D) → tanh → LSTM(D → D, 1 layer) → tanh(concat(h_n, c_n)) → Linear(2D → D) = q `[B, D]`.
2. Audio: Linear(C_a → D) → ReLU → Linear(D → D) = a `[B, T, D]`.
3. Audio-guided grounding per frame: softmax over the h·w cosine similarities between the ℓ2-normalised map tokens
   and a; grounded = Σ p · normalised tokens; v = Linear(2D → D)(tanh(concat(f_v, grounded))) `[B, T, D]`.
4. AV match (training): Linear(2D→512) → ReLU → 256 → ReLU → 128 → ReLU → 2 on concat(a, v) per frame, for the
   positive frames (label 1) and the negative frames grounded with the same audio (label 0).
5. Answer: question-query attention (4 heads) over the T visual and over the T audio features, each + residual FFN
   (D → D → D, ReLU) + LayerNorm; tanh(concat(aud_att + mean_t a, vis_att + mean_t v)) → Linear(2D → D) ⊙ q → tanh →
   Linear(D → A), A = `cfg.num_classes` answers (42 = ans_vocab.txt; the authors' script passes 50).

Outputs {"answer" `[B, A]`} plus, with negatives, {"match_pos", "match_neg"} `[B, T, 2]`.
Loss (AVQA-MAIN:101-107): CE(answer, batch["answer"]) + 0.5 · CE(match, 1 for positives / 0 for negatives) over the
2·B·T frame rows. Prediction: argmax of `answer` (`postprocess.avqa_predict` is the numpy twin).

Differences from the authors' code, none of which changes a number: batch-first tensors and explicit dims (the
authors' `.squeeze()` calls break at B·T = 1); attention written as MatMul/Softmax with `nn.MultiheadAttention`'s
parameter layout; the authors' never-used `fc_a1_pure`, `fc_a2_pure` (768→1536→1536) and `norm3` (3,545,088
parameters at paper width) are not built. Parameter names otherwise follow theirs (`question_encoder.word2vec`,
`fc_gl`, `fc1`…`fc4`, `attn_v`, `linear11`, …). No data-dependent control flow in forward (ONNX, dynamic batch).
"""

from __future__ import annotations

from typing import Mapping, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from caeav.config import ConfigError, TaskConfig
from caeav.model.heads.head_config import head_options
from caeav.model.heads.temporal_attention import PackedMultiheadAttention

QUESTION_MAX_LEN = 14  # MUSIC-AVQA pads every question to 14 tokens
QUESTION_PAD = 0  # index of `<pad>` in ques_vocab.txt

AVQA_HEAD_DEFAULTS = {  # `kind` must be "avst" (the only AVQA head)
    "vocab_size": 93,  # MUSIC-AVQA question vocabulary, <pad> = 0 included
    "word_dim": None,  # word embedding width; None = C_v (authors: 1536)
    "question_layers": 1,
    "heads": 4,
    "dropout": 0.1,  # attention map and FFN dropout of the question-query blocks
    "match_hidden": [512, 256, 128],
    "match_weight": 0.5,
    "question_pads": "leading",  # pads moved before the words (caeav); "trailing" = AVST (the LSTM ends on the pads)
}
QUESTION_PADS = ("trailing", "leading")


def pads_first(question: Tensor, pad: int = QUESTION_PAD) -> Tensor:
    """End-padded ids `[B, L]` → the same ids with the pads in front: row b rolled right by its pad count n_b,
    out[b, j] = question[b, (j - n_b) mod L], written with Where + GatherElements (no Mod, no data-dependent shapes)."""
    length = question.shape[1]
    n_pad = (question == pad).sum(dim=1, keepdim=True)  # [B, 1]
    src = torch.arange(length, device=question.device).unsqueeze(0) - n_pad  # [B, L]
    src = torch.where(src < 0, src + length, src)
    return torch.gather(question, 1, src)


class QuestionEncoder(nn.Module):
    """AVST `QstEncoder`: ids `[B, Lq]` → Embedding → tanh → LSTM → tanh(concat(h_n, c_n)) → Linear → `[B, out_dim]`.

    `pads="trailing"` is AVST: the LSTM reads the words and then the trailing pads, and its final state is taken after
    the pads. Measured on the tiny head at initialisation (D = 512): the final states of 8 of the 9 synthetic question
    templates lie within 0.07 of each other (the one unpadded template 0.6 away), because every pad step halves what
    the untrained forget gates keep; with constant audio-visual features the head then needs ~600 Adam steps before the
    answer depends on the question. `pads="leading"` moves the pads in front of the words (`pads_first`), the LSTM
    starts from the same pad state for every question and ends on the last word: the per-template answers are learnt
    in ~100 steps. Same parameters, so the choice is a config flag, not a different model."""

    def __init__(self, vocab_size: int, word_dim: int, hidden: int, out_dim: int, num_layers: int = 1,
                 pads: str = "leading"):
        super().__init__()
        if pads not in QUESTION_PADS:
            raise ConfigError(f"task.head.question_pads must be one of {', '.join(QUESTION_PADS)}, got {pads!r}")
        self.pads = pads
        self.word2vec = nn.Embedding(vocab_size, word_dim)
        self.lstm = nn.LSTM(word_dim, hidden, num_layers, batch_first=True)
        self.fc = nn.Linear(2 * num_layers * hidden, out_dim)

    def forward(self, question: Tensor) -> Tensor:
        if self.pads == "leading":
            question = pads_first(question)
        _, (h, c) = self.lstm(torch.tanh(self.word2vec(question)))  # h, c: [layers, B, H]
        state = torch.cat([h, c], dim=-1).transpose(0, 1).flatten(1)  # [B, layers·2H], layer-major as AVST
        return self.fc(torch.tanh(state))


class AVQAHead(nn.Module):
    """AVQA head (module doc). `forward(f_v, f_a, visual_maps, question, visual_neg=None)` → dict of outputs."""

    def __init__(self, dim_v: int, dim_a: int, cfg: TaskConfig):
        super().__init__()
        opts = head_options(cfg.head, AVQA_HEAD_DEFAULTS, "avst")
        hidden = list(opts["match_hidden"])
        if len(hidden) != 3:
            raise ConfigError(f"task.head.match_hidden must list 3 widths, got {hidden}")
        D = dim_v
        p = opts["dropout"]
        self.match_weight = opts["match_weight"]
        self.output_names = ("answer",)
        # 1. question
        self.question_encoder = QuestionEncoder(opts["vocab_size"], opts["word_dim"] or D, D, D,
                                                opts["question_layers"], opts["question_pads"])
        # 2. audio
        self.fc_a1 = nn.Linear(dim_a, D)
        self.fc_a2 = nn.Linear(D, D)
        # 3. grounding
        self.fc_gl = nn.Linear(2 * D, D)
        # 4. AV match
        self.fc1 = nn.Linear(2 * D, hidden[0])
        self.fc2 = nn.Linear(hidden[0], hidden[1])
        self.fc3 = nn.Linear(hidden[1], hidden[2])
        self.fc4 = nn.Linear(hidden[2], 2)
        # 5. answer
        self.attn_v = PackedMultiheadAttention(D, opts["heads"], p)
        self.linear11, self.linear12 = nn.Linear(D, D), nn.Linear(D, D)
        self.dropout1, self.dropout2 = nn.Dropout(p), nn.Dropout(p)
        self.norm1 = nn.LayerNorm(D)
        self.attn_a = PackedMultiheadAttention(D, opts["heads"], p)
        self.linear21, self.linear22 = nn.Linear(D, D), nn.Linear(D, D)
        self.dropout3, self.dropout4 = nn.Dropout(p), nn.Dropout(p)
        self.norm2 = nn.LayerNorm(D)
        self.fc_fusion = nn.Linear(2 * D, D)
        self.fc_ans = nn.Linear(D, cfg.num_classes)

    def ground(self, global_v: Tensor, maps: Tensor, audio: Tensor) -> Tensor:
        """Step 3: global `[B, T, D]`, maps `[B, T, D, h, w]`, audio `[B, T, D]` → grounded visual `[B, T, D]`."""
        tokens = F.normalize(maps.flatten(3).transpose(-1, -2), dim=-1)  # [B, T, hw, D]
        sim = torch.matmul(tokens, F.normalize(audio, dim=-1).unsqueeze(-1))  # [B, T, hw, 1]
        weights = torch.softmax(sim.transpose(-1, -2), dim=-1)  # [B, T, 1, hw]
        grounded = torch.matmul(weights, tokens).squeeze(-2)  # [B, T, D]
        return self.fc_gl(torch.tanh(torch.cat([global_v, grounded], dim=-1)))

    def match(self, audio: Tensor, visual: Tensor) -> Tensor:
        """Step 4: AV-match logits `[B, T, 2]` (class 1 = the frames belong to this audio)."""
        x = torch.cat([audio, visual], dim=-1)
        return self.fc4(F.relu(self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))))

    def answer(self, question: Tensor, audio: Tensor, visual: Tensor) -> Tensor:
        """Step 5: q `[B, D]`, audio/visual `[B, T, D]` → answer logits `[B, A]`."""
        q = question.unsqueeze(1)  # [B, 1, D]
        v_att = self.attn_v(q, visual, visual).squeeze(1)
        v_att = self.norm1(v_att + self.dropout2(self.linear12(self.dropout1(F.relu(self.linear11(v_att))))))
        a_att = self.attn_a(q, audio, audio).squeeze(1)
        a_att = self.norm2(a_att + self.dropout4(self.linear22(self.dropout3(F.relu(self.linear21(a_att))))))
        feat = torch.tanh(torch.cat([a_att + audio.mean(dim=1), v_att + visual.mean(dim=1)], dim=-1))
        return self.fc_ans(torch.tanh(self.fc_fusion(feat) * question))

    def forward(self, f_v: Tensor, f_a: Tensor, visual_maps: Tensor, question: Tensor,
                visual_neg: Optional[Tensor] = None) -> dict[str, Tensor]:
        q = self.question_encoder(question)
        audio = self.fc_a2(F.relu(self.fc_a1(f_a)))
        visual = self.ground(f_v, visual_maps, audio)
        outputs = {"answer": self.answer(q, audio, visual)}
        if visual_neg is not None:  # a structural choice (input given or not), not a data-dependent branch
            if visual_neg.dim() == 5:
                neg_global, neg_maps = visual_neg.mean(dim=(-2, -1)), visual_neg
            else:
                neg_global, neg_maps = visual_neg, visual_neg[..., None, None]
            outputs["match_pos"] = self.match(audio, visual)
            outputs["match_neg"] = self.match(audio, self.ground(neg_global, neg_maps, audio))
        return outputs

    # ---- training --------------------------------------------------------------------------------------------------

    def loss_terms(self, outputs: Mapping[str, Tensor], batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """CE(answer) and, when match outputs exist, match_weight · CE(match) (their sum is `loss`)."""
        terms = {"answer": F.cross_entropy(outputs["answer"], batch["answer"].long())}
        if "match_pos" in outputs and "match_neg" in outputs:
            pos, neg = outputs["match_pos"].flatten(0, 1), outputs["match_neg"].flatten(0, 1)
            labels = torch.cat([torch.ones(len(pos), dtype=torch.long, device=pos.device),
                                torch.zeros(len(neg), dtype=torch.long, device=neg.device)])
            terms["match"] = self.match_weight * F.cross_entropy(torch.cat([pos, neg]), labels)
        return terms

    def loss(self, outputs: Mapping[str, Tensor], batch: Mapping[str, Tensor]) -> Tensor:
        """L_AVQA = CE(answer) + 0.5 · CE(match) (match term only with negatives): a scalar."""
        return sum(self.loss_terms(outputs, batch).values())

    # ---- inference -------------------------------------------------------------------------------------------------

    @staticmethod
    def predict(outputs: Mapping[str, Tensor]) -> Tensor:
        """Answer index `[B]` int64 (numpy twin: `postprocess.avqa_predict`)."""
        return outputs["answer"].argmax(dim=-1)
