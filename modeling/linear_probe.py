"""Linear-probe initialisation of the task heads (LP-FT): fit each head as a logistic regression on the
backbone's pooled features before fine-tuning.

Why: a fresh head trained by a few hundred Adam steps next to the encoder starts from noise, and on a small
training set (SemEval-2025 Task 10: 255 training articles, 94 subnarratives) it never gets as far as a
regularised logistic regression on the same frozen features does (issue 14: the frozen MiniLM probe matched the
fine-tuned model). Fitting the heads first and then fine-tuning at a small rate is LP-FT (Kumar et al., 2022,
"Fine-Tuning can Distort Pretrained Features and Underperform Out-of-Distribution"), which also keeps the
pretrained features intact under distribution shift, the setting this library is for.

What is fitted: for every task whose head is a single linear layer (no ``head_hidden_size``), the head's input
exactly as the model computes it in eval mode (document pooling, span pooling; through the frozen-prefix cache
when the rows carry it). Document tasks on windowed texts are fitted per document on the mean of the windows'
features, which, with a linear head and ``window_aggregation="mean"``, is exactly the model's document score.
Features are standardised and the scaler is folded into the weights. scikit-learn's `LogisticRegression`
(L2, strength ``1 / C``): one-vs-rest for multi-label tasks (a label without a training positive gets a zero
weight and a bias of ``log(1 / (2 n))``), multinomial for single-label tasks.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np
import torch
from torch.utils.data import DataLoader

from .vocabulary import DOCUMENT, IGNORE_INDEX, MULTI_LABEL

logger = logging.getLogger(__name__)


def _head_inputs(model, dataloader: Iterable, task_names: list[str]) -> dict[str, dict[str, list]]:
    """Per task: the head's input rows, their labels and (document tasks) the document of each row."""
    captured: dict[str, list[torch.Tensor]] = {}
    hooks = [
        model.heads[name].register_forward_pre_hook(lambda _module, args, name=name: captured.__setitem__(name, args[0]))
        for name in task_names
    ]
    collected = {name: {"features": [], "labels": [], "documents": []} for name in task_names}
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for batch in dataloader:
                labels = batch.pop("labels", None) or {}
                inputs = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
                captured.clear()
                model(**inputs)
                for name in task_names:
                    if name not in labels:
                        continue
                    collected[name]["features"].append(captured[name].float().cpu())
                    collected[name]["labels"].append(labels[name].cpu())
                    documents = batch.get("document_index")
                    if documents is not None:
                        collected[name]["documents"].append(documents.cpu())
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return collected


def _labelled(labels: torch.Tensor, problem_type: str) -> torch.Tensor:
    """Rows with a known label: for a multi-label task, at least one known entry (each label is then fitted on the
    rows where it is known, as the loss counts them)."""
    if problem_type == MULTI_LABEL:
        return (labels != IGNORE_INDEX).any(dim=-1)
    return labels != IGNORE_INDEX


def _per_document(features: np.ndarray, labels: np.ndarray, documents: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean feature of each document's windows and the document's label (windows all carry it)."""
    unique, inverse = np.unique(documents, return_inverse=True)
    sums = np.zeros((len(unique), features.shape[1]))
    np.add.at(sums, inverse, features)
    counts = np.bincount(inverse, minlength=len(unique))[:, None]
    first = np.array([np.flatnonzero(inverse == position)[0] for position in range(len(unique))])
    return sums / counts, labels[first]


def _fit(features: np.ndarray, labels: np.ndarray, problem_type: str, num_labels: int, c: float, seed: int):
    """Weights ``[C, H]`` and bias ``[C]`` of a standardised logistic regression, the scaler folded in."""
    from sklearn.linear_model import LogisticRegression

    mean = features.mean(axis=0)
    scale = features.std(axis=0)
    scale[scale < 1e-8] = 1.0
    standardised = (features - mean) / scale
    weight = np.zeros((num_labels, features.shape[1]))
    bias = np.full(num_labels, np.log(1.0 / (2 * len(features))))  # "almost never" for classes never seen
    if problem_type == MULTI_LABEL:
        for label in range(num_labels):
            known = labels[:, label] != IGNORE_INDEX
            target = labels[known, label] > 0.5
            if target.all() or not target.any():  # also when the label is known on no row: "almost never"
                bias[label] = -bias[label] if target.size and target.all() else bias[label]
                continue
            fitted = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(standardised[known], target)
            weight[label], bias[label] = fitted.coef_[0], fitted.intercept_[0]
    else:
        present = np.unique(labels)
        if len(present) < 2:
            bias[present] = 0.0
        else:
            fitted = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(standardised, labels)
            if len(present) == 2:  # scikit-learn fits one binary model: logit of class 1 vs class 0
                weight[present[1]], bias[present[1]] = fitted.coef_[0] / 2, fitted.intercept_[0] / 2
                weight[present[0]], bias[present[0]] = -fitted.coef_[0] / 2, -fitted.intercept_[0] / 2
            else:
                weight[present], bias[present] = fitted.coef_, fitted.intercept_
    folded_weight = weight / scale[None, :]
    return folded_weight, bias - folded_weight @ mean


def fit_linear_heads(model, dataset, collator, c: float = 0.05, batch_size: int = 32, seed: int = 0) -> dict[str, dict]:
    """Set every single-layer head of `model` to a logistic regression fitted on `dataset`'s pooled features.

    Args:
        model: a `MultiTaskModel`.
        dataset: encoded training rows (a `datasets.Dataset`, or any sequence of rows that `collator` batches),
            with their frozen-prefix states when cached.
        collator: builds model batches from rows (`MultiTaskCollator`).
        c: inverse L2 strength of the logistic regressions (scikit-learn's ``C``) on standardised features.
        batch_size: rows per forward pass.
        seed: `random_state` of the regressions.

    Returns:
        ``{task: {"rows": fitted rows, "labels_fitted": labels with a fitted weight}}`` for the tasks fitted.
        Tasks with a hidden layer in their head, or no labelled row, are left as they are (logged).
    """
    if c <= 0:
        raise ValueError(f"linear probe: C must be > 0, got {c}")
    tasks = [task for task in model.config.tasks if model.heads[task["name"]].dense is None]
    skipped = sorted(set(model.config.task_names) - {task["name"] for task in tasks})
    if skipped:
        logger.warning("linear probe: heads with a hidden layer are not fitted (tasks %s)", skipped)
    if not tasks:
        return {}
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collator)
    collected = _head_inputs(model, loader, [task["name"] for task in tasks])
    fitted = {}
    for task in tasks:
        name, problem_type = task["name"], task["problem_type"]
        parts = collected[name]
        if not parts["features"]:
            logger.warning("linear probe: task %r has no labelled row in the training set; its head is left as is", name)
            continue
        features, labels = torch.cat(parts["features"]), torch.cat(parts["labels"])
        keep = _labelled(labels, problem_type)
        if not keep.any():
            logger.warning("linear probe: task %r has no labelled row in the training set; its head is left as is", name)
            continue
        features, labels = features[keep].double().numpy(), labels[keep].numpy()
        if task["level"] == DOCUMENT and parts["documents"]:
            features, labels = _per_document(features, labels, torch.cat(parts["documents"])[keep].numpy())
        weight, bias = _fit(features, labels, problem_type, len(task["labels"]), c, seed)
        classifier = model.heads[name].classifier
        with torch.no_grad():
            classifier.weight.copy_(torch.as_tensor(weight, dtype=classifier.weight.dtype))
            classifier.bias.copy_(torch.as_tensor(bias, dtype=classifier.bias.dtype))
        fitted[name] = {"rows": int(len(features)), "labels_fitted": int((np.abs(weight).sum(axis=1) > 0).sum())}
    logger.info("linear probe: heads fitted by logistic regression (C=%s): %s", c, fitted)
    return fitted


__all__ = ["fit_linear_heads"]
