"""Label-leakage audit: does one task's label (nearly) determine another's?

A multi-head model trained on tasks where one label is a function of another learns a shortcut, and its
"multi-task gain" on the determined task is leakage, not transfer. For each ordered pair of tasks
``(given, target)``, on the examples labelled for both:

* ``H(target | given)`` - conditional entropy in bits, and the uncertainty coefficient
  ``U = 1 - H(target | given) / H(target)`` (1 = target is a function of given; defined as 1 when the
  target is constant on those examples, which makes it trivially a function of anything);
* Cramér's V of the contingency table (symmetric; ``nan`` when either side is constant).

A pair is flagged when ``U >= threshold`` and the evidence is not trivial: the ``given`` task must have
on average at least ``min_examples_per_value`` examples per value (a label that is nearly unique per
example "determines" everything). Flagged pairs raise a :class:`LabelLeakageWarning` (one per determined task, naming every
task that determines it).

A pair is also flagged for a **partial rule**: one value of ``given`` that fixes the target on at least
``threshold`` of its examples, covers at least ``min_rule_share`` of the co-labelled examples (and
``min_examples_per_value`` of them), and names a target value that is not itself near-constant, with a purity
that chance cannot explain (one-sided binomial test against that value's overall share, p < 0.001). "ticket_type 1
implies urgency 3" on a table where ticket_type varies leaves U near 0.5, below any global threshold, yet a model
reads urgency off ticket_type on every type-1 ticket. The rules are listed in ``PairLeakage.rules``.

On ``../shared/data/tickets_sample`` (300 rows) every row has ``ticket_type == 1``, ``urgency == 3`` and
``impact == 4``: urgency and impact are determined by ticket_type (``U = 1``), the leakage trap of that
data set; the audit flags both pairs.

Multi-label values are compared as label sets.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd


class LabelLeakageWarning(UserWarning):
    """One task's labels are (nearly) a function of another's on the examples labelled for both."""


@dataclass
class PairLeakage:
    given: str
    target: str
    examples: int
    """Examples labelled for both tasks."""
    conditional_entropy: float
    """H(target | given) in bits."""
    target_entropy: float
    uncertainty_coefficient: float
    """1 - H(target|given) / H(target); 1.0 when target is constant."""
    cramers_v: float
    given_values: int
    target_values: int
    flagged: bool
    note: str = ""
    partial: bool = False
    """Flagged for a partial rule only (U below the threshold)."""
    rules: list = field(default_factory=list)
    """Partial rules ``{"given_value", "target_value", "examples", "purity"}``: a value of `given` that fixes `target`."""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class LeakageReport:
    pairs: list[PairLeakage]

    @property
    def flagged(self) -> list[PairLeakage]:
        return [p for p in self.pairs if p.flagged]

    def is_flagged(self, given: str, target: str) -> bool:
        return any(p.given == given and p.target == target for p in self.flagged)

    def table(self) -> str:
        header = f"{'given':<20} {'target':<20} {'n':>6} {'H(t|g)':>8} {'U':>6} {'V':>6}  flag"
        lines = [header, "-" * len(header)]
        for p in self.pairs:
            v = "nan" if math.isnan(p.cramers_v) else f"{p.cramers_v:.3f}"
            lines.append(
                f"{p.given:<20} {p.target:<20} {p.examples:>6} {p.conditional_entropy:>8.3f} "
                f"{p.uncertainty_coefficient:>6.3f} {v:>6}  {'LEAK' if p.flagged else ''} {p.note}".rstrip()
            )
        return "\n".join(lines)


def _is_missing(value) -> bool:
    """No label: None, NaN, pandas' NA / NaT (nullable DataFrame columns), or an empty string or list (a numpy array
    is a list: what ``Dataset.to_pandas()`` and ``pd.read_parquet`` give for a multi-label column)."""
    if isinstance(value, (str, list, tuple, dict, np.ndarray)):
        return len(value) == 0
    return value is None or bool(pd.isna(value))


def _hashable(value):
    if isinstance(value, (list, tuple, np.ndarray)):
        return tuple(sorted(str(v) for v in value))
    return value


def _entropy(counts: Sequence[int]) -> float:
    counts = np.asarray([c for c in counts if c > 0], dtype=float)
    if counts.size == 0:
        return 0.0
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def cramers_v(pairs: Sequence[tuple]) -> float:
    """Cramér's V of the contingency table of (a, b) pairs; ``nan`` when either side has one value."""
    a_values = sorted({a for a, _ in pairs}, key=str)
    b_values = sorted({b for _, b in pairs}, key=str)
    if len(a_values) < 2 or len(b_values) < 2:
        return float("nan")
    a_index = {v: i for i, v in enumerate(a_values)}
    b_index = {v: i for i, v in enumerate(b_values)}
    table = np.zeros((len(a_values), len(b_values)))
    for a, b in pairs:
        table[a_index[a], b_index[b]] += 1
    n = table.sum()
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / n
    chi2 = float(((table - expected) ** 2 / expected).sum())
    return math.sqrt(chi2 / n / (min(table.shape) - 1))


#: A partial rule must be this unlikely under the target value's overall share (one-sided binomial test): with a
#: target value on 93% of the rows, an unrelated column's values reach 95% purity by chance on ~100 rows.
RULE_P_VALUE = 1e-3


def partial_rules(pairs: Sequence[tuple], threshold: float, min_support: float, min_share: float) -> list[dict]:
    """Values of the given side that fix the target: purity >= `threshold` on at least ``max(min_support,
    min_share x n)`` examples, for a target value whose overall share stays below `threshold` (a near-constant
    target is "fixed" by anything, and the global U covers that case), and a purity that chance cannot explain
    (binomial test against that share, p < :data:`RULE_P_VALUE`)."""
    from scipy.stats import binomtest

    n = len(pairs)
    if not n:
        return []
    target_share = {value: count / n for value, count in Counter(b for _, b in pairs).items()}
    by_given: dict = {}
    for a, b in pairs:
        by_given.setdefault(a, Counter())[b] += 1
    rules = []
    for given_value, counts in sorted(by_given.items(), key=lambda item: str(item[0])):
        support = sum(counts.values())
        target_value, hits = counts.most_common(1)[0]
        if (support >= max(min_support, min_share * n) and hits / support >= threshold
                and target_share[target_value] < threshold
                and binomtest(hits, support, target_share[target_value], alternative="greater").pvalue < RULE_P_VALUE):
            rules.append({"given_value": given_value, "target_value": target_value, "examples": support,
                          "purity": hits / support})
    return rules


def _rule_text(given: str, target: str, rule: dict, n: int) -> str:
    return (f"{given} = {rule['given_value']!r} -> {target} = {rule['target_value']!r} on "
            f"{round(rule['purity'] * rule['examples'])} of {rule['examples']} examples ({rule['examples'] / n:.0%} of rows)")


def _evidence(pair: PairLeakage) -> str:
    """How `pair.given` determines `pair.target`, for the warning."""
    figures = (f"H({pair.target}|{pair.given}) = {pair.conditional_entropy:.3f} bits, "
               f"U = {pair.uncertainty_coefficient:.3f}, n = {pair.examples}")
    if pair.partial:
        rules = "; ".join(_rule_text(pair.given, pair.target, rule, pair.examples) for rule in pair.rules)
        return f"partly determined by {pair.given!r} ({figures}; {rules})"
    return f"(nearly) a function of {pair.given!r} ({figures})"


def pair_leakage(given: str, target: str, pairs: Sequence[tuple], threshold: float, min_examples_per_value: float,
                 min_rule_share: float = 0.1) -> PairLeakage:
    n = len(pairs)
    target_counts = Counter(b for _, b in pairs)
    given_counts = Counter(a for a, _ in pairs)
    joint = Counter(pairs)
    h_target = _entropy(list(target_counts.values()))
    h_joint = _entropy(list(joint.values()))
    h_given = _entropy(list(given_counts.values()))
    h_conditional = max(h_joint - h_given, 0.0)
    u = 1.0 if h_target == 0 else 1.0 - h_conditional / h_target
    per_value = n / max(len(given_counts), 1)
    note = ""
    flagged = n > 0 and u >= threshold
    if flagged and per_value < min_examples_per_value:
        flagged, note = False, f"(not flagged: {given} has {len(given_counts)} values for {n} examples)"
    elif flagged and h_target == 0:
        note = f"({target} is constant on these examples)"
    rules = partial_rules(pairs, threshold, min_examples_per_value, min_rule_share) if h_target > 0 else []
    partial = bool(rules) and not flagged  # also where U was vetoed for too few examples per value of `given`
    if partial:
        flagged = True
        note = "(partial: " + "; ".join(_rule_text(given, target, rule, n) for rule in rules) + ")"
    return PairLeakage(
        given=given,
        target=target,
        examples=n,
        conditional_entropy=h_conditional,
        target_entropy=h_target,
        uncertainty_coefficient=u,
        cramers_v=cramers_v(pairs),
        given_values=len(given_counts),
        target_values=len(target_counts),
        flagged=flagged,
        note=note,
        partial=partial,
        rules=rules,
    )


def audit_label_leakage(
    examples,
    tasks: Sequence[str] | None = None,
    threshold: float = 0.95,
    min_examples_per_value: float = 5.0,
    min_examples: int = 10,
    warn: bool = True,
    min_rule_share: float = 0.1,
) -> LeakageReport:
    """Audit every ordered pair of tasks for label leakage.

    Args:
        examples: a ``datasets.Dataset`` or ``pandas.DataFrame`` of multi-task examples (or any mapping of
            column -> list); ``None`` / NaN / empty values mean "no label".
        tasks: task columns (default: every column except ``doc_id``, ``text`` and ``mentions``).
        threshold: flag when the uncertainty coefficient reaches this.
        min_examples_per_value: minimum mean examples per value of the ``given`` task for a flag.
        min_examples: pairs with fewer co-labelled examples are reported but never flagged.
        warn: emit a :class:`LabelLeakageWarning` per flagged pair.
        min_rule_share: a partial rule (one value of ``given`` fixing the target, see the module docstring)
            must cover at least this share of the co-labelled examples to flag its pair.
    """
    columns = list(getattr(examples, "column_names", None) or list(examples.keys() if hasattr(examples, "keys") else examples.columns))
    if tasks is None:
        tasks = [c for c in columns if c not in ("doc_id", "text", "mentions", "id")]
    missing = [t for t in tasks if t not in columns]
    if missing:
        raise ValueError(f"tasks {missing} are not columns of the examples ({columns})")

    def values(task):
        raw = list(examples[task])
        out = []
        for v in raw:
            if _is_missing(v):
                out.append(None)
            else:
                out.append(_hashable(v))
        return out

    table = {t: values(t) for t in tasks}
    results = []
    for given in tasks:
        for target in tasks:
            if given == target:
                continue
            pairs = [(a, b) for a, b in zip(table[given], table[target]) if a is not None and b is not None]
            result = pair_leakage(given, target, pairs, threshold, min_examples_per_value, min_rule_share)
            if result.flagged and result.examples < min_examples:
                result.flagged, result.partial = False, False
                result.note = f"(not flagged: only {result.examples} co-labelled examples)"
            results.append(result)
    if warn:
        # one warning per determined task, naming every task that determines it (pairs are in the report)
        for target in tasks:
            determiners = [p for p in results if p.target == target and p.flagged]
            if not determiners:
                continue
            constant = " It is constant where labelled." if determiners[0].target_entropy == 0 else ""
            warnings.warn(
                f"label leakage: {target!r} is {', '.join(_evidence(p) for p in determiners)}.{constant} A multi-head "
                f"model can learn {target!r} from those labels instead of from the text: audit the data before "
                "reporting a gain on it",
                LabelLeakageWarning,
                stacklevel=2,
            )
    return LeakageReport(results)
