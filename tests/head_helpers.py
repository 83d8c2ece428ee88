"""Shared set-up of the head tests: tiny widths, seeded AVE/AVQA heads and inputs, short optimiser runs on a fixed
batch, and the ONNX pre-flight check."""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from caeav.config import load_config
from caeav.model.heads.ave import AVEHead
from caeav.model.heads.avqa import QUESTION_MAX_LEN, AVQAHead

B, T, DV, DA = 2, 10, 256, 128  # tiny preset: pooled Swin / HTS-AT widths


def task_cfg(task: str, preset: str = "tiny", **head):
    cfg = load_config(preset, task).task
    return dataclasses.replace(cfg, head={**cfg.head, **head})


def make_ave(seed: int = 0, **head) -> AVEHead:
    torch.manual_seed(seed)
    return AVEHead(DV, DA, task_cfg("ave", **head))


def make_avqa(seed: int = 0, **head) -> AVQAHead:
    torch.manual_seed(seed)
    return AVQAHead(DV, DA, task_cfg("avqa", **head))


def features(b: int = B, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, T, DV, generator=g), torch.randn(b, T, DA, generator=g)


def ave_labels(b: int = B, seed: int = 2) -> torch.Tensor:
    """One-hot `[b, T, 29]` labels: one event class per clip on a random run of segments, background elsewhere."""
    g = torch.Generator().manual_seed(seed)
    target = torch.full((b, T), 28)
    for i in range(b):
        start = int(torch.randint(0, 5, (1,), generator=g))
        target[i, start:start + 4] = int(torch.randint(0, 28, (1,), generator=g))
    return F.one_hot(target, 29).float()


def avqa_inputs(b: int = B, hw: int = 2, seed: int = 3, negatives: str = "maps"):
    g = torch.Generator().manual_seed(seed)
    maps = torch.randn(b, T, DV, hw, hw, generator=g)
    f_a = torch.randn(b, T, DA, generator=g)
    question = torch.randint(1, 93, (b, QUESTION_MAX_LEN), generator=g)
    for row in range(b):  # <pad> at the end, as MUSIC-AVQA pads; 9, 10, 11... words so the pad counts differ
        question[row, 9 + row % (QUESTION_MAX_LEN - 8):] = 0
    inputs = {"f_v": maps.mean(dim=(-2, -1)), "f_a": f_a, "visual_maps": maps, "question": question}
    if negatives == "maps":
        inputs["visual_neg"] = torch.randn(b, T, DV, hw, hw, generator=g)
    elif negatives == "pooled":
        inputs["visual_neg"] = torch.randn(b, T, DV, generator=g)
    return inputs


def sgd_decreases(head, run, batch, steps: int = 8, lr: float = 0.05) -> tuple[float, float]:
    """Eval-mode loss before and after `steps` SGD steps in train mode on one fixed batch."""
    head.eval()
    with torch.no_grad():
        before = float(head.loss(run(), batch))
    opt = torch.optim.SGD([p for p in head.parameters() if p.requires_grad], lr=lr)
    head.train()
    for _ in range(steps):
        opt.zero_grad()
        loss = head.loss(run(), batch)
        assert torch.isfinite(loss)
        loss.backward()
        opt.step()
    head.eval()
    with torch.no_grad():
        after = float(head.loss(run(), batch))
    return before, after


def adam_loss_history(head, inputs, batch, steps: int, lr: float = 3e-3) -> list[float]:
    """Training-mode loss of `steps` Adam steps of `head(*inputs)` on one fixed batch (heads whose loss is a dict)."""
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    history = []
    for _ in range(steps):
        opt.zero_grad()
        loss = head.loss(head(*inputs), batch)["loss"]
        loss.backward()
        opt.step()
        history.append(loss.item())
    return history


def check_tensorrt_ops(graph, onnx):
    """The export pre-flight (TensorRT's ONNX operator table and its restrictions) finds nothing; returns the ops."""
    from caeav.export.preflight import check_model

    assert check_model(graph, "head") == []
    return {n.op_type for n in graph.graph.node}
