"""Linear-probe initialisation of the heads (LP-FT) and the relative decision threshold."""

import logging

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from test_trainer_helpers import TASKS, make_args, make_dataset, make_model

from modeling import MultiTaskTrainer, MultiTaskTrainingArguments
from modeling.heads import pool_document
from modeling.linear_probe import _fit, fit_linear_heads
from modeling.metrics import decide_multi_label
from modeling.thresholds import tune_shared_threshold


def _features(seed=0, n=60, d=5):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) * rng.uniform(0.1, 10, size=d) + rng.normal(size=d) * 5, rng


def test_multi_label_fit_folds_the_scaler_into_the_weights():
    x, rng = _features()
    y = np.stack([x[:, 0] + rng.normal(size=len(x)) > 0, x[:, 1] * x[:, 2] > 0, np.zeros(len(x), bool)], axis=1)
    weight, bias = _fit(x, y.astype(float), "multi_label_classification", 3, c=0.5, seed=0)
    standardised = StandardScaler().fit_transform(x)
    for label in range(2):
        expected = LogisticRegression(C=0.5, max_iter=2000).fit(standardised, y[:, label]).decision_function(standardised)
        np.testing.assert_allclose(x @ weight[label] + bias[label], expected, rtol=1e-4, atol=1e-4)
    # a label never seen in training: no weight, and a bias that means "almost never"
    assert not weight[2].any() and bias[2] == pytest.approx(np.log(1 / (2 * len(x))))


def test_multi_label_entries_are_fitted_on_the_rows_where_they_are_known():
    # label 0 is unknown (-100) on a third of the rows: it is fitted on the others; the rows still count for label 1
    x, rng = _features(seed=2)
    y = np.stack([x[:, 0] > 0, x[:, 1] > 0], axis=1).astype(float)
    y[::3, 0] = -100.0
    weight, bias = _fit(x, y, "multi_label_classification", 2, c=0.5, seed=0)
    known = y[:, 0] != -100
    standardised = StandardScaler().fit(x).transform(x)
    expected = LogisticRegression(C=0.5, max_iter=2000).fit(standardised[known], y[known, 0] > 0.5)
    np.testing.assert_allclose(x @ weight[0] + bias[0], expected.decision_function(standardised), rtol=1e-4, atol=1e-4)
    every_row = LogisticRegression(C=0.5, max_iter=2000).fit(standardised, y[:, 1] > 0.5)
    np.testing.assert_allclose(x @ weight[1] + bias[1], every_row.decision_function(standardised), rtol=1e-4, atol=1e-4)


def test_a_label_unknown_on_every_row_does_not_stop_its_task_being_fitted(tiny_backbone_dir):
    from datasets import Dataset
    from test_trainer_helpers import TWO_TASKS, make_rows

    from modeling import MultiTaskCollator

    rows = make_rows(40, seed=4, tasks=TWO_TASKS)
    for row in rows:
        row["labels.tags"][-1] = -100.0  # the last tag is never annotated; the others are known on every row
    model = make_model(tiny_backbone_dir, TWO_TASKS)
    fitted = fit_linear_heads(model, Dataset.from_list(rows), MultiTaskCollator(tasks=model.config), c=1.0)
    assert fitted["tags"]["rows"] == 40


@pytest.mark.parametrize("present", [[0, 1, 2], [0, 2]])
def test_single_label_fit_matches_logistic_regression(present):
    x, rng = _features(seed=1)
    y = np.asarray(present)[np.argmax(x[:, : len(present)] + rng.normal(size=(len(x), len(present))), axis=1)]
    weight, bias = _fit(x, y, "single_label_classification", 3, c=1.0, seed=0)
    logits = x @ weight.T + bias
    probabilities = np.exp(logits[:, present]) / np.exp(logits[:, present]).sum(axis=1, keepdims=True)
    standardised = StandardScaler().fit_transform(x)
    expected = LogisticRegression(C=1.0, max_iter=2000).fit(standardised, y).predict_proba(standardised)
    np.testing.assert_allclose(probabilities, expected, rtol=1e-4, atol=1e-5)
    absent = sorted(set(range(3)) - set(present))
    assert not weight[absent].any()


def _document_features(model, dataset):
    """Mean over each document's windows of the pooled states, computed without the probe's code."""
    model.eval()
    with torch.no_grad():
        pooled = []
        for row in dataset:
            ids = torch.tensor([row["input_ids"]])
            mask = torch.tensor([row["attention_mask"]])
            hidden = model.encode(ids, mask)
            pooled.append(pool_document(hidden, mask, model.config.pooling)[0].double().numpy())
    documents = np.asarray(dataset["document_index"])
    order = np.unique(documents)
    return np.stack([np.mean([p for p, d in zip(pooled, documents) if d == doc], axis=0) for doc in order]), order


def test_heads_fitted_on_document_means_give_the_regression_scores(tiny_backbone_dir, tmp_path):
    model = make_model(tiny_backbone_dir, pooling="mean")
    dataset = make_dataset(36, seed=3, windows_per_document=3)  # 12 documents of 3 windows
    trainer = MultiTaskTrainer(model=model, args=make_args(tmp_path, linear_probe_c=0.3))
    before = trainer.evaluate(dataset)["eval_tags_macro_f1"]
    fitted = trainer.fit_linear_heads(dataset)
    assert fitted["tags"]["rows"] == 12 and fitted["topic"]["rows"] == 12  # per document, not per window
    assert fitted["roles"]["rows"] == sum(len(row["mention_index"]) for row in dataset)
    features, documents = _document_features(model, dataset)
    first_rows = [list(dataset["document_index"]).index(d) for d in documents]
    tags = np.asarray(dataset["labels.tags"])[first_rows]
    scaled = StandardScaler().fit_transform(features)
    expected = np.stack([LogisticRegression(C=0.3, max_iter=2000).fit(scaled, tags[:, j]).predict_proba(scaled)[:, 1]
                         for j in range(tags.shape[1]) if 0 < tags[:, j].sum() < len(tags)], axis=1)
    predicted = trainer.predict(dataset).predictions["tags"]  # windows combined by the mean of their logits
    fitted_labels = [j for j in range(tags.shape[1]) if 0 < tags[:, j].sum() < len(tags)]
    np.testing.assert_allclose(predicted[:, fitted_labels], expected, atol=2e-4)
    assert trainer.evaluate(dataset)["eval_tags_macro_f1"] >= before


def test_heads_with_a_hidden_layer_are_left_alone(tiny_backbone_dir, caplog):
    model = make_model(tiny_backbone_dir, head_hidden_size=8)
    before = {k: v.clone() for k, v in model.heads.state_dict().items()}
    from modeling.collator import MultiTaskCollator

    with caplog.at_level(logging.WARNING, logger="modeling.linear_probe"):
        assert fit_linear_heads(model, make_dataset(8), MultiTaskCollator(tasks=model.config)) == {}
    assert "hidden layer" in caplog.text
    assert all(torch.equal(before[k], v) for k, v in model.heads.state_dict().items())
    with pytest.raises(ValueError, match="C must be > 0"):
        fit_linear_heads(model, make_dataset(8), MultiTaskCollator(tasks=model.config), c=0)
    with pytest.raises(ValueError, match="--linear_probe_c must be > 0"):
        MultiTaskTrainingArguments(output_dir="x", linear_probe_c=0.0)


def test_train_starts_from_the_fitted_heads(tiny_backbone_dir, tmp_path):
    dataset = make_dataset(24, seed=5)
    reference = make_model(tiny_backbone_dir, seed=1)
    MultiTaskTrainer(model=reference, args=make_args(tmp_path / "a")).fit_linear_heads(dataset)
    model = make_model(tiny_backbone_dir, seed=1)
    # learning rate 0: whatever the heads hold after training is what they started from
    args = make_args(tmp_path / "b", linear_probe_init=True, learning_rate=0.0, max_steps=1)
    MultiTaskTrainer(model=model, args=args, train_dataset=dataset).train()
    for name in ("topic", "tags", "roles"):
        torch.testing.assert_close(model.heads[name].classifier.weight, reference.heads[name].classifier.weight)
    untouched = make_model(tiny_backbone_dir, seed=1)
    MultiTaskTrainer(model=untouched, args=make_args(tmp_path / "c", learning_rate=0.0, max_steps=1),
                     train_dataset=dataset).train()
    assert not torch.equal(untouched.heads["tags"].classifier.weight, reference.heads["tags"].classifier.weight)


def test_relative_threshold_keeps_labels_near_the_top():
    probabilities = np.array([[0.9, 0.5, 0.4], [0.2, 0.1, 0.05]])
    thresholds = [0.3] * 3
    np.testing.assert_array_equal(decide_multi_label(probabilities, thresholds), [[1, 1, 1], [0, 0, 0]])
    np.testing.assert_array_equal(decide_multi_label(probabilities, thresholds, relative_threshold=0.5), [[1, 1, 0], [0, 0, 0]])
    np.testing.assert_array_equal(decide_multi_label(probabilities, thresholds, True, 0.5), [[1, 1, 0], [1, 0, 0]])
    # tuning the shared threshold under the relative rule: a low threshold no longer admits the weak labels
    gold = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 1]] * 4)
    scores = np.array([[0.8, 0.3, 0.2], [0.7, 0.6, 0.2], [0.2, 0.1, 0.3]] * 4)
    assert tune_shared_threshold(scores, gold, relative_threshold=0.8) <= tune_shared_threshold(scores, gold)


def test_predict_applies_the_configs_relative_threshold(tiny_backbone_dir):
    model = make_model(tiny_backbone_dir, tasks=TASKS[:2])
    model.config.set_thresholds("tags", [0.0] * 4)  # every label passes its threshold
    texts = ["a first text", "a second one"]
    everything = model.predict(texts, return_scores=True)
    assert all(len(result["tags"]["prediction"]) == 4 for result in everything)
    model.config.relative_threshold = 0.999
    for result in model.predict(texts, return_scores=True):
        scores = result["tags"]["scores"]
        assert result["tags"]["prediction"] == [max(scores, key=scores.get)]
