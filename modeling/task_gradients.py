"""Per-task gradients for the loss weightings that need them (PCGrad, GradNorm), outside `Trainer`'s backward.

`TaskGradients.backward` runs on every micro-batch of a step: for each task with labelled items it takes the
gradient of the task's partial loss on the *target* parameters (PCGrad: every trainable shared parameter;
GradNorm: the last shared layer) and adds it to a flat per-task buffer; the rest of the gradient goes through
an ordinary backward. `TaskGradients.finish` runs after the last micro-batch: it averages every gradient and
buffer over processes (the trainer bypasses DDP for these steps), then lets the strategy act: PCGrad writes the
projected sum into the shared parameters' gradients, GradNorm updates its task weights from the buffer norms.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from .loss_weighting import GradNormWeighting, PCGradWeighting, TaskWeighting


def all_reduce_mean_(tensors: Sequence[torch.Tensor], world_size: int) -> None:
    """Average tensors over processes in place (one flat collective); a no-op for one process."""
    if world_size <= 1 or not tensors:
        return
    flat = torch.cat([tensor.reshape(-1) for tensor in tensors])
    torch.distributed.all_reduce(flat)
    flat /= world_size
    offset = 0
    for tensor in tensors:
        tensor.copy_(flat[offset : offset + tensor.numel()].view_as(tensor))
        offset += tensor.numel()


def shared_and_other_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Trainable shared (backbone) parameters, and every other trainable parameter (heads, adapters)."""
    shared = [p for p in model.shared_parameters() if p.requires_grad]
    shared_ids = {id(p) for p in shared}
    return shared, [p for p in model.parameters() if p.requires_grad and id(p) not in shared_ids]


def gradnorm_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The last shared layer: the trainable backbone parameters of the highest-numbered encoder layer.

    Raises ValueError when the model has no trainable shared parameter (e.g. ``sharing="adapters"`` with every
    base weight frozen): GradNorm balances gradient norms on shared weights and has nothing to measure.
    """
    shared_ids = {id(p) for p in model.shared_parameters() if p.requires_grad}
    named = [(name, p) for name, p in model.named_parameters() if id(p) in shared_ids]
    if not named:
        raise ValueError(
            "--loss_weighting gradnorm needs trainable shared parameters, and this model has none (sharing="
            f"{getattr(model.config, 'sharing', '?')!r}, num_frozen_layers={getattr(model.config, 'num_frozen_layers', '?')}): "
            "every backbone weight is frozen or task-specific; use --loss_weighting uncertainty, dwa or static"
        )
    layered = [([int(part) for part in name.split(".") if part.isdigit()], p) for name, p in named]
    layered = [(numbers[-1], p) for numbers, p in layered if numbers]
    if layered:
        last = max(number for number, _ in layered)
        return [p for number, p in layered if number == last]
    return [p for _, p in named[-2:]]


class TaskGradients:
    """Per-task gradient buffers of one optimizer step for a PCGrad or GradNorm weighting."""

    def __init__(self, weighting: TaskWeighting, task_names: Sequence[str]):
        if not isinstance(weighting, (PCGradWeighting, GradNormWeighting)):
            raise TypeError(f"per-task gradients serve PCGrad and GradNorm, not {type(weighting).__name__}")
        self.weighting = weighting
        self.task_names = list(task_names)
        self.is_pcgrad = isinstance(weighting, PCGradWeighting)
        self.buffers: dict[str, torch.Tensor] = {}

    def targets(self, model: nn.Module) -> list[nn.Parameter]:
        return shared_and_other_parameters(model)[0] if self.is_pcgrad else gradnorm_parameters(model)

    def backward(
        self,
        model: nn.Module,
        partial: Mapping[str, torch.Tensor],
        weights: Mapping[str, float],
        local_counts: Mapping[str, torch.Tensor],
        total: torch.Tensor,
    ) -> None:
        """Accumulate this micro-batch's per-task gradients on the targets and back-propagate the rest.

        `total` is the weighted sum of the partial losses (graph anchor included): PCGrad back-propagates it
        into the non-shared parameters only (the shared ones get the projected sum in `finish`), GradNorm into
        everything.
        """
        targets = self.targets(model)
        for name in self.task_names:
            if float(local_counts.get(name, 0.0)) <= 0:
                continue
            # PCGrad projects the weighted task gradients; GradNorm measures the unweighted ones.
            task_loss = weights[name] * partial[name] if self.is_pcgrad else partial[name]
            gradients = torch.autograd.grad(task_loss, targets, retain_graph=True, allow_unused=True)
            flat = torch.cat(
                [(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(gradients, targets)]
            ).detach()
            if name in self.buffers:
                self.buffers[name] += flat
            else:
                self.buffers[name] = flat
        if not self.is_pcgrad:
            total.backward()
            return
        others = shared_and_other_parameters(model)[1]
        if others:
            torch.autograd.backward(total, inputs=others)

    def finish(
        self,
        model: nn.Module,
        active: Sequence[str] | None,
        step: int,
        step_losses: Callable[[], dict[str, float]],
        world_size: int,
    ) -> None:
        """After the last micro-batch: average gradients and buffers over processes, apply the strategy.

        `active` are the tasks with labelled items anywhere in the step (None: the tasks this process saw).
        """
        trainable = [p for p in model.parameters() if p.requires_grad]
        for parameter in trainable:
            if parameter.grad is None:
                parameter.grad = torch.zeros_like(parameter)
        all_reduce_mean_([p.grad for p in trainable], world_size)
        if active is None:
            active = [name for name in self.task_names if name in self.buffers]
        targets = self.targets(model)
        device = targets[0].device if targets else None
        for name in active:
            if name not in self.buffers:  # active on another process only: contributes zeros here
                self.buffers[name] = torch.zeros(sum(p.numel() for p in targets), device=device)
        buffers = {name: self.buffers[name] for name in active}
        all_reduce_mean_(list(buffers.values()), world_size)
        if self.is_pcgrad:
            combined = self.weighting.project(buffers, step)
            offset = 0
            for parameter in targets:
                count = parameter.numel()
                if combined is None:
                    parameter.grad.zero_()
                else:
                    parameter.grad.copy_(combined[offset : offset + count].view_as(parameter))
                offset += count
        else:
            norms = {name: float(buffer.norm()) for name, buffer in buffers.items()}
            self.weighting.update(norms, step_losses())
        self.buffers = {}
