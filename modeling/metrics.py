"""Built-in evaluation metrics of `MultiTaskTrainer`, usable on their own.

All functions work on numpy arrays of *probabilities* (softmax for single-label tasks, sigmoid for multi-label
tasks; for document tasks on windowed texts, already aggregated per document) and gold labels:

- single-label: ``labels`` int array ``[N]`` (-100 = unlabelled, skipped);
- multi-label: ``labels`` 0/1 array ``[N, C]`` (rows of -100 = unlabelled, skipped).

Per task they report micro-F1, macro-F1, samples-F1 (per-example F1 averaged: the official SemEval-2025 Task 10
narrative metric), exact match (the official entity-framing metric on fine roles), per-label F1, expected
calibration error, and for hierarchical tasks (``parents``: fine -> coarse) the coarse metrics computed from the
fine predictions, with main-role accuracy.

Macro-F1 averages by default (``macro_average="present"``) over the labels present in the gold labels OR in the
predictions -- exactly ``sklearn.metrics.f1_score(average="macro", zero_division=np.nan)`` -- so a label predicted
but never gold counts as 0 while a label neither gold nor predicted is left out (``{task}_macro_f1_num_labels``
says how many labels were averaged); ``"all"`` averages over every label of the task, scoring absent labels as 0
(what the SemEval study did). The counting is scikit-learn's.

Multi-label decisions: a label is predicted when its probability reaches its threshold; with ``top1_fallback`` a
row where nothing passes predicts its highest-scoring label (the ``Other`` fallback of the SemEval tasks).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
from sklearn.metrics import accuracy_score, f1_score

from .vocabulary import IGNORE_INDEX, MULTI_LABEL, SINGLE_LABEL, SPAN, probabilities_from_logits  # noqa: F401 (re-exported)

logger = logging.getLogger(__name__)
MACRO_AVERAGES = ("present", "all")

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


def known_multi_label(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(gold, known)`` of multi-hot rows: an entry of -100 in an otherwise labelled row is an unknown label (the
    loss skips it too), neither gold nor a decision to score, so a row is scored on the labels it knows."""
    known = labels != IGNORE_INDEX
    return (labels == 1) & known, known


def decide_multi_label(
    probabilities: np.ndarray, thresholds, top1_fallback: bool = False, relative_threshold: float = 0.0
) -> np.ndarray:
    """Boolean predictions ``[N, C]``: probability >= threshold and, with `relative_threshold` r > 0, also
    >= r x the row's highest probability (`MultiTaskConfig.relative_threshold`); with `top1_fallback`, a row where
    no label passes predicts its highest-scoring label instead of nothing."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    predicted = probabilities >= np.asarray(thresholds, dtype=np.float64)[None, :]
    if relative_threshold > 0 and probabilities.size:
        predicted &= probabilities >= relative_threshold * probabilities.max(axis=1, keepdims=True)
    if top1_fallback and len(predicted):
        empty = ~predicted.any(axis=1)
        predicted[np.flatnonzero(empty), probabilities[empty].argmax(axis=1)] = True
    return predicted


def samples_f1(gold: np.ndarray, predicted: np.ndarray) -> float:
    """Per-example F1 averaged over examples, an example with neither gold nor predicted labels scoring 1:
    scikit-learn's ``f1_score(average="samples", zero_division=1.0)``, which refuses a single label column (it reads
    ``[N, 1]`` as a binary target)."""
    gold, predicted = np.asarray(gold, dtype=bool), np.asarray(predicted, dtype=bool)
    if not len(gold):
        return 0.0
    both = (gold & predicted).sum(axis=1)
    total = gold.sum(axis=1) + predicted.sum(axis=1)
    return float(np.mean(np.where(total == 0, 1.0, 2.0 * both / np.maximum(total, 1))))


def _indicator_metrics(
    predicted: np.ndarray, gold: np.ndarray, label_names: Sequence[str], macro_average: str
) -> dict[str, object]:
    """Micro/macro/samples F1, exact match and per-label F1 of 0/1 indicator matrices ``[N, C]`` (scikit-learn)."""
    predicted = np.asarray(predicted, dtype=bool).astype(np.int8)
    gold = np.asarray(gold, dtype=bool).astype(np.int8)
    if gold.shape[1] == 1:  # one yes/no label: scikit-learn reads [N, 1] as a binary target of classes 0 and 1
        f1 = float(f1_score(gold[:, 0], predicted[:, 0], average="binary", zero_division=0.0))
        present = bool(gold.any() or predicted.any()) or macro_average != "present"
        return {"micro_f1": f1, "macro_f1": f1 if present else 0.0, "macro_f1_num_labels": float(present),
                "samples_f1": samples_f1(gold, predicted), "exact_match": float(accuracy_score(gold, predicted)),
                "per_label_f1": {label_names[0]: f1}}
    per_label = f1_score(gold, predicted, average=None, zero_division=0.0)
    if macro_average == "present":
        # zero_division=nan leaves out (only) the labels that are neither gold nor predicted
        averaged = (gold.sum(axis=0) + predicted.sum(axis=0)) > 0
        macro = float(f1_score(gold, predicted, average="macro", zero_division=np.nan)) if averaged.any() else 0.0
    else:
        averaged = np.ones(gold.shape[1], dtype=bool)
        macro = float(f1_score(gold, predicted, average="macro", zero_division=0.0))
    return {
        "micro_f1": float(f1_score(gold, predicted, average="micro", zero_division=0.0)),
        "macro_f1": macro,
        "macro_f1_num_labels": float(averaged.sum()),
        # per-example F1; an example with neither gold nor predicted labels agrees perfectly (F1 = 1)
        "samples_f1": samples_f1(gold, predicted),
        "exact_match": float(accuracy_score(gold, predicted)),
        "per_label_f1": {name: float(value) for name, value in zip(label_names, per_label)},
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
    top1_fallback: bool = False,
    relative_threshold: float = 0.0,
) -> dict[str, float]:
    """Metrics of one task (a task dict of the config), keys without the task prefix.

    Args:
        task: ``{"name", "problem_type", "labels", "parents", "thresholds", ...}``.
        probabilities: ``[N, C]`` probabilities.
        labels: gold labels (see module docstring); unlabelled rows are skipped.
        thresholds: multi-label decision thresholds (default: ``task["thresholds"]`` or 0.5).
        macro_average: ``"present"`` (labels gold or predicted) or ``"all"`` (every label).
        per_label: add ``f1_<label>`` keys.
        top1_fallback: multi-label: a row where no label reaches its threshold predicts its top-1 label.
        relative_threshold: multi-label: a label must also reach this fraction of the row's top probability.
    """
    if macro_average not in MACRO_AVERAGES:
        raise ValueError(f"macro_average must be one of {MACRO_AVERAGES}, got {macro_average!r}")
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
        gold, known = known_multi_label(labels)
        predicted = decide_multi_label(probabilities, thresholds, top1_fallback, relative_threshold) & known
        # Multi-label calibration: every known (example, label) probability against whether the label is present.
        metrics["ece"] = expected_calibration_error(probabilities[known], gold[known], calibration_bins)

    scores = _indicator_metrics(predicted, gold, label_names, macro_average)
    metrics.update({key: value for key, value in scores.items() if key != "per_label_f1"})
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
        if task.get("level") == SPAN:
            # Main role of a mention (SemEval subtask 1): the parent of the highest-scoring fine role, right when it
            # is the gold one. A document task's "top label's parent" is not what the field calls a main role.
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
    top1_fallback: bool = False,
    relative_threshold: float = 0.0,
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
            top1_fallback=top1_fallback,
            relative_threshold=relative_threshold,
        )
        if task_metrics["num_examples"] == 0:
            continue
        metrics.update({f"{name}_{key}": value for key, value in task_metrics.items()})
        macro_scores.append(task_metrics["macro_f1"])
    if macro_scores:
        metrics["mean_macro_f1"] = float(np.mean(macro_scores))
    return metrics
