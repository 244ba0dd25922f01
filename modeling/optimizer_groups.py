"""Optimizer parameter groups of `MultiTaskTrainer`: the heads at their own learning rate, learned loss weights in a
group of their own (``--head_learning_rate``, ``--uncertainty_learning_rate``)."""

from __future__ import annotations

from typing import Iterable


def move_to_head_groups(optimizer, head_ids: set[int], rate: float) -> None:
    """Move the head parameters of every optimizer group to a copy of that group with learning rate `rate`."""
    for group in list(optimizer.param_groups):
        moved = [p for p in group["params"] if id(p) in head_ids]
        if moved:
            group["params"] = [p for p in group["params"] if id(p) not in head_ids]
            optimizer.add_param_group({**{k: v for k, v in group.items() if k != "params"}, "params": moved, "lr": rate})


def add_loss_weight_group(optimizer, parameters: Iterable, rate: float | None) -> None:
    """Learned loss weights (uncertainty weighting) the optimizer does not hold yet: one group without weight decay,
    at `rate` (None: the optimizer's default rate)."""
    known = {id(p) for group in optimizer.param_groups for p in group["params"]}
    extra = [p for p in parameters if p.requires_grad and id(p) not in known]
    if extra:
        group = {"params": extra, "weight_decay": 0.0}
        if rate is not None:
            group["lr"] = rate
        optimizer.add_param_group(group)
