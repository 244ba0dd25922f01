"""Reference baselines every model arm must beat, on the same data and with the same metrics.

For each task, trained on the training examples (and fitted again on training + validation when the models are
refitted) and scored with :func:`modeling.metrics.compute_task_metrics` under the models' decision rule (top-1
fallback, relative threshold, macro averaging, threshold strategy: the study passes its own):

* ``baseline_majority``: the most frequent training label (single-label) or label set (multi-label), always;
* ``baseline_priors``: probabilities = the training label frequencies (decision threshold 0.5 for multi-label);
  ``baseline_priors_tuned`` (multi-label, when a validation set is given): the same probabilities with
  thresholds chosen on validation as the models' are (``modeling.thresholds.select_thresholds``);
* ``baseline_tfidf_lr``: TF-IDF + logistic regression (scikit-learn; one-vs-rest for multi-label, its thresholds
  chosen on validation the same way when given). Span tasks use the mention's words plus ``context_words`` words
  either side.

Rows are shaped like the runner's (``arm, seed, task, eval_set, metric, value``) with ``seed = 0``: baselines are
deterministic, and their arms start with ``baseline_`` so statistics never pair them by seed. A baseline fitted on
one condition's training data is named ``baseline_<name>@<condition>`` and is held against the model arms of that
condition only (``<arm>@<condition>``, as in ``cross_domain_evaluation``); one without ``@`` against every arm.
:func:`baseline_verdicts` says which model arm fails to beat which baseline.
"""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from typing import Mapping, Sequence

import numpy as np

from modeling.metrics import compute_task_metrics
from modeling.thresholds import select_thresholds
from modeling.vocabulary import IGNORE_INDEX, MULTI_LABEL, SPAN

from .stats import BASELINE_ARM_PREFIX, is_baseline_arm, summarize

logger = logging.getLogger(__name__)

#: Joins a baseline's name and the condition whose training data it was fitted on (``baseline_tfidf_lr@URW``).
CONDITION_SEPARATOR = "@"
MAJORITY, PRIORS, PRIORS_TUNED, TFIDF_LR = (f"{BASELINE_ARM_PREFIX}{name}" for name in ("majority", "priors", "priors_tuned", "tfidf_lr"))
#: Metrics copied into rows (those of the runner's rows that a task reports).
BASELINE_METRICS = ("macro_f1", "micro_f1", "samples_f1", "exact_match", "coarse_macro_f1", "main_role_accuracy")


# ------------------------------------------------------------------------------------------------ data
def task_instances(examples, task: Mapping, context_words: int = 8) -> tuple[list[str], list]:
    """``(texts, labels)`` of one task: one instance per example (document task) or per mention (span task).

    Labels are label names (single-label), lists of names (multi-label) or None (unlabelled). A span instance's
    text is the mention's words prefixed ``m_`` (so they differ from the same word in the context) plus the
    ``context_words`` words before and after it.
    """
    name = task["name"]
    texts, labels = [], []
    for index, example in enumerate(examples):
        value = example.get(name)
        if task.get("level") != SPAN:
            texts.append(example["text"])
            labels.append(value)
            continue
        mentions = example.get("mentions") or []
        values = value if value is not None else [None] * len(mentions)
        if len(values) != len(mentions):
            raise ValueError(f"example {index} ({example.get('doc_id')!r}), field {name!r}: {len(values)} labels for "
                             f"{len(mentions)} mentions (a span task needs one entry per mention)")
        text = example["text"]
        for mention, label in zip(mentions, values):
            before = text[: mention["start"]].split()[-context_words:] if context_words else []
            after = text[mention["end"]:].split()[:context_words]
            words = ["m_" + w for w in text[mention["start"]: mention["end"]].split()]
            texts.append(" ".join([*words, *before, *after]))
            labels.append(label)
    return texts, labels


def encode_labels(labels: Sequence, task: Mapping) -> np.ndarray:
    """Gold labels as :func:`compute_task_metrics` takes them (ids / multi-hot; IGNORE_INDEX = unlabelled)."""
    names = list(task["labels"])
    position = {label: i for i, label in enumerate(names)}

    def lookup(label):
        if label not in position:
            raise ValueError(f"task {task['name']!r}: label {label!r} is not among its labels {names}")
        return position[label]

    if task["problem_type"] == MULTI_LABEL:
        out = np.full((len(labels), len(names)), IGNORE_INDEX, dtype=np.int64)
        for row, value in enumerate(labels):
            if value is not None:
                out[row] = 0
                out[row, [lookup(v) for v in value]] = 1
        return out
    return np.array([IGNORE_INDEX if v is None else lookup(v) for v in labels], dtype=np.int64)


# ------------------------------------------------------------------------------------------------ predictors
def _labelled(texts: Sequence[str], gold: np.ndarray):
    mask = ~np.all(gold == IGNORE_INDEX, axis=-1) if gold.ndim == 2 else gold != IGNORE_INDEX
    return [t for t, keep in zip(texts, mask) if keep], gold[mask]


def majority_probabilities(train_gold: np.ndarray, task: Mapping, n: int) -> np.ndarray:
    """One-hot of the most frequent training class / label set, for ``n`` instances."""
    row = np.zeros(len(task["labels"]))
    if task["problem_type"] == MULTI_LABEL:
        label_set, _ = Counter(tuple(np.flatnonzero(r)) for r in train_gold).most_common(1)[0]
        row[list(label_set)] = 1.0
    else:
        row[np.bincount(train_gold, minlength=len(row)).argmax()] = 1.0
    return np.tile(row, (n, 1))


def prior_probabilities(train_gold: np.ndarray, task: Mapping, n: int) -> np.ndarray:
    """The training label frequencies, for ``n`` instances."""
    if task["problem_type"] == MULTI_LABEL:
        row = train_gold.mean(axis=0)
    else:
        row = np.bincount(train_gold, minlength=len(task["labels"])) / len(train_gold)
    return np.tile(row.astype(float), (n, 1))


def fit_tfidf_lr(train_texts: Sequence[str], train_gold: np.ndarray, task: Mapping):
    """A fitted TF-IDF + logistic-regression pipeline; returns ``predict(texts) -> probabilities [N, C]``."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import make_pipeline

    num_labels = len(task["labels"])
    multi = task["problem_type"] == MULTI_LABEL
    seen = np.unique(train_gold) if not multi else None
    if not multi and seen.size < 2:  # one class only: logistic regression cannot fit, predict it always
        return lambda texts: majority_probabilities(train_gold, task, len(texts))
    classifier = LogisticRegression(max_iter=2000)
    model = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
                          OneVsRestClassifier(classifier) if multi else classifier)
    with warnings.catch_warnings():
        # A label on every (or no) training text gets a constant one-vs-rest predictor: expected, not news.
        warnings.filterwarnings("ignore", message="Label .* is present in all training examples", category=UserWarning)
        model.fit(list(train_texts), train_gold)

    def predict(texts):
        probabilities = model.predict_proba(list(texts))
        if multi:
            return probabilities
        full = np.zeros((len(texts), num_labels))
        full[:, seen] = probabilities  # classes absent from training get probability 0
        return full

    return predict


# ------------------------------------------------------------------------------------------------ rows
def baseline_rows(train_examples, eval_sets: Mapping[str, object], tasks: Sequence[Mapping], validation=None,
                  metrics: Sequence[str] = BASELINE_METRICS, context_words: int = 8, macro_average: str = "present",
                  top1_fallback: bool = False, relative_threshold: float = 0.0, threshold_strategy: str = "shared",
                  threshold_min_support: int = 5, refit_examples=None) -> list[dict]:
    """Results rows of every baseline x task x evaluation set x metric (see the module docstring).

    ``macro_average``, ``top1_fallback``, ``relative_threshold`` and ``threshold_strategy`` /
    ``threshold_min_support`` are the models' decision rule and averaging (the study passes its own): a baseline
    scored by another rule would be compared on another metric. Multi-label thresholds are chosen on `validation`
    as the models' are (``modeling.thresholds.select_thresholds``; ``"none"``: 0.5). With `refit_examples` (the
    models' ``--refit_on_validation``: training + validation), the baselines are fitted again on them after their
    thresholds were chosen, as the models are.
    """
    decision = {"macro_average": macro_average, "top1_fallback": top1_fallback, "relative_threshold": relative_threshold}
    rows = []
    for task in tasks:
        train_texts, train_gold = _labelled(*_instances(train_examples, task, context_words))
        if len(train_gold) == 0:
            logger.warning("task %r has no labelled training instance: no baseline", task["name"])
            continue
        multi = task["problem_type"] == MULTI_LABEL
        num_labels = len(task["labels"])
        predictors = _predictors(train_texts, train_gold, task, tuned=multi and validation is not None)
        thresholds = {arm: [0.5] * num_labels for arm in predictors}
        if multi and validation is not None:
            valid_texts, valid_gold = _instances(validation, task, context_words)
            for arm in (PRIORS_TUNED, TFIDF_LR):
                chosen = select_thresholds(predictors[arm](valid_texts), valid_gold, threshold_strategy,
                                           threshold_min_support, top1_fallback, relative_threshold=relative_threshold)
                thresholds[arm] = chosen if chosen is not None else thresholds[arm]
        if refit_examples is not None:
            predictors = _predictors(*_labelled(*_instances(refit_examples, task, context_words)), task,
                                     tuned=multi and validation is not None)
        for set_name, examples in eval_sets.items():
            texts, gold = _instances(examples, task, context_words)
            for arm, predict in predictors.items():
                scores = compute_task_metrics(task, predict(texts), gold, per_label=False, **decision,
                                              thresholds=thresholds[arm] if multi else None)
                shown = thresholds[arm][0] if len(set(thresholds[arm])) == 1 else [round(t, 4) for t in thresholds[arm]]
                rows += [{"arm": arm, "seed": 0, "task": task["name"], "eval_set": set_name, "metric": m,
                          "value": float(scores[m]), **({"threshold": shown} if multi else {})}
                         for m in metrics if m in scores]
    return rows


def _predictors(texts, gold, task: Mapping, tuned: bool) -> dict:
    """The baselines fitted on ``(texts, gold)``: arm -> (texts -> probabilities)."""
    predictors = {MAJORITY: lambda batch: majority_probabilities(gold, task, len(batch)),
                  PRIORS: lambda batch: prior_probabilities(gold, task, len(batch)),
                  TFIDF_LR: fit_tfidf_lr(texts, gold, task)}
    if tuned:  # the same probabilities as PRIORS, with thresholds chosen on validation
        predictors[PRIORS_TUNED] = predictors[PRIORS]
    return predictors


def _instances(examples, task: Mapping, context_words: int) -> tuple[list[str], np.ndarray]:
    texts, labels = task_instances(examples, task, context_words)
    return texts, encode_labels(labels, task)


# ------------------------------------------------------------------------------------------------ verdicts
def applies_to(baseline_arm: str, model_arm: str) -> bool:
    """Whether a baseline is held against a model arm: ``baseline_x@c`` against the arms of condition ``c``
    (``<arm>@c``) only, ``baseline_x`` against every arm."""
    _, at, condition = baseline_arm.partition(CONDITION_SEPARATOR)
    return not at or model_arm.endswith(f"{CONDITION_SEPARATOR}{condition}")


def beaten_baselines(rows: Sequence[Mapping], metric: str) -> dict[tuple[str, str, str], list[tuple[str, float]]]:
    """``(arm, task, eval_set) -> [(baseline, its value), ...]`` for every baseline the arm's mean does NOT beat."""
    baselines = [r for r in rows if is_baseline_arm(r["arm"]) and r["metric"] == metric]
    out: dict[tuple[str, str, str], list[tuple[str, float]]] = {}
    for s in summarize([r for r in rows if not is_baseline_arm(r["arm"])], metric=metric):
        failed = [(b["arm"], float(b["value"])) for b in baselines
                  if b["task"] == s.task and b["eval_set"] == s.eval_set and applies_to(b["arm"], s.arm)
                  and not s.mean > float(b["value"])]
        out[(s.arm, s.task, s.eval_set)] = sorted(failed)
    return out


def baseline_verdicts(rows: Sequence[Mapping], metric: str = "macro_f1") -> list[str]:
    """One line per task x evaluation set that has baselines: which model arms do not beat which baselines."""
    has_baseline = {(r["task"], r["eval_set"]) for r in rows if is_baseline_arm(r["arm"]) and r["metric"] == metric}
    failures = beaten_baselines(rows, metric)
    lines = []
    for task, eval_set in sorted(has_baseline):
        arms = {arm: failed for (arm, t, e), failed in failures.items() if (t, e) == (task, eval_set)}
        if not arms:
            continue
        losers = {arm: failed for arm, failed in arms.items() if failed}
        if not losers:
            lines.append(f"{task} ({eval_set}): every model arm beats every baseline on {metric}.")
        for arm, failed in sorted(losers.items()):
            names = ", ".join(f"{b} ({v:.3f})" for b, v in failed)
            lines.append(f"{task} ({eval_set}): {arm} does not beat {names} on {metric}.")
    return lines
