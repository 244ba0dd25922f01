"""Parent-first decoding of hierarchical narrative labels, and its threshold tuned on validation articles.

A subnarrative head scores ~94 fine labels, most of them rare: one threshold low enough to recall rare
subnarratives admits weak labels everywhere, and one high enough to keep precision misses a narrative whose
evidence is spread over several subnarratives (three at 0.3 each say more about their narrative than any one
says about itself). Parent-first decoding decides the narratives first, on the noisy-or of their subnarratives'
probabilities (the chance that at least one holds), then the subnarratives within each kept narrative (those passing
their own thresholds, else the narrative's best one). Measured on the recipe's cross-validation (3 article splits x
2 training seeds, official measures): narratives / subnarratives samples-F1 0.539 / 0.437 against 0.510 / 0.418 for
thresholding every subnarrative on its own (`recipes/configs/SEMEVAL_SETTING.md`, "Third round").

``Other`` (no narrative applies; it never shares an article with a narrative in the English release) is decided
before the narratives: an article whose own ``Other`` probability reaches 0.5 is ``Other`` alone. Samples-F1 of
``Other`` alone is then at least 0.5 in expectation, and of any set of narratives at most 1 - P(Other) <= 0.5,
whatever their scores: the rule needs no tuning. Measured on the six cross-validation models of the "Fifth round"
(decoded again, the narrative threshold tuned on validation with the rule in place): narratives / subnarratives
samples-F1 0.548 / 0.452 against 0.531 / 0.435 (``SEMEVAL_SETTING.md``, "Sixth round").

The narrative threshold is chosen on validation articles (:func:`tune_parent_threshold`) and stored on the model's
config as ``narrative_parent_threshold`` (a plain config attribute, saved in ``config.json``), where the study's
official rows and ``python -m data_prep.semeval_submit`` read it; a model without it is decoded flat.
"""

from __future__ import annotations

import logging
from typing import Callable, Mapping, Sequence

import numpy as np

logger = logging.getLogger(__name__)

#: the config attribute that carries the tuned threshold (absent: flat decoding)
PARENT_THRESHOLD_ATTRIBUTE = "narrative_parent_threshold"
#: an article whose fallback (``Other``) probability reaches this is the fallback alone (see the module docstring)
FALLBACK_GATE = 0.5
#: candidate thresholds on a narrative's noisy-or score
PARENT_THRESHOLD_GRID = tuple(round(float(t), 2) for t in np.arange(0.1, 0.91, 0.05))


def parent_first_labels(scores: Mapping[str, float], allowed: Sequence[str], parents: Mapping[str, str],
                        thresholds: Mapping[str, float], parent_threshold: float, relative_threshold: float = 0.0,
                        fallback: str | None = None, fallback_gate: float | None = FALLBACK_GATE) -> list[str]:
    """The labels of one article, parent first.

    Args:
        scores: label -> probability (``predict``'s ``return_scores=True`` entry).
        allowed: the labels that may be predicted (e.g. the article's domain); labels without a parent in
            `parents` (such as ``Other``) take no part in the parents' scores.
        parents: label -> parent label.
        thresholds: label -> the label's own decision threshold.
        parent_threshold: a parent is kept when the noisy-or of its allowed children's probabilities reaches it
            (and `relative_threshold` x the best parent's).
        fallback: returned alone when no parent is kept (``Other``); None: the best allowed label.
        fallback_gate: the fallback is also returned alone when its own score (in `scores`) reaches this; None:
            only when no parent is kept.
    """
    if fallback is not None and fallback_gate is not None and scores.get(fallback, 0.0) >= fallback_gate:
        return [fallback]
    children: dict[str, list[str]] = {}
    for label in allowed:
        if label in parents:
            children.setdefault(parents[label], []).append(label)
    parent_score = {parent: 1.0 - float(np.prod([1.0 - scores[label] for label in labels]))
                    for parent, labels in children.items()}
    if parent_score:
        floor = max(parent_threshold, relative_threshold * max(parent_score.values()))
        kept = [parent for parent, score in parent_score.items() if score >= floor]
    else:
        kept = []
    chosen = []
    for parent in kept:
        labels = children[parent]
        best = max(scores[label] for label in labels)
        passing = [label for label in labels if scores[label] >= max(thresholds[label], relative_threshold * best)]
        chosen += passing or [max(labels, key=scores.__getitem__)]
    if chosen:
        return chosen
    if fallback is not None:
        return [fallback]
    return [max(allowed, key=scores.__getitem__)]


def tune_parent_threshold(score_at: Callable[[float], float], grid: Sequence[float] = PARENT_THRESHOLD_GRID) -> float:
    """The grid value with the highest ``score_at(threshold)`` on validation (ties: the median of the tied values,
    the choice least sensitive to which side of a plateau the test set falls on)."""
    if not grid:
        raise ValueError("tune_parent_threshold: empty grid")
    scores = [score_at(t) for t in grid]
    best = max(scores)
    tied = [t for t, s in zip(grid, scores) if s >= best - 1e-12]
    chosen = tied[(len(tied) - 1) // 2]
    logger.info("narrative parent threshold %.2f (validation score %.4f; %d of %d grid values tie)", chosen, best,
                len(tied), len(grid))
    return float(chosen)


__all__ = ["FALLBACK_GATE", "PARENT_THRESHOLD_ATTRIBUTE", "PARENT_THRESHOLD_GRID", "parent_first_labels", "tune_parent_threshold"]
