"""Multi-label decision thresholds chosen on a validation set, robust to small validation sets.

Tuning every label's threshold alone on ~80 validation articles degenerates (issue 14): a label with one or two
positives gets the lowest threshold of the grid, which is F1-optimal on those few rows and predicts the label
almost everywhere on new data. The strategies, in `MultiTaskTrainingArguments.threshold_strategy`:

- ``"shared"`` (default): ONE threshold per task, chosen on the whole validation set by the task's primary metric,
  samples-F1 (the official SemEval-2025 Task 10 narrative metric): every label's evidence counts together.
- ``"per_label"``: starts from the shared threshold; labels with at least ``min_support`` validation positives
  get their own F1-optimal threshold, rarer labels keep the shared one.
- ``"none"``: keep the stored thresholds (0.5 by default).

The shared threshold is chosen under the model's relative threshold (`MultiTaskConfig.relative_threshold`: a label
must also reach that fraction of its row's top probability); the per-label refinement scores each label alone.

Decisions use the top-1 fallback by default (`metrics.decide_multi_label`): a row where no label passes predicts
its highest-scoring label, so the choice of threshold never has to buy recall with a near-zero value.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .metrics import decide_multi_label, known_multi_label, labelled_mask, samples_f1
from .vocabulary import MULTI_LABEL

THRESHOLD_STRATEGIES = ("shared", "per_label", "none")
DEFAULT_THRESHOLD_GRID = tuple(np.round(np.arange(0.05, 0.951, 0.05), 2).tolist())


def _labelled(probabilities, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The labelled rows' probabilities, gold and known entries (`metrics.known_multi_label`)."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels)
    mask = labelled_mask(labels, MULTI_LABEL)
    return (probabilities[mask], *known_multi_label(labels[mask]))


def _closest_to_half(grid: np.ndarray, scores: np.ndarray) -> float:
    """The grid value with the best score; ties go to the value closest to 0.5 (stable on small sets)."""
    best = np.flatnonzero(np.isclose(scores, scores.max()))
    return float(grid[best[np.argmin(np.abs(grid[best] - 0.5))]])


def tune_shared_threshold(
    probabilities, labels, grid: Sequence[float] = DEFAULT_THRESHOLD_GRID, top1_fallback: bool = True,
    relative_threshold: float = 0.0,
) -> float:
    """One threshold for every label of a task, maximising samples-F1 over the labelled rows (decided as
    `decide_multi_label` does, with the same fallback and relative threshold)."""
    probabilities, gold, known = _labelled(probabilities, labels)
    grid = np.asarray(sorted(grid), dtype=np.float64)
    if not len(gold):
        return 0.5
    scores = np.asarray([
        samples_f1(gold, decide_multi_label(probabilities, np.full(gold.shape[1], value), top1_fallback,
                                            relative_threshold) & known)
        for value in grid
    ])
    return _closest_to_half(grid, scores)


def tune_thresholds(
    probabilities,
    labels,
    current: Sequence[float] | None = None,
    grid: Sequence[float] = DEFAULT_THRESHOLD_GRID,
    min_support: int = 1,
) -> list[float]:
    """Per-label thresholds maximising each label's F1 (the ``per_label`` refinement).

    Labels with fewer than `min_support` positive rows keep their current threshold (or 0.5): with few positives
    the F1-optimal threshold only fits those rows (with none it would merely encode "never predict").
    """
    probabilities, gold, known = _labelled(probabilities, labels)
    num_labels = probabilities.shape[1]
    thresholds = list(current) if current is not None else [0.5] * num_labels
    if len(thresholds) != num_labels:
        raise ValueError(f"got {len(thresholds)} current thresholds for {num_labels} labels")
    grid = np.asarray(sorted(grid), dtype=np.float64)
    for label in range(num_labels):
        rows = known[:, label]  # the rows that know this label
        positives = gold[rows, label]
        if positives.sum() < max(min_support, 1):
            continue
        predicted = probabilities[rows, label][None, :] >= grid[:, None]  # [G, N]
        tp = (predicted & positives).sum(axis=1)
        wrong = (predicted != positives).sum(axis=1)  # false positives + false negatives
        thresholds[label] = _closest_to_half(grid, 2.0 * tp / np.maximum(2 * tp + wrong, 1))
    return [float(value) for value in thresholds]


def select_thresholds(
    probabilities,
    labels,
    strategy: str = "shared",
    min_support: int = 5,
    top1_fallback: bool = True,
    grid: Sequence[float] = DEFAULT_THRESHOLD_GRID,
    relative_threshold: float = 0.0,
) -> list[float] | None:
    """Thresholds of one multi-label task by `strategy` (see the module docstring); None for ``"none"``."""
    if strategy not in THRESHOLD_STRATEGIES:
        raise ValueError(f"threshold strategy must be one of {THRESHOLD_STRATEGIES}, got {strategy!r}")
    if strategy == "none":
        return None
    num_labels = np.asarray(probabilities).shape[1]
    shared = [tune_shared_threshold(probabilities, labels, grid, top1_fallback, relative_threshold)] * num_labels
    if strategy == "shared":
        return shared
    return tune_thresholds(probabilities, labels, current=shared, grid=grid, min_support=min_support)
