"""Reference baselines: majority class / label set, label priors, TF-IDF + logistic regression, on known data."""

import datasets
import numpy as np
import pytest

from modeling.metrics import compute_task_metrics
from mtl_study.baselines import (
    MAJORITY,
    PRIORS,
    PRIORS_TUNED,
    TFIDF_LR,
    baseline_rows,
    encode_labels,
    task_instances,
)

TOPIC = {"name": "topic", "level": "document", "problem_type": "single_label_classification", "labels": ["sport", "food", "art"]}
TAGS = {"name": "tags", "level": "document", "problem_type": "multi_label_classification", "labels": ["x", "y", "z"]}
ROLE = {"name": "role", "level": "span", "problem_type": "single_label_classification", "labels": ["hero", "villain"]}
WORDS = {"sport": "goal match team", "food": "bread soup salt", "art": "paint canvas museum"}


def examples(n):
    rows = []
    for i in range(n):
        topic = ["sport", "sport", "food", "art"][i % 4]  # sport is the majority class (half)
        hero = i % 3 != 0
        text = f"{WORDS[topic]} today. Ana {'saved the town' if hero else 'burned the town'} again."
        start = text.index("Ana")
        rows.append({"doc_id": f"d{i}", "text": text, "mentions": [{"start": start, "end": start + 3}],
                     "topic": topic if i % 5 else None,  # some texts unlabelled for topic
                     "tags": ["x", "y"] if i % 2 else ["x"],  # x always, y on half: the modal set is ["x"] or ["x","y"]
                     "role": ["hero" if hero else "villain"]})
    return datasets.Dataset.from_list(rows)


@pytest.fixture(scope="module")
def data():
    return examples(40), examples(20), examples(12)


def test_instances_and_labels_follow_the_data_contract(data):
    train, _, _ = data
    texts, labels = task_instances(train, ROLE, context_words=2)
    assert len(texts) == len(train) and texts[1] == "m_Ana team today. saved the"
    assert encode_labels(labels, ROLE).tolist()[:3] == [1, 0, 0]
    gold = encode_labels(task_instances(train, TAGS)[1], TAGS)
    assert gold[0].tolist() == [1, 0, 0] and gold[1].tolist() == [1, 1, 0]
    assert encode_labels([None, "food"], TOPIC).tolist() == [-100, 1]
    with pytest.raises(ValueError, match="label 'chess' is not among its labels"):
        encode_labels(["chess"], TOPIC)
    broken = datasets.Dataset.from_list([{"doc_id": "d", "text": "Ana", "mentions": [{"start": 0, "end": 3}], "role": ["hero", "hero"]}])
    with pytest.raises(ValueError, match="example 0 \\('d'\\), field 'role': 2 labels for 1 mentions"):
        task_instances(broken, ROLE)


def test_baseline_rows_have_known_scores(data):
    train, validation, test = data
    rows = baseline_rows(train, {"test": test}, [TOPIC, TAGS, ROLE], validation=validation)
    value = {(r["arm"], r["task"], r["metric"]): r["value"] for r in rows}
    assert {r["seed"] for r in rows} == {0} and {r["eval_set"] for r in rows} == {"test"}
    # majority: always "sport"; 9 labelled test topics, 4 of them sport -> F1(sport) = 8/13, 0 for the other two
    # present labels, so macro-F1 = (8/13) / 3
    gold = encode_labels(task_instances(test, TOPIC)[1], TOPIC)
    expected = compute_task_metrics(TOPIC, np.tile([1.0, 0, 0], (len(gold), 1)), gold)["macro_f1"]
    assert value[(MAJORITY, "topic", "macro_f1")] == pytest.approx(expected) == pytest.approx((8 / 13) / 3)
    assert value[(PRIORS, "topic", "macro_f1")] == pytest.approx(expected)  # argmax of the priors is the majority
    # the words give the topic and the verb the role away: TF-IDF + LR is perfect
    assert value[(TFIDF_LR, "topic", "macro_f1")] == 1.0 and value[(TFIDF_LR, "role", "macro_f1")] == 1.0
    # multi-label: priors are x 1.0, y 0.5, z 0 -> at 0.5 the set {x, y}; tuning cannot do better than a constant set
    assert value[(PRIORS, "tags", "exact_match")] == pytest.approx(0.5)
    assert (PRIORS_TUNED, "tags", "macro_f1") in value and (PRIORS_TUNED, "topic", "macro_f1") not in value
    thresholds = {r["arm"]: r["threshold"] for r in rows if r["task"] == "tags"}
    assert thresholds[PRIORS] == 0.5 and 0.05 <= thresholds[PRIORS_TUNED] <= 0.95
    assert {m for (_, _, m) in value} <= {"macro_f1", "micro_f1", "samples_f1", "exact_match"}


def test_a_single_class_task_and_an_unlabelled_task(data):
    train, _, test = data
    only_sport = train.filter(lambda r: r["topic"] == "sport")
    rows = baseline_rows(only_sport, {"test": test}, [TOPIC])
    tfidf = {r["metric"]: r["value"] for r in rows if r["arm"] == TFIDF_LR}
    majority = {r["metric"]: r["value"] for r in rows if r["arm"] == MAJORITY}
    assert tfidf == majority  # one class seen: logistic regression cannot fit, the baseline predicts it
    unlabelled = train.map(lambda r: {"topic": None})
    assert baseline_rows(unlabelled, {"test": test}, [TOPIC]) == []


def test_baselines_are_scored_with_the_models_decision_rule(data):
    # Priors of a rare-labels task: every label's prior is below 0.5, so at threshold 0.5 nothing passes. Models
    # decide with the top-1 fallback by default; a baseline scored without it would be held to another metric.
    train, _, test = data
    rare = train.map(lambda r, i: {"tags": [["x"], ["y"], ["z"]][i % 3]}, with_indices=True)
    plain = {(r["arm"], r["metric"]): r["value"] for r in baseline_rows(rare, {"test": test}, [TAGS])}
    fallback = {(r["arm"], r["metric"]): r["value"]
                for r in baseline_rows(rare, {"test": test}, [TAGS], top1_fallback=True)}
    assert plain[(PRIORS, "samples_f1")] == 0.0  # predicts nothing for anyone
    assert fallback[(PRIORS, "samples_f1")] > 0.0  # predicts the top prior, as a model would
    gold = encode_labels(task_instances(test, TAGS)[1], TAGS)
    priors = np.tile([14 / 40, 13 / 40, 13 / 40], (len(gold), 1))
    assert fallback[(PRIORS, "samples_f1")] == pytest.approx(
        compute_task_metrics(TAGS, priors, gold, top1_fallback=True)["samples_f1"])


def test_baseline_thresholds_follow_the_models_strategy_and_refit(data):
    """The models' --threshold_strategy (none: 0.5 for every label; per_label) and --refit_on_validation (fitted
    again on training + validation, thresholds kept) apply to the baselines too."""
    from modeling.thresholds import select_thresholds
    from mtl_study.baselines import fit_tfidf_lr

    train, validation, test = data
    skewed = validation.map(lambda r, i: {"tags": ["x", "z"] if i % 4 == 0 else ["x"]}, with_indices=True)

    def thresholds(**options):
        rows = baseline_rows(train, {"test": test}, [TAGS], validation=skewed, **options)
        return {r["arm"]: r["threshold"] for r in rows if r["metric"] == "samples_f1"}

    assert thresholds(threshold_strategy="none")[TFIDF_LR] == 0.5
    texts, gold = task_instances(train, TAGS)
    valid_texts, valid_gold = task_instances(skewed, TAGS)
    probabilities = fit_tfidf_lr(texts, encode_labels(gold, TAGS), TAGS)(valid_texts)
    expected = select_thresholds(probabilities, encode_labels(valid_gold, TAGS), "per_label", 2, False)
    per_label = thresholds(threshold_strategy="per_label", threshold_min_support=2)[TFIDF_LR]
    assert per_label == (expected[0] if len(set(expected)) == 1 else [round(t, 4) for t in expected])
    # refit: majority of training + validation, where validation's articles change the modal label set
    plain = {(r["arm"], r["metric"]): r["value"] for r in baseline_rows(train, {"test": test}, [TOPIC], validation=skewed)}
    food = validation.map(lambda r: {"topic": "food"})
    refit = {(r["arm"], r["metric"]): r["value"] for r in baseline_rows(
        train, {"test": test}, [TOPIC], validation=food, refit_examples=[*train, *food, *food])}
    assert plain[(MAJORITY, "micro_f1")] != refit[(MAJORITY, "micro_f1")]  # sport (half the test) -> food


def test_a_conditioned_baseline_is_held_against_its_conditions_arms_only():
    from mtl_study.baselines import applies_to, baseline_verdicts

    assert applies_to("baseline_tfidf_lr", "mtl@URW") and applies_to("baseline_tfidf_lr@URW", "stl@URW")
    assert not applies_to("baseline_tfidf_lr@URW", "mtl@CC") and not applies_to("baseline_tfidf_lr@URW", "mtl")
    rows = [{"arm": arm, "seed": s, "task": "topic", "eval_set": "CC", "metric": "macro_f1", "value": value}
            for arm, value in (("mtl@URW", 0.5), ("mtl@CC", 0.9)) for s in range(3)]
    rows += [{"arm": "baseline_tfidf_lr@URW", "seed": 0, "task": "topic", "eval_set": "CC", "metric": "macro_f1",
              "value": 0.6},
             {"arm": "baseline_tfidf_lr@CC", "seed": 0, "task": "topic", "eval_set": "CC", "metric": "macro_f1",
              "value": 0.95}]
    # mtl@URW misses its own condition's baseline (0.6), not CC's; mtl@CC misses CC's (0.95), not URW's.
    assert baseline_verdicts(rows) == [
        "topic (CC): mtl@CC does not beat baseline_tfidf_lr@CC (0.950) on macro_f1.",
        "topic (CC): mtl@URW does not beat baseline_tfidf_lr@URW (0.600) on macro_f1."]
