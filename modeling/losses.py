"""The masked per-task loss of `MultiTaskModel`, shared by the model's forward pass and the trainer's evaluation.

This file is copied next to every saved checkpoint (``trust_remote_code`` loading, through the model's relative
import): it imports only torch and its sibling ``vocabulary.py``.
"""

import torch
import torch.nn.functional as F

from .vocabulary import DOCUMENT, IGNORE_INDEX, SINGLE_LABEL


def masked_task_loss_sum(
    task: dict,
    logits: torch.Tensor,
    target,
    class_weights: torch.Tensor | None = None,
    pos_weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of the per-example (span tasks: per-mention) losses over the labelled rows, and their count.

    Single-label: cross-entropy (optionally class-weighted) over rows whose class id is not ``IGNORE_INDEX``.
    Multi-label: binary cross-entropy (optionally with ``pos_weight``) averaged over the known labels of each
    row (entries equal to ``IGNORE_INDEX`` are unknown); rows with no known label are unlabelled.

    The sum stays connected to `logits` even when nothing is labelled (``+ logits.sum() * 0``), so every head
    takes part in the graph. Computes in at least float32 (bf16/fp16 logits are upcast; float64 stays).
    Raises ValueError naming the task when `target` has the wrong shape or class ids.
    """
    name, num_labels = task["name"], len(task["labels"])
    target = torch.as_tensor(target, device=logits.device)
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    rows = logits.shape[0]
    what = "example" if task["level"] == DOCUMENT else "mention"
    anchor = logits.sum() * 0.0
    if task["problem_type"] == SINGLE_LABEL:
        target = target.long()
        if target.shape != (rows,):
            raise ValueError(
                f"labels[{name!r}]: expected shape [{rows}] (one class id per {what}, -100 = none), "
                f"got {tuple(target.shape)}"
            )
        labelled = target != IGNORE_INDEX
        if bool(((target < 0) & labelled).any() or (target >= num_labels).any()):
            raise ValueError(f"labels[{name!r}]: class ids must be in [0, {num_labels}) or -100")
        per_example = F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction="none")
        if class_weights is not None:
            per_example = per_example * class_weights.to(logits.device, logits.dtype)[target.clamp_min(0)]
        per_example = per_example * labelled
        return per_example.sum() + anchor, labelled.sum().to(logits.dtype)
    target = target.to(logits.dtype)
    if target.shape != (rows, num_labels):
        raise ValueError(
            f"labels[{name!r}]: expected shape [{rows}, {num_labels}] (multi-hot per {what}, a row of -100 "
            f"= none), got {tuple(target.shape)}"
        )
    known = target != IGNORE_INDEX
    if bool((known & ((target < 0) | (target > 1))).any()):
        raise ValueError(f"labels[{name!r}]: multi-hot values must be in [0, 1] or -100 (unknown)")
    per_class = F.binary_cross_entropy_with_logits(
        logits,
        torch.where(known, target, torch.zeros_like(target)),
        reduction="none",
        pos_weight=None if pos_weight is None else pos_weight.to(logits.device, logits.dtype),
    )
    known_labels = known.sum(dim=1)
    per_example = (per_class * known).sum(dim=1) / known_labels.clamp_min(1)
    return per_example.sum() + anchor, (known_labels > 0).sum().to(logits.dtype)


def masked_task_loss(task: dict, logits: torch.Tensor, target, **loss_options) -> torch.Tensor | None:
    """Mean of `masked_task_loss_sum` over the labelled rows; None when no row is labelled."""
    loss_sum, count = masked_task_loss_sum(task, logits, target, **loss_options)
    return loss_sum / count if float(count) > 0 else None


def label_counts(tasks, labels) -> list[float]:
    """Labelled rows (examples / mentions) per task in a batch's ``labels`` dict, in the order of `tasks`: the
    counts `masked_task_loss_sum` divides by (a multi-label row counts when any of its labels is known)."""
    counts = []
    for task in tasks:
        target = (labels or {}).get(task["name"])
        if target is None or target.numel() == 0:
            counts.append(0.0)
        elif target.dim() == 2:
            counts.append(float((target != IGNORE_INDEX).any(dim=-1).sum()))
        else:
            counts.append(float((target != IGNORE_INDEX).sum()))
    return counts
