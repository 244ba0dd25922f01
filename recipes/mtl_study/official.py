"""SemEval-2025 Task 10's official measures of a run's model on an evaluation set, as extra results metrics.

The trainer's metrics are scikit-learn's over the model's own label spaces (subnarratives with ``Other``, the 22
fine roles per mention); the leaderboard scores something else: narratives samples-F1 on the parents of the
predicted subnarratives, subnarratives samples-F1 over the organisers' class lists, fine-role exact match and
main-role accuracy per mention (`data_prep.semeval_official_metrics`). This module scores a trained model the
way a submission is scored: ``MultiTaskModel.predict`` on the raw texts (windows, thresholds and decoding as the
saved model has them), narratives decoded within the article's domain as ``python -m data_prep.semeval_submit``
does by default, the official lines built by `submission_from_predictions`, and the official measures.

Each measure is credited to the task that decided it: narratives to the fine narrative task (else the coarse one),
subnarratives to the fine narrative task only, fine roles to the fine entity task, the main role to the coarse
entity task when the run has one (else the fine one, whose best role's parent decides). Metric names carry the
prefix ``official_``.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from typing import Mapping, Sequence

from modeling.vocabulary import SPAN

logger = logging.getLogger(__name__)

OFFICIAL_PREFIX = "official_"
#: every metric this module can add to a task's rows
OFFICIAL_METRICS = tuple(OFFICIAL_PREFIX + name for name in (
    "narratives_samples_f1", "subnarratives_samples_f1", "fine_role_exact_match", "main_role_accuracy"))


def gold_articles(examples) -> list[dict]:
    """Articles in ``load_semeval``'s shape from multi-task examples that carry every SemEval task at both
    granularities (``load_experiment_data``'s sets); mentions without a main role are left out."""
    articles = []
    for example in examples:
        fine, coarse = example.get("entity_framing_fine"), example.get("entity_framing_coarse")
        mentions = []
        for index, mention in enumerate(example["mentions"]):
            main = coarse[index] if coarse else None
            if main is None:
                continue
            start, end = mention["start"], mention["end"]
            mentions.append({"start": start, "end": end, "text": example["text"][start:end], "main_role": main,
                             "fine_roles": list(fine[index] or []) if fine else []})
        articles.append({"id": example["doc_id"], "text": example["text"], "mentions": mentions,
                         "narratives": example.get("narratives_coarse"), "subnarratives": example.get("narratives_fine")})
    return articles


def _credited(tasks: Sequence[Mapping], articles: list[dict], predictions: list[dict], classes,
              thresholds_of=None, relative_threshold: float = 0.0,
              parent_threshold: float | None = None) -> dict[str, dict[str, float]]:
    """Official measures of `predictions` (``predict``'s ``return_scores=True`` form) credited to their tasks;
    narratives decoded within each article's domain when `thresholds_of` is given (the submission default), parent
    first with `parent_threshold`."""
    from data_prep.semeval_official import (
        Submission, constrain_predictions_to_domain, submission_from_articles, submission_from_predictions, task_roles,
    )
    from data_prep.semeval_official_metrics import official_metrics

    roles = task_roles(tasks)
    narrative = (roles.narrative_fine or roles.narrative_coarse or [None])[0]
    entity = roles.entity_coarse or roles.entity_fine
    if narrative is not None and thresholds_of is not None:
        predictions = constrain_predictions_to_domain(articles, predictions, tasks, thresholds_of, relative_threshold,
                                                      parent_threshold)
    predicted = submission_from_predictions(articles, predictions, tasks)
    gold = submission_from_articles(articles)
    labelled = {line.article_id for line in gold.narratives}  # articles kept for their mentions only have no line
    gold = Submission(mentions=gold.mentions if entity else [], narratives=gold.narratives if narrative else [])
    predicted = Submission(mentions=predicted.mentions if entity else [],
                           narratives=[line for line in predicted.narratives if line.article_id in labelled] if narrative else [])
    scores = official_metrics(gold, predicted, classes)
    credited: dict[str, dict[str, float]] = {}

    def credit(task: str | None, measure: str) -> None:
        if task is not None and not math.isnan(scores[measure]):
            credited.setdefault(task, {})[OFFICIAL_PREFIX + measure] = float(scores[measure])

    credit(narrative, "narratives_samples_f1")
    credit(roles.narrative_fine[0] if roles.narrative_fine else None, "subnarratives_samples_f1")
    credit(roles.entity_fine, "fine_role_exact_match")
    credit(entity, "main_role_accuracy")
    return credited


def _scored_articles(tasks: Sequence[Mapping], examples) -> list[dict]:
    """The articles a SemEval task set can be scored on (none when no task is a SemEval one)."""
    from data_prep.semeval_official import task_roles

    roles = task_roles(tasks)
    narrative = bool(roles.narrative_fine or roles.narrative_coarse)
    entity = bool(roles.entity_coarse or roles.entity_fine)
    if not (narrative or entity):  # e.g. a ticket table: nothing to score officially
        return []
    return [a for a in gold_articles(examples)
            if (narrative and a["narratives"] is not None) or (entity and a["mentions"])]


def _predict_articles(model, tokenizer, articles: list[dict], batch_size: int) -> list[dict]:
    import torch

    with torch.inference_mode():
        return model.predict([a["text"] for a in articles],
                             mentions=[[(m["start"], m["end"]) for m in a["mentions"]] for a in articles],
                             tokenizer=tokenizer, batch_size=batch_size, return_scores=True)


def official_task_metrics(model, tokenizer, examples, classes=None, batch_size: int = 32) -> dict[str, dict[str, float]]:
    """``{task: {official_<measure>: value}}`` of `model` on `examples` (see the module docstring); ``{}`` when
    none of the model's tasks is a SemEval task. Fine narratives are decoded parent first when the model's config
    carries a ``narrative_parent_threshold`` (:func:`tune_parent_first`)."""
    from data_prep.narrative_decoding import PARENT_THRESHOLD_ATTRIBUTE

    articles = _scored_articles(model.config.tasks, examples)
    if not articles:
        return {}
    predictions = _predict_articles(model, tokenizer, articles, batch_size)
    return _credited(model.config.tasks, articles, predictions, classes, model.config.thresholds_of,
                     model.config.relative_threshold, getattr(model.config, PARENT_THRESHOLD_ATTRIBUTE, None))


def tune_parent_first(model, tokenizer, validation_examples, classes=None, batch_size: int = 32) -> float | None:
    """Choose the narrative threshold of parent-first decoding on validation articles (the sum of the official
    narratives and subnarratives samples-F1, domain-constrained as a submission is) and store it on
    ``model.config`` as ``narrative_parent_threshold``, so that the saved model and the submission command use it.
    Returns it; None (and nothing stored) when the model has no fine narrative task or validation no narratives."""
    from data_prep.narrative_decoding import PARENT_THRESHOLD_ATTRIBUTE, tune_parent_threshold
    from data_prep.semeval_official import task_roles

    tasks = model.config.tasks
    roles = task_roles(tasks)
    if not roles.narrative_fine or not roles.parents.get(roles.narrative_fine[0]):
        return None
    fine = roles.narrative_fine
    spec = next(task for task in tasks if task["name"] == fine[0])
    # The gold comes from the fine narrative column alone (its parents give the narratives): a run restricted to
    # some articles' subnarratives (cross-domain training) must not tune on the coarse column, which it never saw.
    parents = roles.parents[fine[0]]
    articles = [{**a, "narratives": list(dict.fromkeys(parents.get(s, s) for s in a["subnarratives"]))}
                for a in gold_articles(validation_examples) if a["subnarratives"] is not None]
    if not articles:
        return None
    predictions = [{fine[0]: p[fine[0]]} for p in _predict_articles(model, tokenizer, articles, batch_size)]

    def score_at(threshold: float) -> float:
        scores = _credited([spec], articles, predictions, classes, model.config.thresholds_of,
                           model.config.relative_threshold, threshold).get(fine[0], {})
        return sum(scores.values())

    threshold = tune_parent_threshold(score_at)
    setattr(model.config, PARENT_THRESHOLD_ATTRIBUTE, threshold)
    return threshold


def majority_task_metrics(train_examples, examples, tasks: Sequence[Mapping], classes=None) -> dict[str, dict[str, float]]:
    """The official measures of ``baseline_majority``: every article gets the most frequent training label set of
    each document task, every mention the most frequent training label (set) of each span task."""
    articles = _scored_articles(tasks, examples)
    if not articles:
        return {}
    majority = {}
    for task in tasks:
        values = [example.get(task["name"]) for example in train_examples]
        if task["level"] == SPAN:
            values = [v for per_mention in values if per_mention for v in per_mention]
        counts = Counter(tuple(sorted(v)) if isinstance(v, list) else v for v in values if v is not None)
        if not counts:
            return {}
        best = counts.most_common(1)[0][0]
        majority[task["name"]] = list(best) if isinstance(best, tuple) else best

    def entry(task, value):
        chosen = set(value) if isinstance(value, list) else {value}
        return {"prediction": value, "scores": {label: float(label in chosen) for label in task["labels"]}}

    predictions = [{task["name"]: ([entry(task, majority[task["name"]])] * len(article["mentions"])
                                   if task["level"] == SPAN else entry(task, majority[task["name"]]))
                    for task in tasks} for article in articles]
    return _credited(tasks, articles, predictions, classes)


def official_classes(data_dir: str | None):
    """The organisers' subtask-2 class lists when the data folder has a ``taxonomy/`` (else None: every label
    seen counts)."""
    from pathlib import Path

    if data_dir and (Path(data_dir) / "taxonomy").is_dir():
        from data_prep.semeval_official_metrics import load_official_classes

        return load_official_classes(Path(data_dir) / "taxonomy")
    return None


def official_baseline_rows(train_examples, eval_sets: Mapping[str, object], tasks: Sequence[Mapping],
                           classes=None) -> list[dict]:
    """``baseline_majority`` rows of the official measures (the all-``Other`` answer when ``Other`` alone is the
    most frequent narrative set), next to the trainer-metric baselines of `mtl_study.baselines`."""
    from .baselines import MAJORITY

    rows = []
    for set_name, examples in eval_sets.items():
        for task, measures in majority_task_metrics(train_examples, examples, tasks, classes).items():
            rows += [{"arm": MAJORITY, "seed": 0, "task": task, "eval_set": set_name, "metric": metric, "value": value}
                     for metric, value in measures.items()]
    return rows


def official_rows(model, tokenizer, eval_sets: Mapping[str, object], scored: Mapping[str, Sequence[str]],
                  classes=None, **row_fields) -> list[dict]:
    """Results rows of the official measures on every named set (only for the tasks scored on it)."""
    rows = []
    for set_name, examples in eval_sets.items():
        for task, measures in official_task_metrics(model, tokenizer, examples, classes).items():
            if task not in scored.get(set_name, [task]):
                continue
            rows += [{"task": task, "eval_set": set_name, "metric": metric, "value": value, **row_fields}
                     for metric, value in measures.items()]
    return rows
