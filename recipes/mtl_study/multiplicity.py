"""How many tests a report runs, and what that does to its p-values: Holm / Benjamini-Hochberg adjustment, and the
smallest (adjusted) p-value a family of exact Wilcoxon tests can reach with its seeds (re-exported by
:mod:`mtl_study.stats`, which explains the method).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

import numpy as np
from scipy import stats as scipy_stats

if TYPE_CHECKING:
    from .stats import PairedComparison

#: Below this many pairs a two-sided Wilcoxon signed-rank test cannot reach p < 0.05.
MIN_PAIRS_FOR_SIGNIFICANCE = 6

#: Multiple-comparison adjustments: name -> description for reports.
P_ADJUST_METHODS = {
    "holm": "Holm step-down (family-wise error rate)",
    "bh": "Benjamini-Hochberg (false discovery rate)",
    "none": "none (raw p-values)",
}


def decision_p_name(method: str) -> str:
    """What a report calls the p-value its verdicts are decided on: adjusted, or (``--p_adjust none``) said to be raw."""
    return "adjusted p" if method != "none" else "raw p (NOT adjusted)"


def decision_p_heading(method: str) -> str:
    """The table heading of that p-value."""
    return f"adjusted p ({method})" if method != "none" else decision_p_name(method)


def min_achievable_p_value(n_pairs: int) -> float:
    """Smallest two-sided p-value scipy's Wilcoxon signed-rank test gives with ``n_pairs`` non-zero pairs: every
    difference of one sign, their ranks distinct. That is ``2 / 2**n`` where scipy runs the exact test (up to 50
    pairs); beyond, scipy's normal approximation gives more (tied differences also give more)."""
    if n_pairs <= 0:
        return 1.0
    extreme = scipy_stats.wilcoxon(np.arange(1, n_pairs + 1, dtype=float), alternative="two-sided", zero_method="wilcox")
    return min(1.0, float(extreme.pvalue))


def _check_method(method: str) -> str:
    if method not in P_ADJUST_METHODS:
        raise ValueError(f"unknown p-value adjustment {method!r}; choose among {sorted(P_ADJUST_METHODS)}")
    return method


def min_adjusted_p_value(n_pairs: int, num_tests: int, method: str = "holm") -> float:
    """Smallest adjusted p-value any of ``num_tests`` exact Wilcoxon tests with ``n_pairs`` pairs can get.

    Holm multiplies the smallest raw p-value by the number of tests; Benjamini-Hochberg reaches the raw minimum
    only when every test reaches it (its best case); no adjustment leaves the raw minimum.
    """
    smallest = min_achievable_p_value(n_pairs)
    if _check_method(method) == "holm":
        return min(1.0, max(num_tests, 1) * smallest)
    return smallest


def min_adjusted_p_values(n_pairs: Sequence[int], method: str = "holm") -> list[float]:
    """Per test of one family, the smallest adjusted p-value it can get, given every test's number of pairs.

    With equal pair counts this is :func:`min_adjusted_p_value` for each. With unequal ones, under Holm a test whose
    raw p-value is not the family's smallest gets ``max`` over the step-down products of the tests ranked before it
    and its own: e.g. tests of 8 and 6 pairs reach 0.0156 and 0.0312, where ``2 x 2/2**6 = 0.0625`` would call the
    second unreachable. Exact: the other tests are placed at their own floors, and every number of them ranked first
    (the smallest floors) is tried. Benjamini-Hochberg: a test's adjusted p is the smallest ``m * t / k`` over the
    p-values t at or above its own, k tests at or below t; at best every test sits at its floor, so the floor is the
    smallest ``m * t / #{floors <= t}`` over the floors t at or above its own. No adjustment: the raw floor."""
    raw = [min_achievable_p_value(n) for n in n_pairs]
    method = _check_method(method)
    if method == "none":
        return raw
    if method == "bh":
        m = len(raw)
        return [min(1.0, min(m * t / sum(f <= t for f in raw) for t in raw if t >= own)) for own in raw]
    m, floors = len(raw), []
    for j, own in enumerate(raw):
        others = sorted(raw[:j] + raw[j + 1:])
        best, ranked_before = math.inf, 0.0
        for s in range(m):  # s tests ranked before test j, at their floors
            if s:
                ranked_before = max(ranked_before, (m - s + 1) * others[s - 1])
            best = min(best, max(ranked_before, (m - s) * max(own, others[s - 1] if s else 0.0)))
        floors.append(min(1.0, best))
    return floors


def family_floors(comparisons: Sequence["PairedComparison"], method: str = "holm") -> dict[int, float]:
    """``{id(comparison): floor}`` of the tested comparisons of one family (:func:`min_adjusted_p_values` over their
    non-tied pairs); a comparison without a test has no entry."""
    tested = [c for c in comparisons if c.p_value is not None]
    return dict(zip(map(id, tested), min_adjusted_p_values([c.testable_pairs for c in tested], method)))


def seeds_needed(num_tests: int, alpha: float = 0.05, method: str = "holm") -> int:
    """Fewest seed pairs with which one of ``num_tests`` tests can be significant after adjustment."""
    n = 1
    while min_adjusted_p_value(n, num_tests, method) >= alpha:
        n += 1
    return n


def adjust_p_values(p_values: Sequence[float | None], method: str = "holm") -> list[float | None]:
    """Adjusted p-values in the input order; ``None`` entries (no test) stay None and do not count as tests."""
    _check_method(method)
    index = [i for i, p in enumerate(p_values) if p is not None and not math.isnan(p)]
    out: list[float | None] = [None] * len(p_values)
    if not index:
        return out
    raw = np.array([p_values[i] for i in index], dtype=float)
    if method == "none":
        adjusted = raw
    elif method == "bh":
        adjusted = scipy_stats.false_discovery_control(raw, method="bh")
    else:  # Holm: p_(k) * (m - k + 1), made monotone from the smallest up, capped at 1
        m = raw.size
        order = np.argsort(raw, kind="stable")
        stepped = np.maximum.accumulate(raw[order] * (m - np.arange(m)))
        adjusted = np.empty(m)
        adjusted[order] = np.minimum(stepped, 1.0)
    for i, value in zip(index, adjusted):
        out[i] = float(value)
    return out
