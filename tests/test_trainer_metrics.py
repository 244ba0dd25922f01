"""modeling.metrics against scikit-learn and hand-computed values."""

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from modeling.metrics import (
    compute_multitask_metrics,
    compute_task_metrics,
    expected_calibration_error,
    probabilities_from_logits,
)
from modeling.thresholds import tune_thresholds

MULTI = {"name": "tags", "level": "document", "problem_type": "multi_label_classification",
         "labels": ["a", "b", "c", "d", "e"]}
SINGLE = {"name": "topic", "level": "document", "problem_type": "single_label_classification",
          "labels": ["x", "y", "z", "w"]}


def _random_multi(seed=0, n=40):
    rng = np.random.default_rng(seed)
    gold = (rng.random((n, 5)) < 0.3).astype(float)
    gold[:, 4] = 0  # label 'e' never present
    probabilities = np.clip(gold * 0.6 + rng.random((n, 5)) * 0.5, 0, 1)
    return probabilities, gold


def test_multi_label_metrics_match_sklearn():
    probabilities, gold = _random_multi()
    predicted = probabilities >= 0.5
    metrics = compute_task_metrics(MULTI, probabilities, gold)
    assert metrics["micro_f1"] == pytest.approx(f1_score(gold, predicted, average="micro"))
    present = [0, 1, 2, 3]
    assert metrics["macro_f1"] == pytest.approx(f1_score(gold, predicted, average="macro", labels=present))
    assert metrics["macro_f1_num_labels"] == 4
    every = compute_task_metrics(MULTI, probabilities, gold, macro_average="all")
    assert every["macro_f1"] == pytest.approx(f1_score(gold, predicted, average="macro", zero_division=0))
    assert metrics["samples_f1"] == pytest.approx(f1_score(gold, predicted, average="samples", zero_division=1))
    assert metrics["exact_match"] == pytest.approx(accuracy_score(gold, predicted))
    for index, name in enumerate(MULTI["labels"][:4]):
        assert metrics[f"f1_{name}"] == pytest.approx(f1_score(gold[:, index], predicted[:, index]))


def test_a_one_label_multi_label_task_is_scored_and_tuned():
    """The config's advice for a yes/no label (multi_label_classification, one label): scikit-learn reads a
    single indicator column as a binary target, and refuses samples-F1 on it."""
    from modeling.thresholds import select_thresholds

    spam = {"name": "spam", "level": "document", "problem_type": "multi_label_classification", "labels": ["spam"]}
    gold = np.array([[1.0], [0.0], [1.0], [0.0], [0.0]])
    probabilities = np.array([[0.9], [0.6], [0.2], [0.1], [0.3]])
    predicted = probabilities >= 0.5
    metrics = compute_task_metrics(spam, probabilities, gold)
    assert metrics["f1_spam"] == metrics["micro_f1"] == metrics["macro_f1"] == pytest.approx(f1_score(gold[:, 0], predicted[:, 0]))
    assert metrics["samples_f1"] == metrics["exact_match"] == pytest.approx(3 / 5)  # agreement per row, empty rows 1
    # samples-F1 4/5 from 0.65 to 0.9 (only the 0.9 row predicted; the empty rows agree): the plateau's value nearest 0.5
    assert select_thresholds(probabilities, gold, "shared", top1_fallback=False) == [pytest.approx(0.65)]


def test_unlabelled_rows_are_ignored_and_thresholds_apply():
    probabilities, gold = _random_multi(1)
    with_missing = np.vstack([gold, np.full((3, 5), -100.0)])
    padded = np.vstack([probabilities, np.full((3, 5), 0.9)])
    assert compute_task_metrics(MULTI, padded, with_missing) == compute_task_metrics(MULTI, probabilities, gold)
    strict = compute_task_metrics(MULTI, probabilities * 0.95, gold, thresholds=[0.96] * 5)
    assert strict["micro_f1"] == 0.0


def test_an_unknown_entry_in_a_labelled_row_is_neither_gold_nor_predicted():
    # Row [1, -100, 0, 0, 0]: label b is unknown for this example (the loss skips it). Not predicting it there must
    # not count as a miss (read as gold, -100 would make it one): the row is scored on the labels it knows.
    probabilities = np.array([[0.9, 0.1, 0.1, 0.1, 0.1], [0.9, 0.9, 0.1, 0.1, 0.1]])
    partial = np.array([[1, -100, 0, 0, 0], [1, 1, 0, 0, 0]], dtype=float)
    metrics = compute_task_metrics(MULTI, probabilities, partial)
    known = np.array([[True, False, True, True, True], [True] * 5])
    gold, predicted = partial == 1, (probabilities >= 0.5) & known
    assert metrics["samples_f1"] == pytest.approx(f1_score(gold, predicted, average="samples", zero_division=1)) == 1.0
    assert metrics["exact_match"] == 1.0 and metrics["f1_b"] == 1.0
    cells = probabilities[known]
    assert metrics["ece"] == pytest.approx(expected_calibration_error(cells, gold[known]))


def test_single_label_metrics_and_calibration():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(50, 4))
    gold = rng.integers(0, 3, size=50)  # 'w' never gold
    probabilities = probabilities_from_logits(logits, "single_label_classification")
    predicted = probabilities.argmax(1)
    metrics = compute_task_metrics(SINGLE, probabilities, gold)
    assert metrics["accuracy"] == pytest.approx(accuracy_score(gold, predicted))
    assert metrics["micro_f1"] == pytest.approx(f1_score(gold, predicted, average="micro", labels=[0, 1, 2, 3]))
    # 'w' is predicted but never gold: it counts (as 0), exactly as in scikit-learn's default macro-F1
    assert (predicted == 3).any()
    assert metrics["macro_f1"] == pytest.approx(f1_score(gold, predicted, average="macro", zero_division=np.nan))
    assert metrics["macro_f1"] < f1_score(gold, predicted, average="macro", labels=[0, 1, 2])
    assert metrics["macro_f1_num_labels"] == 4
    confidences = probabilities.max(1)
    correct = predicted == gold
    # ECE by its definition, bin by bin
    edges = np.linspace(0, 1, 16)
    expected = sum(
        np.sum(in_bin) / 50 * abs(correct[in_bin].mean() - confidences[in_bin].mean())
        for in_bin in ((confidences > lo) & (confidences <= hi) for lo, hi in zip(edges[:-1], edges[1:]))
        if in_bin.any()
    )
    assert metrics["ece"] == pytest.approx(expected)


def test_expected_calibration_error_perfect_and_worst():
    assert expected_calibration_error([1.0, 1.0], [1, 1]) == 0.0
    assert expected_calibration_error([1.0, 1.0], [0, 0]) == 1.0
    assert expected_calibration_error([0.5, 0.5], [1, 0], num_bins=10) == 0.0


def test_hierarchical_coarse_metrics_and_main_role():
    task = {"name": "roles", "level": "span", "problem_type": "multi_label_classification",
            "labels": ["Guardian", "Martyr", "Instigator", "Other"],
            "parents": {"Guardian": "Protagonist", "Martyr": "Protagonist", "Instigator": "Antagonist"}}
    gold = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=float)
    probabilities = np.array([
        [0.2, 0.9, 0.1, 0.1],  # wrong fine role, right main role
        [0.1, 0.8, 0.1, 0.1],  # exact
        [0.7, 0.1, 0.6, 0.1],  # both roles predicted; argmax main role wrong
        [0.1, 0.1, 0.1, 0.4],  # nothing predicted; argmax 'Other' right
    ])
    metrics = compute_task_metrics(task, probabilities, gold)
    assert metrics["exact_match"] == 0.25
    assert metrics["main_role_accuracy"] == 0.75
    assert metrics["coarse_exact_match"] == 0.5  # rows 0 and 1
    # a document task with a hierarchy (narratives -> subnarratives) has coarse metrics but no "main role"
    document = compute_task_metrics({**task, "level": "document"}, probabilities, gold)
    assert "main_role_accuracy" not in document and document["coarse_exact_match"] == 0.5
    assert metrics["coarse_micro_f1"] == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))


def test_tuned_thresholds_improve_f1_and_skip_unseen_labels():
    probabilities, gold = _random_multi(3, n=80)
    probabilities[:, 0] *= 0.6  # label 'a' is under-confident: 0.5 misses its positives
    thresholds = tune_thresholds(probabilities, gold, current=[0.5, 0.5, 0.5, 0.5, 0.42])
    assert thresholds[4] == 0.42  # no positive 'e': kept
    assert thresholds[0] < 0.5
    before = compute_task_metrics(MULTI, probabilities, gold, thresholds=[0.5, 0.5, 0.5, 0.5, 0.42])
    after = compute_task_metrics(MULTI, probabilities, gold, thresholds=thresholds)
    assert after["macro_f1"] >= before["macro_f1"] and after["f1_a"] > before["f1_a"]


def test_multitask_metrics_keys_and_mean():
    probabilities, gold = _random_multi()
    single_gold = np.array([0, 1, 2, -100] * 10)
    single = probabilities_from_logits(np.random.default_rng(0).normal(size=(40, 4)), SINGLE["problem_type"])
    metrics = compute_multitask_metrics({"tags": probabilities, "topic": single},
                                        {"tags": gold, "topic": single_gold}, [MULTI, SINGLE])
    assert metrics["topic_num_examples"] == 30
    assert metrics["mean_macro_f1"] == pytest.approx((metrics["tags_macro_f1"] + metrics["topic_macro_f1"]) / 2)
    with pytest.raises(ValueError, match=r"task 'topic': probabilities must have shape \[N, 4\]"):
        compute_multitask_metrics({"topic": probabilities}, {"topic": single_gold}, [SINGLE])


def test_default_macro_f1_is_sklearns_on_labels_gold_or_predicted():
    # the toy case of the issue: label 'z' is predicted once and never gold
    single = {"name": "t", "level": "document", "problem_type": "single_label_classification", "labels": ["x", "y", "z"]}
    gold, predicted = np.array([0, 1, 1]), np.array([0, 1, 2])
    metrics = compute_task_metrics(single, np.eye(3)[predicted], gold)
    assert metrics["macro_f1"] == pytest.approx(f1_score(gold, predicted, average="macro", zero_division=np.nan))
    assert metrics["macro_f1"] == pytest.approx(0.5556, abs=1e-4)  # the old gold-only average gave 0.833
    assert metrics["macro_f1_num_labels"] == 3
    every = compute_task_metrics({**single, "labels": ["x", "y", "z", "never"]}, np.eye(4)[predicted], gold,
                                 macro_average="all")
    assert every["macro_f1"] == pytest.approx(f1_score(gold, predicted, labels=[0, 1, 2, 3], average="macro",
                                                       zero_division=0))
    # multi-label: 'c' predicted never gold (counts as 0), 'e' neither gold nor predicted (left out)
    gold = np.array([[1, 0, 0, 1, 0], [0, 1, 0, 0, 0], [1, 1, 0, 0, 0]])
    predicted = np.array([[1, 0, 1, 0, 0], [0, 1, 0, 0, 0], [1, 0, 1, 1, 0]])
    metrics = compute_task_metrics(MULTI, predicted * 0.9, gold)
    assert metrics["macro_f1"] == pytest.approx(f1_score(gold, predicted, average="macro", zero_division=np.nan))
    assert metrics["macro_f1_num_labels"] == 4
    for average in ("micro", "samples"):
        assert metrics[f"{average}_f1"] == pytest.approx(f1_score(gold, predicted, average=average))


def test_top1_fallback_predicts_the_best_label_of_empty_rows():
    from modeling.metrics import decide_multi_label

    probabilities = np.array([[0.1, 0.3, 0.2], [0.9, 0.1, 0.6]])
    np.testing.assert_array_equal(decide_multi_label(probabilities, [0.5] * 3), [[0, 0, 0], [1, 0, 1]])
    np.testing.assert_array_equal(decide_multi_label(probabilities, [0.5] * 3, top1_fallback=True),
                                  [[0, 1, 0], [1, 0, 1]])
