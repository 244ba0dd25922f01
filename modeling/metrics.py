"""Built-in evaluation metrics of `MultiTaskTrainer`, usable on their own.

All functions work on numpy arrays of *probabilities* (softmax for single-label tasks, sigmoid for multi-label
tasks; for document tasks on windowed texts, already aggregated per document) and gold labels:

- single-label: ``labels`` int array ``[N]`` (-100 = unlabelled, skipped);
- multi-label: ``labels`` 0/1 array ``[N, C]`` (rows of -100 = unlabelled, skipped).

Per task they report micro-F1, macro-F1, samples-F1 (per-example F1 averaged: the official SemEval-2025 Task 10
narrative metric), exact match (the official entity-framing metric on fine roles), per-label F1, expected
calibration error, and for hierarchical tasks (``parents``: fine -> coarse) the coarse metrics computed from the
fine predictions, with main-role accuracy.

Macro-F1 averages over the labels with support in the evaluated gold labels by default (``macro_average="present"``;
``{task}_macro_f1_num_labels`` says how many); ``"all"`` averages over every label of the task, scoring labels never
seen in the evaluation set as 0 (what the SemEval study did).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np

logger = logging.getLogger(__name__)

from .vocabulary import IGNORE_INDEX, MULTI_LABEL, SINGLE_LABEL, probabilities_from_logits  # noqa: F401 (re-exported)

DEFAULT_THRESHOLD_GRID = tuple(np.round(np.arange(0.05, 0.951, 0.05), 2).tolist())


# ---------------------------------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------------------------------
def labelled_mask(labels: np.ndarray, problem_type: str) -> np.ndarray:
    """Boolean mask of the rows that carry a label (single-label: != -100; multi-label: not all -100)."""
    labels = np.asarray(labels)
    if problem_type == MULTI_LABEL:
        if labels.ndim != 2:
            raise ValueError(f"multi-label labels must have shape [N, C], got {labels.shape}")
        return ~np.all(labels == IGNORE_INDEX, axis=-1)
    if labels.ndim != 1:
        raise ValueError(f"single-label labels must have shape [N], got {labels.shape}")
    return labels != IGNORE_INDEX


def _f1_from_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """Elementwise F1 = 2tp / (2tp + fp + fn), 0 where the denominator is 0."""
    denominator = 2 * tp + fp + fn
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1e-12), 0.0)
    return f1


def _indicator_metrics(
    predicted: np.ndarray, gold: np.ndarray, label_names: Sequence[str], macro_average: str
) -> dict[str, object]:
    """Micro/macro/samples F1, exact match and per-label F1 of 0/1 indicator matrices ``[N, C]``."""
    predicted = predicted.astype(bool)
    gold = gold.astype(bool)
    tp = (predicted & gold).sum(axis=0).astype(np.float64)
    fp = (predicted & ~gold).sum(axis=0).astype(np.float64)
    fn = (~predicted & gold).sum(axis=0).astype(np.float64)
    per_label = _f1_from_counts(tp, fp, fn)
    support = gold.sum(axis=0)
    averaged = support > 0 if macro_average == "present" else np.ones_like(support, dtype=bool)
    macro = float(per_label[averaged].mean()) if averaged.any() else 0.0
    micro = float(_f1_from_counts(tp.sum(), fp.sum(), fn.sum()))
    # Per-example F1; an example with neither gold nor predicted labels agrees perfectly (F1 = 1).
    example_tp = (predicted & gold).sum(axis=1).astype(np.float64)
    example_sizes = predicted.sum(axis=1) + gold.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        samples = np.where(example_sizes > 0, 2 * example_tp / np.maximum(example_sizes, 1), 1.0)
    exact = np.all(predicted == gold, axis=1)
    return {
        "micro_f1": micro,
        "macro_f1": macro,
        "macro_f1_num_labels": float(averaged.sum()),
        "samples_f1": float(samples.mean()) if len(samples) else 0.0,
        "exact_match": float(exact.mean()) if len(exact) else 0.0,
        "per_label_f1": {name: float(value) for name, value in zip(label_names, per_label)},
        "support": support,
    }


def expected_calibration_error(confidences: np.ndarray, outcomes: np.ndarray, num_bins: int = 15) -> float:
    """Expected calibration error: the support-weighted mean |accuracy - confidence| over equal-width bins.

    `confidences` are predicted probabilities in [0, 1]; `outcomes` are 0/1 (the prediction was right / the label
    is present). Bin edges are right-closed, with 0 falling in the first bin.
    """
    confidences = np.asarray(confidences, dtype=np.float64).ravel()
    outcomes = np.asarray(outcomes, dtype=np.float64).ravel()
    if confidences.shape != outcomes.shape:
        raise ValueError(f"confidences {confidences.shape} and outcomes {outcomes.shape} differ in shape")
    if confidences.size == 0:
        return 0.0
    bins = np.clip(np.ceil(confidences * num_bins).astype(int) - 1, 0, num_bins - 1)
    total = 0.0
    for index in range(num_bins):
        in_bin = bins == index
        if in_bin.any():
            total += in_bin.sum() * abs(outcomes[in_bin].mean() - confidences[in_bin].mean())
    return float(total / confidences.size)


def tune_thresholds(
    probabilities: np.ndarray,
    labels: np.ndarray,
    current: Sequence[float] | None = None,
    grid: Sequence[float] = DEFAULT_THRESHOLD_GRID,
) -> list[float]:
    """Per-label decision thresholds maximising each label's F1 on a validation set (multi-label heads).

    Labels without a positive example keep their current threshold (or 0.5): with no positives the F1-optimal
    threshold is arbitrary and would only encode "never predict". Ties go to the threshold closest to 0.5, which
    keeps the choice stable on small validation sets.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels)
    mask = labelled_mask(labels, MULTI_LABEL)
    probabilities, gold = probabilities[mask], labels[mask].astype(bool)
    num_labels = probabilities.shape[1]
    thresholds = list(current) if current is not None else [0.5] * num_labels
    if len(thresholds) != num_labels:
        raise ValueError(f"got {len(thresholds)} current thresholds for {num_labels} labels")
    grid = np.asarray(sorted(grid), dtype=np.float64)
    for label in range(num_labels):
        positives = gold[:, label]
        if not positives.any():
            continue
        predicted = probabilities[:, label][None, :] >= grid[:, None]  # [G, N]
        tp = (predicted & positives).sum(axis=1)
        fp = (predicted & ~positives).sum(axis=1)
        fn = (~predicted & positives).sum(axis=1)
        f1 = _f1_from_counts(tp.astype(float), fp.astype(float), fn.astype(float))
        best = np.flatnonzero(np.isclose(f1, f1.max()))
        thresholds[label] = float(grid[best[np.argmin(np.abs(grid[best] - 0.5))]])
    return [float(value) for value in thresholds]


def _coarse_names(task: Mapping) -> tuple[list[str], np.ndarray]:
    """Coarse label names (in order of first appearance) and the fine -> coarse index map of a hierarchical task.

    Fine labels missing from ``parents`` (e.g. ``Other``) are their own coarse label.
    """
    parents = task.get("parents") or {}
    coarse: list[str] = []
    fine_to_coarse = []
    for name in task["labels"]:
        parent = parents.get(name, name)
        if parent not in coarse:
            coarse.append(parent)
        fine_to_coarse.append(coarse.index(parent))
    return coarse, np.asarray(fine_to_coarse, dtype=int)


# ---------------------------------------------------------------------------------------------------------------
# per task / all tasks
# ---------------------------------------------------------------------------------------------------------------
def compute_task_metrics(
    task: Mapping,
    probabilities: np.ndarray,
    labels: np.ndarray,
    thresholds: Sequence[float] | None = None,
    macro_average: str = "present",
    per_label: bool = True,
    calibration_bins: int = 15,
) -> dict[str, float]:
    """Metrics of one task (a task dict of the config), keys without the task prefix.

    Args:
        task: ``{"name", "problem_type", "labels", "parents", "thresholds", ...}``.
        probabilities: ``[N, C]`` probabilities.
        labels: gold labels (see module docstring); unlabelled rows are skipped.
        thresholds: multi-label decision thresholds (default: ``task["thresholds"]`` or 0.5).
        macro_average: ``"present"`` or ``"all"``.
        per_label: add ``f1_<label>`` keys.
    """
    if macro_average not in ("present", "all"):
        raise ValueError(f"macro_average must be 'present' or 'all', got {macro_average!r}")
    problem_type = task["problem_type"]
    label_names = list(task["labels"])
    num_labels = len(label_names)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels)
    if probabilities.ndim != 2 or probabilities.shape[1] != num_labels:
        raise ValueError(
            f"task {task['name']!r}: probabilities must have shape [N, {num_labels}], got {probabilities.shape}"
        )
    if labels.shape[0] != probabilities.shape[0]:
        raise ValueError(
            f"task {task['name']!r}: {labels.shape[0]} label rows for {probabilities.shape[0]} prediction rows"
        )
    mask = labelled_mask(labels, problem_type)
    probabilities, labels = probabilities[mask], labels[mask]
    count = int(mask.sum())
    metrics: dict[str, float] = {"num_examples": float(count)}
    if count == 0:
        return metrics

    if problem_type == SINGLE_LABEL:
        labels = labels.astype(int)
        if labels.min() < 0 or labels.max() >= num_labels:
            raise ValueError(
                f"task {task['name']!r}: gold label ids must lie in [0, {num_labels}), got {sorted(set(labels))}"
            )
        predicted_ids = probabilities.argmax(axis=1)
        predicted = np.eye(num_labels, dtype=bool)[predicted_ids]
        gold = np.eye(num_labels, dtype=bool)[labels]
        confidences = probabilities.max(axis=1)
        metrics["ece"] = expected_calibration_error(confidences, predicted_ids == labels, calibration_bins)
    else:
        if thresholds is None:
            thresholds = task.get("thresholds") or [0.5] * num_labels
        thresholds = np.asarray(thresholds, dtype=np.float64)
        if thresholds.shape != (num_labels,):
            raise ValueError(f"task {task['name']!r}: {thresholds.shape[0]} thresholds for {num_labels} labels")
        gold = labels.astype(bool)
        predicted = probabilities >= thresholds[None, :]
        # Multi-label calibration: every (example, label) probability against whether the label is present.
        metrics["ece"] = expected_calibration_error(probabilities, gold, calibration_bins)

    scores = _indicator_metrics(predicted, gold, label_names, macro_average)
    metrics.update({key: value for key, value in scores.items() if key not in ("per_label_f1", "support")})
    if problem_type == SINGLE_LABEL:
        metrics["accuracy"] = metrics["exact_match"]
    if per_label:
        for name, value in scores["per_label_f1"].items():
            metrics[f"f1_{name}"] = value

    if task.get("parents"):
        coarse_names, fine_to_coarse = _coarse_names(task)
        num_coarse = len(coarse_names)
        to_coarse = np.zeros((num_labels, num_coarse), dtype=bool)
        to_coarse[np.arange(num_labels), fine_to_coarse] = True
        # Coarse labels are derived from the fine predictions: an example has a coarse label when any of its
        # fine labels maps to it.
        coarse_predicted = (predicted.astype(int) @ to_coarse.astype(int)) > 0
        coarse_gold = (gold.astype(int) @ to_coarse.astype(int)) > 0
        coarse = _indicator_metrics(coarse_predicted, coarse_gold, coarse_names, macro_average)
        for key in ("micro_f1", "macro_f1", "samples_f1", "exact_match"):
            metrics[f"coarse_{key}"] = coarse[key]
        # Main role: the parent of the highest-scoring fine label, right when it is among the gold coarse labels.
        main_role = fine_to_coarse[probabilities.argmax(axis=1)]
        metrics["main_role_accuracy"] = float(coarse_gold[np.arange(count), main_role].mean())
    return metrics


def compute_multitask_metrics(
    predictions: Mapping[str, np.ndarray],
    label_ids: Mapping[str, np.ndarray],
    tasks: Sequence[Mapping],
    thresholds: Mapping[str, Sequence[float]] | None = None,
    macro_average: str = "present",
    per_label: bool = True,
    calibration_bins: int = 15,
) -> dict[str, float]:
    """Metrics of every task, flat: ``{task}_{metric}`` plus ``mean_macro_f1`` (over tasks with labels).

    Args:
        predictions: ``{task: probabilities [N, C]}``; a task may be missing (then it is not scored).
        label_ids: ``{task: gold labels}`` aligned with `predictions`.
        tasks: the model config's task dicts.
        thresholds: optional ``{task: thresholds}`` overriding the tasks' stored thresholds.
    """
    metrics: dict[str, float] = {}
    macro_scores = []
    thresholds = thresholds or {}
    for task in tasks:
        name = task["name"]
        if name not in predictions or name not in label_ids:
            continue
        task_metrics = compute_task_metrics(
            task,
            predictions[name],
            label_ids[name],
            thresholds=thresholds.get(name),
            macro_average=macro_average,
            per_label=per_label,
            calibration_bins=calibration_bins,
        )
        if task_metrics["num_examples"] == 0:
            continue
        metrics.update({f"{name}_{key}": value for key, value in task_metrics.items()})
        macro_scores.append(task_metrics["macro_f1"])
    if macro_scores:
        metrics["mean_macro_f1"] = float(np.mean(macro_scores))
    return metrics
