"""Statistics over the results of an ablation: mean +- std per arm, paired Wilcoxon tests, effect sizes.

Every function works on *results rows* (dicts with at least ``arm``, ``seed``, ``task``, ``eval_set``,
``metric`` and ``value``, as written to ``results.jsonl`` by :mod:`mtl_study.runner`).

Arms are compared *paired by seed*: seed ``s`` of arm A is matched with seed ``s`` of arm B, because the
seed fixes the data order and the head initialisation, so the difference isolates the arm. The test is
the two-sided Wilcoxon signed-rank test of :func:`scipy.stats.wilcoxon`; its effect size is the
matched-pairs rank-biserial correlation (Kerby, 2014): ``(W+ - W-) / (W+ + W-)``, in [-1, 1], positive
when the first arm scores higher.

With ``n`` non-zero paired differences the smallest two-sided p-value the exact test can produce is
``2 / 2**n``; below 6 pairs that is above 0.05, so no amount of improvement can be "significant". The
comparisons say so in plain words instead of printing a meaningless p-value.

A report runs many tests (every arm x task x evaluation set), so its p-values are adjusted for multiple
comparisons over ALL its tests (:func:`adjust_comparisons`): Holm's step-down method by default (controls the
family-wise error rate), Benjamini-Hochberg (``"bh"``, :func:`scipy.stats.false_discovery_control`, controls the
false discovery rate) as an option. A result is called significant only on its adjusted p-value. Under Holm the
smallest adjusted p-value of ``m`` tests with ``n`` pairs each is ``m * 2 / 2**n``, so more tests need more
seeds (:func:`seeds_needed`): 1 test needs 6 seeds, 2 tests need 7, 6 tests need 8. With unequal pair counts
(tied seeds) each test's own floor comes from :func:`min_adjusted_p_values`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field, replace
from typing import Iterable, Mapping, Sequence

import numpy as np
from scipy import stats as scipy_stats

#: Arms of reference baselines (majority class, priors, TF-IDF + LR, see ``mtl_study.baselines``) start with this.
BASELINE_ARM_PREFIX = "baseline_"

from .multiplicity import (  # noqa: E402,F401  (re-exported: the stats vocabulary of the reports)
    MIN_PAIRS_FOR_SIGNIFICANCE, P_ADJUST_METHODS, _check_method, adjust_p_values, decision_p_heading, decision_p_name,
    family_floors, min_achievable_p_value, min_adjusted_p_value, min_adjusted_p_values, seeds_needed,
)


@dataclass
class ArmSummary:
    """Mean and sample standard deviation of one metric of one arm over its seeds."""

    arm: str
    task: str
    eval_set: str
    metric: str
    n: int
    mean: float
    std: float
    values: dict[int, float] = field(default_factory=dict)  # seed -> value

    def formatted(self, digits: int = 3) -> str:
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f}"


@dataclass
class PairedComparison:
    """Arm A against arm B on one task / evaluation set / metric, paired by seed."""

    arm_a: str
    arm_b: str
    task: str
    eval_set: str
    metric: str
    n_pairs: int
    mean_difference: float  # mean over seeds of (A - B)
    statistic: float | None  # Wilcoxon W (smaller of the signed-rank sums), None when not computable
    p_value: float | None
    effect_size: float | None  # matched-pairs rank-biserial correlation, positive when A > B
    seeds: list[int] = field(default_factory=list)
    note: str = ""
    alpha: float = 0.05
    adjusted_p_value: float | None = None  # set by adjust_comparisons over every test of the report
    p_adjust: str = "none"  # the adjustment that produced adjusted_p_value
    n_nonzero: int | None = None  # pairs with a non-zero difference: the test drops the others (None: n_pairs)

    @property
    def testable_pairs(self) -> int:
        """The pairs the Wilcoxon test ranks: seeds on which the two arms differ. What p-value is reachable, and so
        whether a comparison is testable at all, depends on these, not on every shared seed."""
        return self.n_pairs if self.n_nonzero is None else self.n_nonzero

    @property
    def decision_p_value(self) -> float | None:
        """The p-value significance is decided on: the adjusted one once the family was adjusted."""
        return self.p_value if self.p_adjust == "none" else self.adjusted_p_value

    @property
    def significant(self) -> bool:
        p = self.decision_p_value
        return p is not None and p < self.alpha

    @property
    def direction(self) -> str:
        """``higher`` / ``lower`` (A against B) when the mean difference and the test's ranks (the rank-biserial's
        sign) agree; ``mixed`` when they disagree (a mean pulled by one outlier seed while most seeds favour the
        other arm: the test ranks, so its verdict points the ranks' way); ``equal`` with no difference."""
        effect, mean = self.effect_size or 0.0, self.mean_difference
        if mean == 0 and effect == 0:
            return "equal"
        if mean * effect < 0:
            return "mixed"
        return "higher" if mean > 0 or effect > 0 else "lower"

    def to_dict(self) -> dict:
        out = asdict(self)
        out["significant"] = self.significant
        out["direction"] = self.direction
        return out


def rank_biserial(differences: Sequence[float]) -> float | None:
    """Matched-pairs rank-biserial correlation of paired differences (zeros dropped, ties mid-ranked).

    Returns ``(W+ - W-) / (W+ + W-)`` where ``W+`` / ``W-`` are the sums of the ranks of ``|d|`` over the
    positive / negative differences, or None when every difference is zero.
    """
    d = np.asarray(differences, dtype=float)
    d = d[d != 0]
    if d.size == 0:
        return None
    ranks = scipy_stats.rankdata(np.abs(d))
    w_plus = float(ranks[d > 0].sum())
    w_minus = float(ranks[d < 0].sum())
    return (w_plus - w_minus) / (w_plus + w_minus)


def filter_rows(rows: Iterable[Mapping], **criteria) -> list[Mapping]:
    """Rows whose fields equal every given criterion (a criterion of None matches anything)."""
    wanted = {k: v for k, v in criteria.items() if v is not None}
    return [r for r in rows if all(r.get(k) == v for k, v in wanted.items())]


def values_by_seed(rows: Iterable[Mapping], arm: str, task: str, eval_set: str, metric: str) -> dict[int, float]:
    """``{seed: value}`` for one arm / task / eval set / metric; a duplicated seed is an error."""
    out: dict[int, float] = {}
    for row in filter_rows(rows, arm=arm, task=task, eval_set=eval_set, metric=metric):
        seed = int(row["seed"])
        if seed in out:
            raise ValueError(
                f"duplicate results row for arm={arm!r} seed={seed} task={task!r} eval_set={eval_set!r} "
                f"metric={metric!r}: results.jsonl must hold one row per run x task x eval set x metric"
            )
        out[seed] = float(row["value"])
    return out


def summarize(rows: Iterable[Mapping], metric: str | None = None) -> list[ArmSummary]:
    """Mean +- sample std (ddof=1; 0 for a single seed) of every (arm, task, eval_set, metric) group."""
    groups: dict[tuple, dict[int, float]] = defaultdict(dict)
    for row in rows:
        if metric is not None and row["metric"] != metric:
            continue
        key = (row["arm"], row["task"], row["eval_set"], row["metric"])
        groups[key][int(row["seed"])] = float(row["value"])
    summaries = []
    for (arm, task, eval_set, met), values in groups.items():
        arr = np.array([values[s] for s in sorted(values)], dtype=float)
        std = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
        summaries.append(ArmSummary(arm, task, eval_set, met, int(arr.size), float(arr.mean()), std,
                                    {s: values[s] for s in sorted(values)}))
    return sorted(summaries, key=lambda s: (s.task, s.eval_set, s.metric, s.arm))


def paired_comparison(
    values_a: Mapping[int, float],
    values_b: Mapping[int, float],
    *,
    arm_a: str = "a",
    arm_b: str = "b",
    task: str = "",
    eval_set: str = "",
    metric: str = "",
    alpha: float = 0.05,
) -> PairedComparison:
    """Two-sided Wilcoxon signed-rank test of A against B over the seeds both arms have."""
    seeds = sorted(set(values_a) & set(values_b))
    a = np.array([values_a[s] for s in seeds], dtype=float)
    b = np.array([values_b[s] for s in seeds], dtype=float)
    # Differences rounded before ranking (scipy's advice): 0.7 - 0.6 and 0.8 - 0.7 are one tie, not two ranks, and a
    # difference of 1e-17 is a tie, not a win.
    diff = np.round(a - b, 12)
    n = len(seeds)
    mean_diff = float(diff.mean()) if n else float("nan")
    common = dict(arm_a=arm_a, arm_b=arm_b, task=task, eval_set=eval_set, metric=metric, n_pairs=n,
                  mean_difference=mean_diff, seeds=seeds, alpha=alpha)
    if n == 0:
        return PairedComparison(statistic=None, p_value=None, effect_size=None,
                                note=f"no seed in common between {arm_a} and {arm_b}: nothing to compare", **common)
    nonzero = int(np.count_nonzero(diff))
    common["n_nonzero"] = nonzero
    effect = rank_biserial(diff)
    if nonzero == 0:
        return PairedComparison(statistic=None, p_value=1.0, effect_size=None,
                                note="identical scores on every seed: no difference to test", **common)
    result = scipy_stats.wilcoxon(diff, alternative="two-sided", zero_method="wilcox")
    p_value = float(result.pvalue)
    note = ""
    if nonzero < MIN_PAIRS_FOR_SIGNIFICANCE:
        note = (
            f"only {nonzero} non-tied seed pair(s): the smallest p-value a two-sided Wilcoxon test can give "
            f"is {min_achievable_p_value(nonzero):.3g}, so p < {alpha} is unreachable even before adjustment for the "
            f"other tests (the report says how many seeds its tests need)"
        )
    return PairedComparison(statistic=float(result.statistic), p_value=p_value,
                            effect_size=effect, note=note, **common)


def adjust_comparisons(comparisons: Sequence[PairedComparison], method: str = "holm") -> list[PairedComparison]:
    """Copies of ``comparisons`` with ``adjusted_p_value`` set, adjusting over ALL of them as one family."""
    adjusted = adjust_p_values([c.p_value for c in comparisons], method)
    return [replace(c, adjusted_p_value=p, p_adjust=method) for c, p in zip(comparisons, adjusted)]


def significance_requirement(comparisons: Sequence[PairedComparison], alpha: float = 0.05, method: str = "holm") -> str:
    """A plain sentence: how many tests, the smallest adjusted p-value their seeds allow, the seeds needed.

    What a test can reach depends on its seeds with a non-zero difference (the Wilcoxon test drops tied ones): the
    sentence gives the floor of the best-placed test, and of the worst-placed when it is higher."""
    tested = [c for c in comparisons if c.p_value is not None]
    if not tested:
        return "No test could be run."
    m = len(tested)
    pairs = [c.testable_pairs for c in tested]
    floors = min_adjusted_p_values(pairs, method)
    fewest, most = min(pairs), max(pairs)
    floor, worst = min(floors), max(floors)
    needed = seeds_needed(m, alpha, method)
    adjustment = (f"p-values adjusted by {P_ADJUST_METHODS[_check_method(method)]}" if method != "none" else
                  "p-values NOT adjusted (--p_adjust none)")
    adjusted = "adjusted " if method != "none" else ""
    sentence = (f"{m} test{'s' * (m != 1)}, {adjustment}. With {most} seed pairs that differ "
                f"(tied seeds do not count) the smallest {adjusted}p-value a test can reach is {format_p(floor)}")
    if fewest < most:
        sentence += (f"; a test with {fewest} such pair{'s' * (fewest != 1)} can reach no lower than "
                     f"{format_p(worst)}")
    if floor < alpha:
        return sentence + f"; {needed} seeds are the minimum for {decision_p_name(method)} < {alpha} with {m} tests."
    if needed <= most:  # enough seeds, but the other tests' ties (BH ranks every test) keep this one above alpha
        return sentence + (f"; so NO result can be significant at α = {alpha}: too few of the {m} tests have seeds on "
                           f"which the arms differ.")
    return sentence + (f"; so NO result can be significant at α = {alpha}: {m} tests need at least {needed} seeds "
                       f"per arm.")


def is_baseline_arm(arm: str) -> bool:
    """Reference baselines (``baseline_*`` arms, see ``mtl_study.baselines``) are never tested by seed."""
    return str(arm).startswith(BASELINE_ARM_PREFIX)



def comparison_family(
    rows: Sequence[Mapping], *, baseline: str = "stl", metric: str = "macro_f1", arm_order: Sequence[str] | None = None,
    extra_comparisons: Sequence[tuple[str, str]] = (), alpha: float = 0.05, p_adjust: str = "holm",
) -> list[PairedComparison]:
    """Every paired test a report runs (each arm vs ``baseline``, then ``extra_comparisons``), adjusted together."""
    arms_present = sorted({r["arm"] for r in rows if not is_baseline_arm(r["arm"])})
    comparisons = []
    if baseline in arms_present:
        order = list(arm_order or []) + [a for a in arms_present if a not in (arm_order or [])]
        for arm in order:
            if arm != baseline and arm in arms_present:
                comparisons += compare_arms(rows, arm, baseline, metric, alpha=alpha)
    for a, b in extra_comparisons:
        if a in arms_present and b in arms_present:
            comparisons += compare_arms(rows, a, b, metric, alpha=alpha)
    return adjust_comparisons(comparisons, p_adjust)


def compare_arms(
    rows: Sequence[Mapping], arm_a: str, arm_b: str, metric: str, eval_set: str | None = None, alpha: float = 0.05
) -> list[PairedComparison]:
    """:func:`paired_comparison` of ``arm_a`` vs ``arm_b`` for every task (and eval set) both arms have."""
    keys_a = {(r["task"], r["eval_set"]) for r in filter_rows(rows, arm=arm_a, metric=metric, eval_set=eval_set)}
    keys_b = {(r["task"], r["eval_set"]) for r in filter_rows(rows, arm=arm_b, metric=metric, eval_set=eval_set)}
    out = []
    for task, es in sorted(keys_a & keys_b):
        out.append(paired_comparison(
            values_by_seed(rows, arm_a, task, es, metric), values_by_seed(rows, arm_b, task, es, metric),
            arm_a=arm_a, arm_b=arm_b, task=task, eval_set=es, metric=metric, alpha=alpha,
        ))
    return out


@dataclass
class NegativeTransfer:
    """The negative-transfer table: for each task, every multi-task arm minus the single-task baseline."""

    baseline: str
    metric: str
    comparisons: list[PairedComparison]

    def losses(self) -> list[PairedComparison]:
        """Comparisons where the multi-task arm is below the baseline by the mean, or by most seeds (the ranks the
        Wilcoxon test uses: a mean pulled up by one seed can hide a loss on all the others)."""
        return [c for c in self.comparisons if c.mean_difference < 0 or (c.effect_size or 0.0) < 0]

    @property
    def worst(self) -> PairedComparison | None:
        """The worst loss: one the test finds significant in the baseline's favour (most seeds lower) before any
        other, then the most negative mean difference. (A significant result whose ranks favour the multi-task arm
        is a significant gain, whatever its mean.)"""
        losses = self.losses()
        if not losses:
            return None
        return min(losses, key=lambda c: (not (c.significant and (c.effect_size or 0.0) < 0), c.mean_difference,
                                          c.effect_size or 0.0))

    def degraded_tasks(self) -> list[PairedComparison]:
        return [c for c in self.comparisons if c.mean_difference < 0]

    def summary_sentence(self) -> str:
        if not self.comparisons:
            return f"No multi-task arm shares a task with the {self.baseline} baseline: no transfer to report."
        worst = self.worst
        if worst is None:
            return (f"No negative transfer: every multi-task arm matches or beats {self.baseline} on every "
                    f"task ({self.metric}), by the mean and by most seeds.")
        verdict = ("significant" if worst.significant else
                   "not significant" if worst.p_value is not None else "not testable")
        if worst.direction == "mixed":  # the test ranks: its verdict points the way most seeds go
            most = worst.arm_a if (worst.effect_size or 0.0) > 0 else self.baseline
            verdict += (f"; mixed direction: most seeds favour {most} (rank-biserial r = {worst.effect_size:+.2f}), "
                        f"the mean is pulled {'below' if worst.mean_difference < 0 else 'above'} by a few")
        p_text = f"p = {format_p(worst.p_value)}"
        if worst.p_adjust != "none":
            p_text += f", adjusted p ({worst.p_adjust}) = {format_p(worst.adjusted_p_value)}"
        gap = (f"{-worst.mean_difference:.3f} {self.metric} below {self.baseline}" if worst.mean_difference < 0 else
               f"{worst.mean_difference:+.3f} {self.metric} on the mean, but below {self.baseline} on most seeds")
        return f"Worst degradation: {worst.arm_a} on {worst.task} ({worst.eval_set}) is {gap} ({p_text}, {verdict})."


def negative_transfer(
    rows: Sequence[Mapping], baseline: str = "stl", metric: str = "macro_f1", eval_set: str | None = None,
    alpha: float = 0.05, p_adjust: str = "holm", family: Sequence[PairedComparison] | None = None,
) -> NegativeTransfer:
    """Multi-task minus single-task, per task and evaluation set, for every arm other than ``baseline``.

    ``family``: the report's adjusted tests (:func:`comparison_family`); the table then takes its comparisons
    (and their adjusted p-values) from it. Without it, the arm-vs-baseline tests are adjusted among themselves.
    """
    if family is not None:
        # Multi-task arms only: a single-task control (stl_duplicated) against stl is not transfer of any kind.
        comparisons = [c for c in family if against_baseline(c, baseline) and (eval_set is None or c.eval_set == eval_set)
                       and not _is_single_task_arm(c.arm_a)]
        return NegativeTransfer(baseline=baseline, metric=metric, comparisons=comparisons)
    arms = sorted({r["arm"] for r in rows if not is_baseline_arm(r["arm"]) and not _is_single_task_arm(r["arm"])}
                  - {baseline})
    comparisons = []
    for arm in arms:
        comparisons.extend(compare_arms(rows, arm, baseline, metric, eval_set=eval_set, alpha=alpha))
    return NegativeTransfer(baseline=baseline, metric=metric, comparisons=adjust_comparisons(comparisons, p_adjust))


def against_baseline(comparison: PairedComparison, baseline: str = "stl") -> bool:
    """Whether a comparison holds an arm against `baseline`: ``baseline`` itself, or ``baseline@c`` for an arm of
    the same condition ``c`` (``mtl@URW`` against ``stl@URW``, as cross-domain recipes compare)."""
    arm_b, _, condition = comparison.arm_b.partition("@")
    return arm_b == baseline and comparison.arm_a.partition("@")[2] == condition


def _is_single_task_arm(arm: str) -> bool:
    """stl, stl_duplicated, stl@URW: the project's single-task arms all start with "stl"."""
    return str(arm).split("@")[0].startswith("stl")


def format_p(p_value: float | None) -> str:
    if p_value is None or (isinstance(p_value, float) and math.isnan(p_value)):
        return "n/a"
    return f"{p_value:.3g}" if p_value >= 1e-3 else f"{p_value:.1e}"


@dataclass
class CrossDomainMatrix:
    """Mean score of models trained on each domain (rows) evaluated on each domain (columns)."""

    train_domains: list[str]
    test_domains: list[str]
    values: list[list[float]]  # [train][test], NaN where missing
    stds: list[list[float]]
    metric: str
    task: str

    def value(self, train: str, test: str) -> float:
        return self.values[self.train_domains.index(train)][self.test_domains.index(test)]

    def asymmetry(self) -> list[dict]:
        """For every unordered pair of domains present on both axes: M[a->b] - M[b->a], plus each
        direction's drop from in-domain (M[b->b] - M[a->b]: how much training on a loses on b)."""
        common = [d for d in self.train_domains if d in self.test_domains]
        out = []
        for i, a in enumerate(common):
            for b in common[i + 1:]:
                ab, ba = self.value(a, b), self.value(b, a)
                out.append({
                    "pair": f"{a} ↔ {b}", "a_to_b": ab, "b_to_a": ba, "asymmetry": ab - ba,
                    "drop_on_b": self.value(b, b) - ab, "drop_on_a": self.value(a, a) - ba,
                })
        return out


def cross_domain_matrix(
    rows: Sequence[Mapping], task: str, metric: str, train_field: str = "train_domain", arm: str | None = None
) -> CrossDomainMatrix:
    """Aggregate rows into a train-domain x test-domain (``eval_set``) matrix of seed means."""
    selected = [r for r in filter_rows(rows, task=task, metric=metric, arm=arm) if r.get(train_field) is not None]
    if not selected:
        raise ValueError(f"no results rows with a {train_field!r} field for task={task!r} metric={metric!r}")
    train_domains = sorted({str(r[train_field]) for r in selected})
    test_domains = sorted({str(r["eval_set"]) for r in selected})
    cells: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in selected:
        cells[(str(r[train_field]), str(r["eval_set"]))].append(float(r["value"]))
    values = [[float(np.mean(cells[(tr, te)])) if cells.get((tr, te)) else float("nan") for te in test_domains]
              for tr in train_domains]
    stds = [[float(np.std(cells[(tr, te)], ddof=1)) if len(cells.get((tr, te), [])) > 1 else 0.0
             for te in test_domains] for tr in train_domains]
    return CrossDomainMatrix(train_domains, test_domains, values, stds, metric, task)
