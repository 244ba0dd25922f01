"""MultiTaskTrainer evaluation: per-domain metrics, per-document scoring, thresholds, model selection, determinism."""

import numpy as np
import pytest
import torch
from test_trainer_helpers import TWO_TASKS, make_args, make_dataset, make_model

from modeling import MultiTaskModel, MultiTaskTrainer, aggregate_document_scores
from modeling.metrics import compute_task_metrics


def test_metrics_per_evaluation_set(tiny_backbone_dir, tmp_path):
    model = make_model(tiny_backbone_dir)
    sets = {"URW": make_dataset(12, seed=1), "CC": make_dataset(10, seed=2, start=100)}
    trainer = MultiTaskTrainer(model=model, args=make_args(tmp_path), eval_dataset=sets)
    metrics = trainer.evaluate()
    for name in sets:
        for task in ("topic", "tags", "roles"):
            assert f"eval_{name}_{task}_macro_f1" in metrics
            assert f"eval_{name}_{task}_micro_f1" in metrics
        assert metrics[f"eval_{name}_topic_num_examples"] == len(sets[name])
        assert "eval_URW_roles_main_role_accuracy" in metrics and "eval_URW_roles_coarse_macro_f1" in metrics
    assert metrics["eval_mean_macro_f1"] == pytest.approx(
        (metrics["eval_URW_mean_macro_f1"] + metrics["eval_CC_mean_macro_f1"]) / 2
    )
    # one set alone gives the same numbers as inside the dict
    single = trainer.evaluate(sets["CC"])
    assert single["eval_topic_macro_f1"] == metrics["eval_CC_topic_macro_f1"]
    assert single["eval_loss"] == pytest.approx(metrics["eval_CC_loss"])
    # --threshold_tuning_set names one of several sets: with a single evaluation set it is a configuration error
    with pytest.raises(ValueError, match="--threshold_tuning_set 'CC' names one of several evaluation sets"):
        MultiTaskTrainer(model=model, args=make_args(tmp_path, threshold_tuning_set="CC"), eval_dataset=sets["CC"])
    with pytest.raises(ValueError, match="--threshold_tuning_set 'nope' is not one of the evaluation sets"):
        MultiTaskTrainer(model=model, args=make_args(tmp_path, threshold_tuning_set="nope"), eval_dataset=sets)


def test_windowed_documents_are_scored_per_document(tiny_backbone_dir, tmp_path):
    model = make_model(tiny_backbone_dir)
    dataset = make_dataset(12, seed=4, windows_per_document=3)  # 4 documents of 3 windows each
    trainer = MultiTaskTrainer(model=model, args=make_args(tmp_path, per_device_eval_batch_size=5))
    output = trainer.predict(dataset)
    assert output.metrics["test_topic_num_examples"] == 4
    assert output.predictions["topic"].shape == (4, 3) and output.predictions["tags"].shape == (4, 4)
    collate = trainer.data_collator
    model.eval()
    with torch.no_grad():
        logits = model(**{k: v for k, v in collate([dataset[i] for i in range(12)]).items() if k != "labels"}).logits
    for document in range(4):
        windows = logits["tags"][3 * document : 3 * document + 3]
        expected = aggregate_document_scores(windows, "multi_label_classification")
        np.testing.assert_allclose(output.predictions["tags"][document], expected, rtol=1e-5)
    model.config.window_aggregation = "max"  # the evaluation follows the model's config
    any_window = trainer.predict(dataset).predictions["tags"]
    for document in range(4):
        expected = aggregate_document_scores(logits["tags"][3 * document : 3 * document + 3],
                                             "multi_label_classification", aggregation="max")
        np.testing.assert_allclose(any_window[document], expected, rtol=1e-5)
    # span predictions: one row per mention, ordered by mention index
    mentions = sum(len(row["mention_index"]) for row in dataset)
    assert output.predictions["roles"].shape == (mentions, 4)


def test_macro_average_over_present_or_all_labels(tiny_backbone_dir, tmp_path):
    model = make_model(tiny_backbone_dir, TWO_TASKS)
    dataset = make_dataset(20, seed=6, tasks=TWO_TASKS)
    present = MultiTaskTrainer(model=model, args=make_args(tmp_path)).evaluate(dataset)
    every = MultiTaskTrainer(model=model, args=make_args(tmp_path, macro_average="all")).evaluate(dataset)
    predicted = MultiTaskTrainer(model=model, args=make_args(tmp_path)).predict(dataset).predictions["topic"]
    seen = len({row["labels.topic"] for row in dataset} | set(predicted.argmax(1).tolist()))  # gold or predicted
    assert present["eval_topic_macro_f1_num_labels"] == seen
    assert every["eval_topic_macro_f1_num_labels"] == 3
    f1 = [present[f"eval_topic_f1_{label}"] for label in ("sports", "politics", "science")]
    assert every["eval_topic_macro_f1"] == pytest.approx(sum(f1) / 3)


def test_thresholds_tuned_saved_and_reloaded(tiny_backbone_dir, tmp_path):
    model = make_model(tiny_backbone_dir)
    args = make_args(tmp_path, num_train_epochs=3, learning_rate=5e-3, eval_strategy="epoch", save_strategy="epoch",
                     load_best_model_at_end=True, save_total_limit=5)
    train, validation = make_dataset(16, seed=1), make_dataset(16, seed=2, start=500)
    trainer = MultiTaskTrainer(model=model, args=args, train_dataset=train, eval_dataset=validation)
    assert args.metric_for_best_model == "mean_macro_f1" and args.greater_is_better
    trainer.train()
    tasks = {task["name"]: task for task in trainer.model.config.tasks}
    for name in ("tags", "roles"):
        thresholds = tasks[name]["thresholds"]
        assert thresholds is not None and len(thresholds) == 4 and all(0 < t < 1 for t in thresholds)
        assert len(set(thresholds)) == 1  # default --threshold_strategy shared: one threshold per task
    assert tasks["topic"].get("thresholds") is None
    # the best checkpoint's thresholds came back with its weights
    best = MultiTaskModel.from_pretrained(trainer.state.best_model_checkpoint)
    assert best.config.get_task("tags")["thresholds"] == tasks["tags"]["thresholds"]
    # saved and reloaded with the final model
    trainer.save_model(str(tmp_path / "final"))
    reloaded = MultiTaskModel.from_pretrained(str(tmp_path / "final"))
    assert reloaded.config.get_task("tags")["thresholds"] == tasks["tags"]["thresholds"]
    # evaluation outside training uses (and keeps) the stored thresholds
    metrics = trainer.evaluate(validation)
    predictions = trainer.predict(validation).predictions
    expected = compute_task_metrics(tasks["tags"], predictions["tags"], np.asarray(validation["labels.tags"]),
                                    top1_fallback=True)
    assert metrics["eval_tags_macro_f1"] == pytest.approx(expected["macro_f1"])
    assert trainer.model.config.get_task("tags")["thresholds"] == tasks["tags"]["thresholds"]
    best_metric = max(e["eval_mean_macro_f1"] for e in trainer.state.log_history if "eval_mean_macro_f1" in e)
    assert trainer.state.best_metric == pytest.approx(best_metric)


def _run(tiny_backbone_dir, output_dir):
    model = make_model(tiny_backbone_dir, seed=123)
    args = make_args(output_dir, num_train_epochs=2, seed=7, task_sampling="temperature", group_by_length=True,
                     per_device_train_batch_size=4)
    trainer = MultiTaskTrainer(model=model, args=args, train_dataset=make_dataset(16, seed=1),
                               eval_dataset=make_dataset(12, seed=2, start=100))
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return losses, trainer.evaluate()


def test_same_seed_gives_identical_metrics(tiny_backbone_dir, tmp_path):
    first_losses, first = _run(tiny_backbone_dir, tmp_path / "a")
    second_losses, second = _run(tiny_backbone_dir, tmp_path / "b")
    assert first_losses == second_losses
    ignored = ("runtime", "per_second")
    assert {k: v for k, v in first.items() if not k.endswith(ignored)} == {
        k: v for k, v in second.items() if not k.endswith(ignored)
    }


def test_early_stopping_uses_mean_macro_f1(tiny_backbone_dir, tmp_path):
    from transformers import EarlyStoppingCallback

    model = make_model(tiny_backbone_dir, TWO_TASKS)
    args = make_args(tmp_path, num_train_epochs=20, learning_rate=1e-7, eval_strategy="epoch",
                     save_strategy="epoch", load_best_model_at_end=True, save_total_limit=2)
    data = make_dataset(8, seed=1, tasks=TWO_TASKS)
    trainer = MultiTaskTrainer(model=model, args=args, train_dataset=data, eval_dataset={"in": data, "out": data},
                               callbacks=[EarlyStoppingCallback(early_stopping_patience=2)])
    trainer.train()
    evaluations = [entry for entry in trainer.state.log_history if "eval_mean_macro_f1" in entry]
    assert len(evaluations) < 20  # stopped early: a learning rate of 1e-7 never improves the metric


def test_evaluation_loss_is_the_models_masked_loss(tiny_backbone_dir, tmp_path):
    """Evaluation and the model's forward share `losses.masked_task_loss_sum`: same per-task losses."""
    model = make_model(tiny_backbone_dir)
    dataset = make_dataset(10, seed=3)  # one window per document: evaluation rows = forward rows
    trainer = MultiTaskTrainer(model=model, args=make_args(tmp_path))
    metrics = trainer.evaluate(dataset)
    model.eval()
    with torch.no_grad():
        outputs = model(**trainer.data_collator([dataset[i] for i in range(len(dataset))]))
    for task in ("topic", "tags", "roles"):
        assert metrics[f"eval_{task}_loss"] == pytest.approx(float(outputs.task_losses[task]), rel=1e-5)
    assert metrics["eval_loss"] == pytest.approx(float(outputs.loss), rel=1e-5)


def test_dataloader_drop_last_drops_training_batches_only(tiny_backbone_dir, tmp_path):
    """`--dataloader_drop_last` is about training batches: scoring a set must still see every row (transformers'
    own evaluation loader drops the last incomplete batch too)."""
    model = make_model(tiny_backbone_dir)
    dataset = make_dataset(10, seed=3)
    trainer = MultiTaskTrainer(model=model, args=make_args(tmp_path, per_device_eval_batch_size=4,
                                                           per_device_train_batch_size=4, dataloader_drop_last=True))
    assert trainer.evaluate(dataset)["eval_topic_num_examples"] == 10
    assert len(trainer.get_eval_dataloader(dataset)) == 3
    trainer.train_dataset = dataset
    assert len(trainer.get_train_dataloader()) == 2  # 10 rows, batches of 4: the incomplete third is dropped
    assert trainer.args.dataloader_drop_last
