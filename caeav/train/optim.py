"""The optimisation recipe of architecture.md §8.2: Adam (no weight decay) on the trainable parameters, StepLR per
epoch (`task.train.step_size` epochs, × `step_gamma`; step_size 0 = constant LR, the AVS scripts)."""

from __future__ import annotations

import torch

from caeav.config import TrainConfig


def build_optimizer(model: torch.nn.Module, train: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.Adam(params, lr=train.lr, weight_decay=0.0)


def build_scheduler(optimizer: torch.optim.Optimizer, train: TrainConfig):
    if train.step_size > 0:
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=train.step_size, gamma=train.step_gamma)
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=1.0)  # constant
