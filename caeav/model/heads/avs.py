"""AVS head: AVSBench's TPAVI decoder on multi-scale Swin features (architecture.md §7.4; AVS-NET:1141-1584).

Inputs: `visual_stages`, the S = 4 per-stage Swin features `[B·T, L_s, C_s]` captured before merging and *before*
CASE (stage 3 passed through Swin's final norm; `paper`: grids 48/24/12/6, dims 192/384/768/1536), and the audio
`[B, T, C_a]` = token mean of CASE's audio output (the decoder reads no CASE visual output, architecture.md §9.17).
T = `task.segments` (5). Output: mask logits `[B·T, 1, M, M]`, M = `mask_size` (default `task.input_size`: 224).

    x_s = bicubic_resize(Linear(C_s→D)(stage s) as a D×g×g map, M / (4·2^s))      (56/28/14/7 for M = 224)
    a   = Linear(C_a→A)(audio)                                                   (A = 128)
    x, a = AVSTemporalAttention(x, a)                                            (gates, γ = 0.05)
    x_s, a_fea_s = TPAVI_s(x_s, a)                                               (stages in `tpavi_stages`)
    d = path_S(x_S);  d = path_s(d, x_s) for s = S−1 … 1;  masks = output_conv(d)  (FeatureFusionBlocks, ×2 each)
    output_conv = Conv3×3(D→128) → ×2 bilinear → Conv3×3(128→32) → ReLU → Conv1×1(32→1)

Blocks and their export notes are in `caeav.model.heads.avs_blocks`. Unused parts of the authors' model are not built
(the PVT-v2-b5 encoder, the `conv1-4` classifiers, the `x*_linear` projections, the cross-modal decoders of
TemporalAttention, the skip unit `path4.resConfUnit1` of the deepest fusion block): none reaches an output.

Loss (AVSBench `loss.py`, the AVMoE scripts' flags):
* S4 (`loss_frames` = "first"): BCE on the first frame of each clip (train clips carry one mask).
* MS3 (`loss_frames` = "all", `lambda_1` = 0.5): BCE over all T frames + λ₁ · masked-AV KL, averaged over
  `sa_stages`: per frame, v = mean_hw(relu(x_s) ⊙ σ(avgpool_{H_s×W_s}(mask logits))), a = a_fea_s;
  KL(softmax(a) ‖ softmax(v)) summed over frames and channels (`F.kl_div(..., reduction="sum")`; features not
  normalised, masks not thresholded: `--kl_flag` without `--norm_fea_flag` / `--threshold_flag`). relu(x_s): the
  decoder's in-place ReLU rectifies the maps before the authors' loss reads them.
BCE is computed from logits (`binary_cross_entropy_with_logits`), equal to the authors' BCELoss(σ(·)) except where σ
saturates in float32 (|logit| ≳ 17), where theirs clamps log(0) at −100. The AVMoE load-balancing term (MS3 weight 0.01)
is the encoder's and is added by the caller.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from caeav.config import ConfigError, TaskConfig
from caeav.model.heads.avs_blocks import TPAVI, AVSTemporalAttention, FeatureFusionBlock, Upsample2x, resize_bicubic
from caeav.model.heads.head_config import head_options

AVS_HEAD_DEFAULTS = {
    "dim": 256,
    "audio_dim": 128,
    "temporal_dim": 256,
    "temporal_ffn": 1024,
    "temporal_heads": 4,
    "temporal_gamma": 0.05,
    "tpavi_stages": [0, 1, 2, 3],
    "out_channels": [128, 32],
    "mask_size": None,
    "loss_frames": "first",
    "lambda_1": 0.0,
    "sa_stages": [0, 1, 2, 3],
}


class AVSHead(nn.Module):
    """forward(visual_stages, audio) → {"masks" `[BT,1,M,M]` logits, "v_map_s" `[BT,D,·,·]`, "a_fea_s" `[B,T,D]`}."""

    kind = "avs"
    export_outputs = ("masks",)

    def __init__(self, dim_v: Sequence[int], dim_a: int, cfg: TaskConfig):
        super().__init__()
        o = head_options(cfg.head, AVS_HEAD_DEFAULTS, self.kind)
        self.options, self.segments = o, int(cfg.segments)
        stages = len(dim_v)
        self.mask_size = int(o["mask_size"] or cfg.input_size)
        if self.mask_size % (4 * 2 ** (stages - 1)):
            raise ConfigError(f"AVS mask size {self.mask_size} must be divisible by {4 * 2 ** (stages - 1)}")
        self.sizes = [self.mask_size // (4 * 2**s) for s in range(stages)]
        self.tpavi_stages = sorted(int(s) for s in o["tpavi_stages"])
        self.sa_stages = sorted(int(s) for s in o["sa_stages"])
        if o["loss_frames"] not in ("first", "all"):
            raise ConfigError(f"task.head.loss_frames must be 'first' (S4) or 'all' (MS3), got {o['loss_frames']!r}")
        if any(not 0 <= s < stages for s in self.tpavi_stages):
            raise ConfigError(f"task.head.tpavi_stages {self.tpavi_stages} must lie in 0..{stages - 1}")
        if float(o["lambda_1"]) > 0 and not set(self.sa_stages) <= set(self.tpavi_stages):
            raise ConfigError("task.head.sa_stages must be TPAVI stages (the masked-AV loss reads TPAVI's audio)")
        d, a_dim = int(o["dim"]), int(o["audio_dim"])
        for s, c in enumerate(dim_v):
            setattr(self, f"x{s + 1}_linear_", nn.Linear(int(c), d))
        self.audio_linear = nn.Linear(dim_a, a_dim)
        self.temporal_attn = AVSTemporalAttention(
            d, a_dim, self.segments, dim=int(o["temporal_dim"]), heads=int(o["temporal_heads"]),
            ffn_dim=int(o["temporal_ffn"]), stages=stages, gamma=float(o["temporal_gamma"]))
        for s in self.tpavi_stages:
            setattr(self, f"tpavi_b{s + 1}", TPAVI(d, a_dim, self.segments))
        for s in range(stages):
            setattr(self, f"path{s + 1}", FeatureFusionBlock(d, skip=s < stages - 1))
        mid, low = (int(c) for c in o["out_channels"])
        self.output_conv = nn.Sequential(
            nn.Conv2d(d, mid, kernel_size=3, padding=1), Upsample2x(), nn.Conv2d(mid, low, kernel_size=3, padding=1),
            nn.ReLU(), nn.Conv2d(low, 1, kernel_size=1))

    def forward(self, visual_stages: Sequence[Tensor], audio: Tensor) -> dict:
        """visual_stages: S tensors `[BT, L_s, C_s]` (square grids); audio `[B, T, C_a]`."""
        maps = []
        for s, x in enumerate(visual_stages):
            grid = math.isqrt(x.shape[1])  # static shape
            x = getattr(self, f"x{s + 1}_linear_")(x)  # [BT, L, D]
            x = x.transpose(1, 2).reshape(-1, x.shape[-1], grid, grid)
            maps.append(resize_bicubic(x, self.sizes[s]))
        maps, audio = self.temporal_attn(maps, self.audio_linear(audio))  # audio: [BT, A]
        out = {}
        for s in self.tpavi_stages:
            maps[s], out[f"a_fea_{s}"] = getattr(self, f"tpavi_b{s + 1}")(maps[s], audio)
        last = len(maps) - 1
        x = getattr(self, f"path{last + 1}")(maps[last])
        for s in range(last - 1, -1, -1):
            x = getattr(self, f"path{s + 1}")(x, maps[s])
        out["masks"] = self.output_conv(x)
        for s, m in enumerate(maps):
            out[f"v_map_{s}"] = F.relu(m)
        return out

    def loss(self, outputs: Mapping[str, Tensor], batch: Mapping[str, Tensor]) -> dict:
        """batch["masks"]: 0/1 ground truth `[B, T_m, M, M]` (or `[B, T_m, 1, M, M]`); T_m = 1 allowed for S4."""
        o = self.options
        return avs_loss(outputs, batch["masks"], self.segments, o["loss_frames"], float(o["lambda_1"]), self.sa_stages)

    def predict(self, outputs: Mapping[str, Tensor]) -> dict:
        """Torch version of `postprocess_avs.avs_predict`: {"masks": 0/1 uint8 `[B, T, M, M]`} (logit > 0)."""
        logits = outputs["masks"]
        return {"masks": (logits > 0).to(torch.uint8).reshape(-1, self.segments, logits.shape[-2], logits.shape[-1])}


def avs_loss(outputs: Mapping[str, Tensor], masks: Tensor, segments: int, loss_frames: str = "first",
             lambda_1: float = 0.0, sa_stages: Sequence[int] = ()) -> dict:
    """{"loss", "bce", "masked_av"} (module docstring), in float32."""
    logits = outputs["masks"].float()  # [BT, 1, M, M]
    h, w = logits.shape[-2:]
    gt = masks.float()
    if gt.dim() == 5:
        gt = gt.squeeze(2)
    if gt.dim() != 4 or tuple(gt.shape[-2:]) != (h, w):
        raise ValueError(f"ground-truth masks must be [B, T_m, {h}, {w}] as the predictions, got {tuple(masks.shape)}")
    pred = logits.reshape(-1, segments, h, w)
    if loss_frames == "first":
        bce = F.binary_cross_entropy_with_logits(pred[:, 0], gt[:, 0])
    else:
        if gt.shape[1] != segments:
            raise ValueError(f"loss over all frames needs {segments} masks per clip, got {gt.shape[1]}")
        bce = F.binary_cross_entropy_with_logits(pred, gt)
    masked_av = logits.new_zeros(())
    if lambda_1 > 0 and sa_stages:
        for s in sa_stages:
            v_map = outputs[f"v_map_{s}"].float()  # [BT, D, H_s, W_s]
            a_fea = outputs[f"a_fea_{s}"].float().reshape(-1, v_map.shape[1])  # [BT, D]
            weight = torch.sigmoid(F.adaptive_avg_pool2d(logits, v_map.shape[-2:]))
            v_fea = (v_map * weight).mean(dim=(-2, -1))
            kl = F.kl_div(F.log_softmax(v_fea, dim=-1), F.softmax(a_fea, dim=-1), reduction="sum")
            masked_av = masked_av + kl
        masked_av = masked_av / len(sa_stages)
    return {"loss": bce + lambda_1 * masked_av, "bce": bce, "masked_av": masked_av}
