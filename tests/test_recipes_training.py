"""A run's training summary (issue 11): how it stopped, its best and last validation scores, read from the log
history, and the primary metric averaged over tasks for early stopping and the best checkpoint."""

from types import SimpleNamespace

from transformers import EarlyStoppingCallback

from mtl_study.training import MeanPrimaryMetric, training_summary


def evaluation(step, a, b):
    return {"step": step, "eval_validation_a_micro_f1": a, "eval_validation_b_micro_f1": b, "eval_loss": 1.0}


def fake_trainer(history, max_steps=-1, patience_counter=None):
    callbacks = []
    if patience_counter is not None:
        stopper = EarlyStoppingCallback(early_stopping_patience=2)
        stopper.early_stopping_patience_counter = patience_counter
        callbacks.append(stopper)
    return SimpleNamespace(state=SimpleNamespace(log_history=history, global_step=history[-1]["step"]),
                           args=SimpleNamespace(max_steps=max_steps), callback_handler=SimpleNamespace(callbacks=callbacks))


def test_early_stopped_run():
    history = [{"step": 2, "loss": 1.0}, evaluation(4, 0.2, 0.4), evaluation(8, 0.6, 0.8), evaluation(12, 0.5, 0.5),
               evaluation(16, 0.7, 0.7)]
    summary = training_summary(fake_trainer(history, patience_counter=2), "micro_f1", ["a", "b"])
    assert summary == {"stopped_by": "early_stopping", "steps": 16, "best_step": 8, "primary_metric": "micro_f1",
                       "best_validation": 0.7, "final_validation": 0.7, "evaluations": 4, "still_improving": False}


def test_run_cut_by_its_cap_while_improving():
    history = [evaluation(4, 0.2, 0.4), evaluation(8, 0.6, 0.8)]
    summary = training_summary(fake_trainer(history, max_steps=8, patience_counter=0), "micro_f1", ["a", "b"])
    assert summary["stopped_by"] == "max_steps" and summary["still_improving"] is True and summary["best_step"] == 8
    summary = training_summary(fake_trainer(history + [evaluation(12, 0.1, 0.1)]), "micro_f1", ["a", "b"])
    assert summary["stopped_by"] == "epochs" and summary["still_improving"] is False


def test_run_without_evaluation():
    summary = training_summary(fake_trainer([{"step": 3, "loss": 1.0}], max_steps=3), "micro_f1", ["a"])
    assert summary["evaluations"] == 0 and summary["best_validation"] is None and summary["still_improving"] is None


def test_primary_metric_averaged_over_the_tasks_for_model_selection():
    metrics = {"eval_validation_a_micro_f1": 0.5, "eval_validation_b_micro_f1": 0.7, "eval_validation_b_macro_f1": 0.1}
    MeanPrimaryMetric("micro_f1", ["a", "b"]).on_evaluate(None, None, None, metrics=metrics)
    assert metrics["eval_mean_micro_f1"] == 0.6


def test_task_unlabelled_on_validation_is_left_out_as_in_model_selection():
    # a task without validation labels reports no F1 (e.g. the auxiliary task of the known-answer controls)
    history = [{"step": 4, "eval_validation_a_micro_f1": 0.3}, {"step": 8, "eval_validation_a_micro_f1": 0.6},
               {"step": 12, "eval_validation_a_micro_f1": 0.5}]
    summary = training_summary(fake_trainer(history, patience_counter=2), "micro_f1", ["a", "b"])
    assert summary["evaluations"] == 3 and summary["best_step"] == 8 and summary["best_validation"] == 0.6
    metrics = {"eval_validation_a_micro_f1": 0.6}
    MeanPrimaryMetric("micro_f1", ["a", "b"]).on_evaluate(None, None, None, metrics=metrics)
    assert metrics["eval_mean_micro_f1"] == summary["best_validation"]
