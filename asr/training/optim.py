"""Optimizer and learning-rate schedule built from :class:`TrainingConfig`."""

from __future__ import annotations

import math

import torch
from torch import nn

from asr.config import TrainingConfig


def build_optimizer(model: nn.Module, cfg: TrainingConfig) -> torch.optim.AdamW:
    """AdamW; biases, norms and embeddings' 1-D parameters get no weight decay (decaying them only hurts)."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.ndim >= 2 else no_decay).append(param)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=(0.9, 0.98), eps=1e-8)


def lr_factor(step: int, cfg: TrainingConfig) -> float:
    """Multiplier of the peak LR at ``step``: linear warm-up, then cosine / noam / constant decay."""
    warmup = max(cfg.warmup_steps, 1)
    if step < warmup:
        return (step + 1) / warmup
    if cfg.decay == "constant":
        return 1.0
    if cfg.decay == "noam":
        return math.sqrt(warmup / (step + 1))
    span = max(cfg.max_steps - warmup, 1)
    progress = min((step - warmup) / span, 1.0)
    return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainingConfig) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, cfg))
