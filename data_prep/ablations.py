"""Training and evaluation sets for the ablations that separate "multi-task learning helps" from its confounds.

* :func:`single_task_examples` - the same examples carrying only one task's labels (single-task baselines).
* :func:`cross_domain_examples` - task A's labels from domain X, task B's from domain Y; every example keeps
  only the labels of the task(s) assigned to its domain, so no example teaches both tasks.
* :func:`duplication_control` - the data-duplication control: the single-task training data repeated until
  it has the multi-task run's token count, so a multi-task gain cannot be explained by "more tokens seen".
  The exact counts are returned in a :class:`DuplicationReport`.
* :func:`per_domain_eval_sets` - one evaluation set per domain.

These work on "multi-task examples" (task columns named like the tasks; ``None`` = no label) and, for the
duplication control, on encoded window rows with a ``length`` column.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Mapping, Sequence

import datasets
import numpy as np


def _clear_labels(examples: datasets.Dataset, tasks: Sequence[str], keep: callable) -> datasets.Dataset:
    """Set each task column to ``None`` on the rows where ``keep(row, task)`` is false."""

    def clear(row):
        return {task: row[task] if keep(row, task) else None for task in tasks}

    return examples.map(clear, desc="restricting labels")


def _check_tasks(examples: datasets.Dataset, tasks: Sequence[str]) -> None:
    missing = [t for t in tasks if t not in examples.column_names]
    if missing:
        raise ValueError(f"tasks {missing} are not columns of the examples ({examples.column_names})")


def _has_any_label(row, tasks: Sequence[str]) -> bool:
    return any(row[t] is not None for t in tasks)


def single_task_examples(
    examples: datasets.Dataset, task: str, all_tasks: Sequence[str], drop_unlabelled: bool = True
) -> datasets.Dataset:
    """``examples`` with every task column but ``task`` emptied (and rows without ``task`` labels dropped)."""
    _check_tasks(examples, [task, *all_tasks])
    result = _clear_labels(examples, list(all_tasks), lambda row, t: t == task)
    if drop_unlabelled:
        result = result.filter(lambda row: row[task] is not None, desc=f"keeping rows labelled for {task}")
    return result


def cross_domain_examples(
    examples: datasets.Dataset,
    task_domains: Mapping[str, str],
    domain_column: str = "domain",
    drop_unlabelled: bool = True,
) -> datasets.Dataset:
    """Cross-domain training set: task ``t`` keeps its labels only on examples of domain ``task_domains[t]``.

    Example: ``{"entity_framing_fine": "URW", "narratives_fine": "CC"}`` trains entity framing on URW
    articles and narratives on CC articles. Examples left without any label are dropped.
    """
    tasks = list(task_domains)
    _check_tasks(examples, [*tasks, domain_column])
    domains = set(examples[domain_column])
    unknown = {t: d for t, d in task_domains.items() if d not in domains}
    if unknown:
        raise ValueError(f"domains {unknown} do not occur in column {domain_column!r} (values: {sorted(map(str, domains))})")
    result = _clear_labels(examples, tasks, lambda row, t: row[domain_column] == task_domains[t])
    if drop_unlabelled:
        result = result.filter(lambda row: _has_any_label(row, tasks), desc="dropping unlabelled rows")
    return result


def per_domain_eval_sets(examples: datasets.Dataset, domain_column: str = "domain") -> datasets.DatasetDict:
    """One evaluation set per value of ``domain_column`` (sorted), e.g. ``{"CC": ..., "URW": ...}``."""
    _check_tasks(examples, [domain_column])
    values = examples[domain_column]
    return datasets.DatasetDict(
        {
            str(domain): examples.select([i for i, v in enumerate(values) if v == domain])
            for domain in sorted(set(values), key=str)
        }
    )


@dataclass
class DuplicationReport:
    """Exact counts of a data-duplication control."""

    target_tokens: int
    """Tokens of the multi-task training set (one epoch) that the control matches."""
    source_tokens: int
    """Tokens of the single-task training set before duplication."""
    source_rows: int
    full_copies: int
    extra_rows: int
    """Rows of an extra, seeded partial copy."""
    rows: int
    tokens: int
    """Tokens of the control (one epoch); ``tokens <= target_tokens`` and the gap is below one row."""

    @property
    def token_gap(self) -> int:
        return self.target_tokens - self.tokens

    def to_dict(self) -> dict:
        return {**asdict(self), "token_gap": self.token_gap}


def token_count(encoded: datasets.Dataset, length_column: str = "length") -> int:
    """Number of tokens in encoded rows (sum of ``length``; windows of long texts count in full)."""
    if length_column not in encoded.column_names:
        raise ValueError(f"column {length_column!r} not in the encoded dataset ({encoded.column_names})")
    return int(np.sum(encoded[length_column], dtype=np.int64))


def duplication_control(
    single_task_encoded: datasets.Dataset,
    target_tokens: int,
    seed: int = 0,
    length_column: str = "length",
) -> tuple[datasets.Dataset, DuplicationReport]:
    """Repeat single-task training rows until their token count matches ``target_tokens``.

    The result holds ``k`` full copies (``k = target // source tokens``) plus a seeded random subset of
    rows, added greedily while the total stays within ``target_tokens`` (rows that would overshoot are
    skipped, so the gap ends below the shortest row left). ``example_index`` (if present) is renumbered so
    that repeated rows stay distinguishable.
    """
    source_tokens = token_count(single_task_encoded, length_column)
    if source_tokens == 0:
        raise ValueError("the single-task training set has no tokens")
    if target_tokens < source_tokens:
        raise ValueError(
            f"target_tokens={target_tokens} is below the single-task set's own {source_tokens} tokens: "
            "the control only ever adds data"
        )
    lengths = np.asarray(single_task_encoded[length_column], dtype=np.int64)
    copies = int(target_tokens // source_tokens)
    remaining = int(target_tokens - copies * source_tokens)
    extra: list[int] = []
    for row in np.random.default_rng(seed).permutation(len(lengths)):
        if lengths[row] <= remaining:
            extra.append(int(row))
            remaining -= int(lengths[row])
    indices = [i for _ in range(copies) for i in range(len(lengths))] + extra
    control = single_task_encoded.select(indices)
    if "example_index" in control.column_names:
        control = control.remove_columns("example_index").add_column("example_index", list(range(len(control))))
    report = DuplicationReport(
        target_tokens=int(target_tokens),
        source_tokens=source_tokens,
        source_rows=len(lengths),
        full_copies=copies,
        extra_rows=len(extra),
        rows=len(indices),
        tokens=int(target_tokens - remaining),
    )
    return control, report
