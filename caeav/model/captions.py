"""Caption projector: the shared caption self-attention "mapper" (P Eq. 15-16) and the modality bottlenecks.

Input: the frozen CLIP text tower's token sequences S_ori,v, S_ori,a `[B, L_c, D]` (one visual and one audio caption
per clip; `text_tower.py`). Output: v_cap `[B, L_c, C_v]`, a_cap `[B, L_c, C_a]`, still one per clip.

Follows the authors' code (architecture.md §5; AVE-NET:492-550, 1364-1371):
* S' = LN(S + Dropout(MHA(S, S, S))) with ONE set of parameters Θ_att for both captions (P Eq. 15-16); 8 heads,
  attention-map dropout 0.2 and output dropout 0.2 (`CaptionConfig.dropout`).
* bottleneck_m = Linear(D→48) → GELU → Linear(48→C_m), down: Kaiming normal (fan_in, relu), bias 0;
  up: weight 0, bias 0, so v_cap and a_cap are exactly 0 at initialisation.
* Where we differ: the paper (after Eq. 16) and the authors repeat the captions T times along the batch
  (`repeat_interleave`) before CASE; we return them per clip and CASE broadcasts them over the T frames
  (decisions D8: same numbers, T times less caption work and a smaller exported graph).

Paper size (D = 768, C_v = 1536, C_a = 768): mapper 2,363,904, bottlenecks 112,176 + 74,544 = 186,720 parameters.
"""

from __future__ import annotations

from torch import Tensor, nn

from caeav.config import CaptionConfig
from caeav.model.blocks import AttentionBlock

# The authors' parameter names (AVE-NET:1200-1204) -> ours, relative to CaptionProjector; see convert_authors_keys.
AUTHORS_KEY_PREFIXES = (
    ("mapper.mhatt.", "mapper.attention."),
    ("mapper.norm1.", "mapper.norm."),
    ("frame_adapter_v.", "bottleneck_v."),
    ("wav_adapter_a.", "bottleneck_a."),
)


class CaptionBottleneck(nn.Module):
    """Linear(D→bottleneck) → GELU → Linear(bottleneck→C_m) (the authors' `Adapter`, AVE-NET:519-550).

    The up projection starts at exactly zero (weight and bias), so the output is 0 until it trains.
    """

    def __init__(self, in_dim: int, bottleneck_dim: int, out_dim: int):
        super().__init__()
        self.down_proj = nn.Linear(in_dim, bottleneck_dim)
        self.activation = nn.GELU()
        self.up_proj = nn.Linear(bottleneck_dim, out_dim)
        nn.init.kaiming_normal_(self.down_proj.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(self.down_proj.bias)
        nn.init.zeros_(self.up_proj.weight)
        nn.init.zeros_(self.up_proj.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.up_proj(self.activation(self.down_proj(x)))


class CaptionProjector(nn.Module):
    """Shared caption mapper (P Eq. 15-16) + per-modality bottlenecks, applied once per clip.

    forward(vis_caption `[B, L_c, D]`, aud_caption `[B, L_c, D]`) → (v_cap `[B, L_c, C_v]`, a_cap `[B, L_c, C_a]`).
    """

    def __init__(self, cfg: CaptionConfig, dim_v: int, dim_a: int):
        super().__init__()
        self.mapper = AttentionBlock(cfg.text_dim, cfg.mapper_heads, attn_dropout=cfg.dropout, dropout=cfg.dropout)
        self.bottleneck_v = CaptionBottleneck(cfg.text_dim, cfg.bottleneck_dim, dim_v)
        self.bottleneck_a = CaptionBottleneck(cfg.text_dim, cfg.bottleneck_dim, dim_a)

    def forward(self, vis_caption: Tensor, aud_caption: Tensor) -> tuple[Tensor, Tensor]:
        v_cap = self.bottleneck_v(self.mapper(vis_caption))  # P Eq. 15, then the visual bottleneck
        a_cap = self.bottleneck_a(self.mapper(aud_caption))  # P Eq. 16 (same Θ_att), then the audio bottleneck
        return v_cap, a_cap


def convert_authors_keys(state_dict: dict) -> dict:
    """Rename the authors' caption parameters (`mapper.mhatt.*`, `mapper.norm1.*`, `frame_adapter_v.*`,
    `wav_adapter_a.*`) to CaptionProjector's names; other keys are dropped. Shapes are unchanged."""
    out = {}
    for key, value in state_dict.items():
        for old, new in AUTHORS_KEY_PREFIXES:
            if key.startswith(old):
                out[new + key[len(old):]] = value
    return out
