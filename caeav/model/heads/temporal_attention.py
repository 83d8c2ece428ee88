"""CMBS's TemporalAttention front end of the AVE head (architecture.md §7.1; AVE-NET:182-255, CMBS `nets/models.py`).

Origin: Xia & Zhao, "Cross-Modal Background Suppression for Audio-Visual Event Localization", CVPR 2022. The CAE-AV
authors run it on the pooled CASE features f_v `[B, T, C_v]`, f_a `[B, T, C_a]`:

1. a = Linear(C_a→128)(f_a);  v = Dropout_0.2(ReLU(Linear(C_v→512)(f_v))).
2. BiLSTMs (one layer): audio 128 → 2·(d/2) = d; visual 512 → 2·d.
3. video_kv = Enc_v(Linear(2d→d)(v_rnn)) (2 layers), audio_kv = Enc_a(Linear(d→d)(a_rnn)) (2 layers).
4. audio_q = Dec_a(Linear(d→d)(a_rnn), memory=video_kv), video_q = Dec_v(Linear(2d→d)(v_rnn), memory=audio_kv)
   (1 layer each). A decoder layer attends over concat_time(memory, query) (2T steps) and never uses its self-attention.
5. Gates g_a = σ(Linear(d→1)(audio_kv)), g_v = σ(Linear(d→1)(video_kv)) per step;
   video_q ← video_q·(1 + 0.1·g_a), audio_q ← audio_q·(1 + 0.1·g_v).

All transformer layers are post-norm (LN(x + Dropout(sublayer(x)))), 4 heads, FFN 1024 with ReLU, dropout 0.1.
Differences from the authors' code, none of which changes a number:

* Tensors stay batch-first `[B, T, d]` (the authors go time-major `[T, B, d]`); outputs are `[B, T, d]`.
* Attention is `PackedMultiheadAttention`: the parameter layout of `nn.MultiheadAttention` (`in_proj_weight`,
  `in_proj_bias`, `out_proj`), written out as MatMul/Softmax so the ONNX graph holds no `Attention` node at any opset
  (decisions D10, as `caeav.model.blocks`).
* The LSTMs have no `dropout=0.2` argument: with one layer PyTorch ignores it (and warns).

Never-called layers (`keep_unused_layers`, default true). The authors' wrapper modules register a *template* layer
(`encoder_layer` / `decoder_layer`) and deep-copy it into the layer stack, so the template holds parameters that no
forward pass uses; and each decoder layer registers a self-attention it never calls. Keeping them reproduces the
parameter count of architecture.md §10 (12,071,554) and lets the authors' state dict load strictly; the forward pass
is the same either way. Unused: 2 encoder templates (2 × 789,760) + 2 decoder templates (2 × 1,052,928) = 3,685,376
(the "~3.69 M" of §10) plus the 2 self-attentions of the used decoder layers (2 × 263,168) = 4,211,712 in all; without
them TemporalAttention has 7,859,842 parameters. The stacked layers are deep copies of one template, as in the
authors' code, so they start from identical weights either way.

Export: static loops over layers, no data-dependent control flow; the LSTMs export as ONNX `LSTM` (layout 0,
bidirectional, default activations) which TensorRT parses (FP32/FP16/BF16; no INT8 LSTM).
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class PackedMultiheadAttention(nn.Module):
    """`nn.MultiheadAttention` (batch-first, no masks) with the same parameters, written out as MatMul/Softmax.

    q `[N, Lq, D]`, k/v `[N, Lk, D]` → `[N, Lq, D]`. Init as `nn.MultiheadAttention`: Xavier-uniform packed q/k/v
    projection, zero biases, default-initialised output Linear. Dropout on the attention map.
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.head_dim = dim // heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.in_proj_bias)
        nn.init.zeros_(self.out_proj.bias)

    def _split(self, x: Tensor) -> Tensor:  # [N, L, D] -> [N, heads, L, head_dim]
        return x.unflatten(-1, (self.heads, self.head_dim)).transpose(1, 2)

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        D = self.heads * self.head_dim  # slices of the packed projection (constant-folded in ONNX, unlike Split)
        w, b = self.in_proj_weight, self.in_proj_bias
        q = self._split(F.linear(q, w[:D], b[:D]))
        k = self._split(F.linear(k, w[D:2 * D], b[D:2 * D]))
        v = self._split(F.linear(v, w[2 * D:], b[2 * D:]))
        scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(self.head_dim)  # [N, h, Lq, Lk]
        attn = self.dropout(torch.softmax(scores, dim=-1))
        return self.out_proj(torch.matmul(attn, v).transpose(1, 2).flatten(2))


class EncoderLayer(nn.Module):
    """Post-norm transformer encoder layer (CMBS `EncoderLayer`): self-attention, then FFN with ReLU."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float = 0.1):
        super().__init__()
        self.self_attn = PackedMultiheadAttention(dim, heads, dropout)
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def _ffn(self, x: Tensor) -> Tensor:
        x = self.norm1(x)
        return self.norm2(x + self.dropout2(self.linear2(self.dropout(F.relu(self.linear1(x))))))

    def forward(self, x: Tensor) -> Tensor:  # [B, T, d]
        return self._ffn(x + self.dropout1(self.self_attn(x, x, x)))


class DecoderLayer(EncoderLayer):
    """Post-norm CMBS `DecoderLayer`: the query attends over concat_time(memory, query), then FFN.

    `self_attn` is registered (inherited) but never called, as in the authors' code; it is skipped when the layer is
    built with `keep_self_attn=False`.
    """

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float = 0.1, keep_self_attn: bool = True):
        super().__init__(dim, heads, ffn_dim, dropout)
        self.multihead_attn = PackedMultiheadAttention(dim, heads, dropout)
        if not keep_self_attn:
            del self.self_attn

    def forward(self, x: Tensor, memory: Tensor) -> Tensor:  # x [B, T, d], memory [B, T_m, d]
        memory = torch.cat([memory, x], dim=1)
        return self._ffn(x + self.dropout1(self.multihead_attn(x, memory, memory)))


class LayerStack(nn.Module):
    """`num_layers` deep copies of one template layer, applied in order (CMBS `Encoder` / `Decoder`)."""

    def __init__(self, template: nn.Module, num_layers: int):
        super().__init__()
        self.layers = nn.ModuleList([copy.deepcopy(template) for _ in range(num_layers)])

    def forward(self, x: Tensor, *memory: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x, *memory)
        return x


class TemporalEncoder(nn.Module):
    """CMBS `InternalTemporalRelationModule`: Linear(in→d), then a stack of encoder layers over the T segments."""

    def __init__(self, input_dim: int, dim: int, heads: int, ffn_dim: int, num_layers: int, dropout: float,
                 keep_unused: bool = True):
        super().__init__()
        template = EncoderLayer(dim, heads, ffn_dim, dropout)
        if keep_unused:
            self.encoder_layer = template  # registered but never called (authors' layout; see module docstring)
        self.encoder = LayerStack(template, num_layers)
        self.affine_matrix = nn.Linear(input_dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.encoder(self.affine_matrix(x))


class CrossModalDecoder(nn.Module):
    """CMBS `CrossModalRelationAttModule`: Linear(in→d) on the query, then decoder layers reading `memory`."""

    def __init__(self, input_dim: int, dim: int, heads: int, ffn_dim: int, num_layers: int, dropout: float,
                 keep_unused: bool = True):
        super().__init__()
        template = DecoderLayer(dim, heads, ffn_dim, dropout, keep_self_attn=keep_unused)
        if keep_unused:
            self.decoder_layer = template  # registered but never called (authors' layout; see module docstring)
        self.decoder = LayerStack(template, num_layers)
        self.affine_matrix = nn.Linear(input_dim, dim)

    def forward(self, query: Tensor, memory: Tensor) -> Tensor:
        return self.decoder(self.affine_matrix(query), memory)


class BiLSTMEncoder(nn.Module):
    """CMBS `RNNEncoder`: one bidirectional LSTM per modality (batch-first). Audio → d, visual → 2d channels."""

    def __init__(self, audio_dim: int, video_dim: int, dim: int):
        super().__init__()
        if dim % 2:
            raise ValueError(f"TemporalAttention width {dim} must be even (audio BiLSTM has {dim}/2 units per side)")
        self.audio_rnn = nn.LSTM(audio_dim, dim // 2, num_layers=1, batch_first=True, bidirectional=True)
        self.visual_rnn = nn.LSTM(video_dim, dim, num_layers=1, batch_first=True, bidirectional=True)

    def forward(self, audio: Tensor, visual: Tensor) -> tuple[Tensor, Tensor]:
        return self.audio_rnn(audio)[0], self.visual_rnn(visual)[0]


class TemporalAttention(nn.Module):
    """f_v `[B, T, C_v]`, f_a `[B, T, C_a]` → (video_q, audio_q), each `[B, T, dim]` (steps 1-5 of the module doc)."""

    def __init__(self, dim_v: int, dim_a: int, dim: int = 256, video_fc_dim: int = 512, audio_fc_dim: int = 128,
                 heads: int = 4, ffn_dim: int = 1024, encoder_layers: int = 2, decoder_layers: int = 1,
                 dropout: float = 0.1, feature_dropout: float = 0.2, gate_gamma: float = 0.1,
                 keep_unused: bool = True):
        super().__init__()
        self.gate_gamma = gate_gamma
        self.v_fc = nn.Linear(dim_v, video_fc_dim)
        self.a_fc = nn.Linear(dim_a, audio_fc_dim)
        self.relu = nn.ReLU()
        self.dropout = nn.Dropout(feature_dropout)
        layer = dict(dim=dim, heads=heads, ffn_dim=ffn_dim, dropout=dropout, keep_unused=keep_unused)
        self.video_encoder = TemporalEncoder(2 * dim, num_layers=encoder_layers, **layer)
        self.video_decoder = CrossModalDecoder(2 * dim, num_layers=decoder_layers, **layer)
        self.audio_encoder = TemporalEncoder(dim, num_layers=encoder_layers, **layer)
        self.audio_decoder = CrossModalDecoder(dim, num_layers=decoder_layers, **layer)
        self.audio_visual_rnn_layer = BiLSTMEncoder(audio_fc_dim, video_fc_dim, dim)
        self.audio_gated = nn.Sequential(nn.Linear(dim, 1), nn.Sigmoid())
        self.video_gated = nn.Sequential(nn.Linear(dim, 1), nn.Sigmoid())

    def forward(self, f_v: Tensor, f_a: Tensor) -> tuple[Tensor, Tensor]:
        audio = self.a_fc(f_a)  # no activation on the audio side (authors' code)
        visual = self.dropout(self.relu(self.v_fc(f_v)))
        audio_rnn, visual_rnn = self.audio_visual_rnn_layer(audio, visual)  # [B, T, d], [B, T, 2d]
        video_kv = self.video_encoder(visual_rnn)
        audio_q = self.audio_decoder(audio_rnn, video_kv)
        audio_kv = self.audio_encoder(audio_rnn)
        video_q = self.video_decoder(visual_rnn, audio_kv)
        audio_gate = self.audio_gated(audio_kv)  # [B, T, 1]
        video_gate = self.video_gated(video_kv)
        video_q = video_q + audio_gate * video_q * self.gate_gamma
        audio_q = audio_q + video_gate * audio_q * self.gate_gamma
        return video_q, audio_q
