"""Task specifications for SemEval-2025 Task 10 and conversion of loaded articles to multi-task examples.

Two tasks, each at two granularities:

* **entity framing** (span level, one prediction per mention): ``fine`` = the 22 fine roles,
  multi-label, with ``parents`` mapping each fine role to its main role; ``coarse`` = the 3 main roles,
  single-label.
* **narratives** (document level, multi-label): ``fine`` = subnarratives (parents map each to its
  narrative), ``coarse`` = narratives. The label set is one domain's (``domain="URW"``/``"CC"``) or both
  (``domain=None``). ``Other`` is always an explicit label (first in the list), and ``"<narrative>: Other"``
  subnarratives are ordinary fine labels.

For a per-domain narrative task, articles of the other domain get no label (``None``) and labels of the
other domain on an in-domain article (the URW-id articles with CC narratives) are dropped; an article left
with nothing is labelled ``Other``.

The specs are plain dicts as in :mod:`modeling.vocabulary` (``name, level, problem_type, labels, parents,
thresholds``), accepted by ``MultiTaskConfig``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Literal, Sequence

import datasets

from .taxonomy import FINE_ROLES, FINE_TO_MAIN, MAIN_ROLES, OTHER, NarrativeTaxonomy, domain_of_label

from modeling.vocabulary import MULTI_LABEL as MULTI, SINGLE_LABEL as SINGLE  # noqa: F401


@dataclass(frozen=True)
class SemEvalTask:
    """One SemEval task at a chosen granularity and label domain, and how to read its labels from an article."""

    name: str
    kind: Literal["entity_framing", "narratives"]
    granularity: Literal["fine", "coarse"]
    labels: tuple[str, ...]
    parents: dict[str, str] | None = None
    domain: str | None = None
    """Label domain of a narrative task (``None`` = both)."""
    thresholds: tuple[float, ...] | None = field(default=None)

    @property
    def level(self) -> str:
        return "span" if self.kind == "entity_framing" else "document"

    @property
    def problem_type(self) -> str:
        if self.kind == "entity_framing" and self.granularity == "coarse":
            return SINGLE
        return MULTI

    @property
    def spec(self) -> dict:
        """The task dict of :mod:`modeling.vocabulary` (what ``MultiTaskConfig(tasks=[...])`` takes)."""
        return {
            "name": self.name,
            "level": self.level,
            "problem_type": self.problem_type,
            "labels": list(self.labels),
            "parents": dict(self.parents) if self.parents else None,
            "thresholds": list(self.thresholds) if self.thresholds else None,
        }

    def labels_of(self, article: dict):
        """The value of this task's column for one loaded article (see ``load_semeval``'s columns)."""
        if self.kind == "entity_framing":
            if not article.get("has_entity_annotations", bool(article["mentions"])):
                return None
            if self.granularity == "fine":
                return [list(m["fine_roles"]) for m in article["mentions"]]
            return [m["main_role"] for m in article["mentions"]]

        column = "subnarratives" if self.granularity == "fine" else "narratives"
        values = article.get(column)
        if values is None:
            return None
        if self.domain is not None:
            if article.get("domain") != self.domain:
                return None
            values = [v for v in values if v == OTHER or domain_of_label(v) == self.domain]
            values = values or [OTHER]
        unknown = [v for v in values if v not in self.labels]
        if unknown:
            raise ValueError(
                f"article {article.get('id')!r}, field {column!r}: labels {unknown} are not in the label set of "
                f"task {self.name!r}; build the task from the full taxonomy (taxonomy files or all splits' labels)"
            )
        return list(values)


def entity_framing_task(granularity: Literal["fine", "coarse"] = "fine", name: str | None = None) -> SemEvalTask:
    """Entity framing over the fixed role taxonomy: fine = 22 roles (multi-label), coarse = 3 main roles."""
    if granularity == "fine":
        return SemEvalTask(name or "entity_framing_fine", "entity_framing", "fine", FINE_ROLES, dict(FINE_TO_MAIN))
    if granularity == "coarse":
        return SemEvalTask(name or "entity_framing_coarse", "entity_framing", "coarse", MAIN_ROLES, None)
    raise ValueError(f"granularity must be 'fine' or 'coarse', got {granularity!r}")


def narrative_task(
    taxonomy: NarrativeTaxonomy,
    granularity: Literal["fine", "coarse"] = "fine",
    domain: str | None = None,
    name: str | None = None,
) -> SemEvalTask:
    """Narrative classification (multi-label, document level) over ``taxonomy``'s labels plus ``Other``."""
    if domain is not None and domain not in taxonomy.tree:
        raise ValueError(f"domain {domain!r} is not in the narrative taxonomy (domains: {list(taxonomy.tree)})")
    suffix = f"_{domain.lower()}" if domain else ""
    if granularity == "fine":
        subs = [s for s in taxonomy.subnarratives(domain) if s != OTHER]
        parents = {OTHER: OTHER, **taxonomy.subnarrative_parents(domain)}
        return SemEvalTask(name or f"narratives_fine{suffix}", "narratives", "fine", (OTHER, *subs), parents, domain)
    if granularity == "coarse":
        narratives = [n for n in taxonomy.narratives(domain) if n != OTHER]
        return SemEvalTask(name or f"narratives_coarse{suffix}", "narratives", "coarse", (OTHER, *narratives), None, domain)
    raise ValueError(f"granularity must be 'fine' or 'coarse', got {granularity!r}")


def semeval_tasks(
    taxonomy: NarrativeTaxonomy | None = None,
    articles: datasets.Dataset | Iterable[dict] | None = None,
    entity_granularity: Literal["fine", "coarse"] | None = "fine",
    narrative_granularity: Literal["fine", "coarse"] | None = "fine",
    narrative_domains: Literal["both", "per_domain"] = "both",
) -> list[SemEvalTask]:
    """The usual task list: entity framing + narratives (one task over both domains, or one per domain).

    The narrative taxonomy comes from ``taxonomy`` or, failing that, from the labels of ``articles``
    (then every split that will be encoded should be passed, or unseen labels raise at conversion).
    A granularity of ``None`` leaves that task out.
    """
    tasks: list[SemEvalTask] = []
    if entity_granularity is not None:
        tasks.append(entity_framing_task(entity_granularity))
    if narrative_granularity is not None:
        if taxonomy is None:
            if articles is None:
                raise ValueError("give a narrative taxonomy or the articles to infer it from")
            rows = list(articles)
            taxonomy = NarrativeTaxonomy.from_labels(
                [n for r in rows for n in (r["narratives"] or [])],
                [s for r in rows for s in (r["subnarratives"] or [])],
            )
        if narrative_domains == "both":
            tasks.append(narrative_task(taxonomy, narrative_granularity))
        elif narrative_domains == "per_domain":
            tasks.extend(narrative_task(taxonomy, narrative_granularity, d) for d in taxonomy.tree)
        else:
            raise ValueError(f"narrative_domains must be 'both' or 'per_domain', got {narrative_domains!r}")
    return tasks


def task_specs(tasks: Sequence[SemEvalTask | dict]) -> list[dict]:
    """Plain task dicts for ``MultiTaskConfig``; names must be unique."""
    specs = [t.spec if isinstance(t, SemEvalTask) else dict(t) for t in tasks]
    names = [s["name"] for s in specs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"duplicate task names {duplicates}: every task needs its own name")
    return specs


def _task_feature(spec: dict) -> datasets.features.FeatureType:
    string = datasets.Value("string")
    multi = spec["problem_type"] == MULTI
    if spec["level"] == "document":
        return datasets.List(string) if multi else string
    return datasets.List(datasets.List(string)) if multi else datasets.List(string)


def multitask_features(tasks: Sequence[SemEvalTask | dict], extra: dict | None = None) -> datasets.Features:
    """Schema of the "multi-task examples" of :mod:`modeling.vocabulary` for these tasks."""
    features = {
        "doc_id": datasets.Value("string"),
        "text": datasets.Value("string"),
        "mentions": datasets.List({"start": datasets.Value("int64"), "end": datasets.Value("int64")}),
    }
    features.update(extra or {})
    for spec in task_specs(tasks):
        features[spec["name"]] = _task_feature(spec)
    return datasets.Features(features)


def to_multitask_examples(
    articles: datasets.Dataset | Iterable[dict],
    tasks: Sequence[SemEvalTask],
    passthrough: Sequence[str] = ("domain", "language"),
) -> datasets.Dataset:
    """Convert loaded SemEval articles to the "multi-task examples" format of :mod:`modeling.vocabulary`.

    Columns: ``doc_id``, ``text``, ``mentions`` (``start``/``end`` only), one column per task named like
    the task, and the ``passthrough`` columns that the articles have.
    """
    rows = []
    present: list[str] = []
    for article in articles:
        present = [c for c in passthrough if c in article]
        row = {
            "doc_id": article["id"],
            "text": article["text"],
            "mentions": [{"start": m["start"], "end": m["end"]} for m in article["mentions"]],
        }
        row.update({c: article[c] for c in present})
        for task in tasks:
            row[task.name] = task.labels_of(article)
        rows.append(row)
    extra = {c: datasets.Value("string") for c in present}
    features = multitask_features(tasks, extra)
    if not rows:
        return datasets.Dataset.from_dict({k: [] for k in features}, features=features)
    return datasets.Dataset.from_list(rows, features=features)
