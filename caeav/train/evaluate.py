"""Evaluation with the exact benchmark metrics of `caeav.metrics` (numpy, on the model's raw outputs).

    metrics = evaluate(model, loader, cfg, device)      # {"score": ..., plus every number of the task's metric}

`score` is the number model selection maximises: AVE segment accuracy, AVVP segment-level Type@AV (the AVVP script's
selection rule), AVQA overall accuracy, AVS mIoU.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from caeav import metrics
from caeav.config import ModelConfig
from caeav.train.batches import model_inputs, to_device

SCORE_KEY = {"ave": "accuracy", "avvp": "segment_type_av", "avqa": "overall", "avs_s4": "miou", "avs_ms3": "miou"}


class _Collector:
    """Accumulates what one task's metric needs, batch by batch, then computes it."""

    def __init__(self, task: str):
        self.task = task
        self.parts: dict[str, list] = {}

    def add(self, **arrays) -> None:
        for key, value in arrays.items():
            self.parts.setdefault(key, []).append(value)

    def result(self) -> dict[str, float]:
        if not self.parts:
            raise ValueError("nothing was evaluated")
        task = self.task
        if task == "ave":
            out = {"accuracy": metrics.segment_accuracy(np.concatenate(self.parts["pred"]),
                                                        np.concatenate(self.parts["labels"]))}
        elif task == "avvp":
            scores = metrics.avvp_scores(*(np.concatenate(self.parts[k]) for k in ("so_a", "so_v", "gt_a", "gt_v")))
            out = {f"{level}_{k}": v for level, d in scores.items() for k, v in d.items()}
        elif task == "avqa":
            types = [t for chunk in self.parts["types"] for t in chunk]
            out = metrics.avqa_accuracy(np.concatenate(self.parts["pred"]), np.concatenate(self.parts["answer"]), types)
        else:
            videos = [(p, g) for pc, gc in zip(self.parts["pred"], self.parts["gt"]) for p, g in zip(pc, gc)]
            out = metrics.avs_scores(videos)
        out = {k: float(v) for k, v in out.items()}
        out["score"] = out[SCORE_KEY[task]]
        return out


def collect_batch(collector: _Collector, outputs: dict, batch: dict, cfg: ModelConfig) -> None:
    """Move one batch's outputs and ground truth into `collector` as numpy arrays."""
    task = cfg.task.name
    o = {k: v.detach().float().cpu().numpy() for k, v in outputs.items() if isinstance(v, torch.Tensor)}
    if task == "ave":
        if "is_event" in o:
            pred = metrics.predict_segments(o["is_event"], o["event"])
        else:
            pred = o["segment_logits"].argmax(axis=-1)
        collector.add(pred=pred, labels=batch["labels"].cpu().numpy())
    elif task == "avvp":
        so = [metrics.binarize(g, a, v) for g, a, v in zip(o["global_prob"], o["a_frame_prob"], o["v_frame_prob"])]
        collector.add(so_a=np.stack([s[0] for s in so]), so_v=np.stack([s[1] for s in so]),
                      gt_a=batch["gt_audio"].cpu().numpy(), gt_v=batch["gt_visual"].cpu().numpy())
    elif task == "avqa":
        collector.add(pred=o["answer"].argmax(axis=1), answer=batch["answer"].cpu().numpy(),
                      types=[(m, k) for m, k in zip(batch["modality"], batch["kind"])])
    else:
        logits = outputs["masks"].detach().float()  # [B*T, 1, M, M]
        gt = batch["masks"].float().cpu()
        if logits.shape[-2:] != gt.shape[-2:]:
            logits = F.interpolate(logits, size=tuple(gt.shape[-2:]), mode="bilinear", align_corners=False)
        pred = logits.reshape(gt.shape[0], -1, *gt.shape[-2:]).cpu().numpy()
        collector.add(pred=list(pred[:, : gt.shape[1]]), gt=list(gt.numpy()))


@torch.no_grad()
def evaluate(model, loader, cfg: ModelConfig, device: torch.device, autocast: Optional[Callable] = None,
             progress: Optional[Callable[[int], None]] = None) -> dict[str, float]:
    """Run `model` (unwrapped, no DDP) over `loader` in eval mode and return the task's metrics."""
    was_training = model.training
    model.eval()
    collector = _Collector(cfg.task.name)
    try:
        for batch in loader:
            batch = to_device(batch, device)
            with autocast() if autocast is not None else contextlib.nullcontext():
                outputs = model(**model_inputs(batch, cfg, training=False))
            collect_batch(collector, outputs, batch, cfg)
            if progress is not None:
                progress(len(batch["frames"]))
    finally:
        model.train(was_training)
    return collector.result()
