"""A run's training summary (issue 11): how it stopped, its best and last validation scores, read from the log
history, and the primary metric averaged over tasks for early stopping and the best checkpoint."""

from types import SimpleNamespace

from transformers import EarlyStoppingCallback

from mtl_study.training import MeanPrimaryMetric, training_summary


def evaluation(step, a, b):
    return {"step": step, "eval_validation_a_micro_f1": a, "eval_validation_b_micro_f1": b, "eval_loss": 1.0}


def fake_trainer(history, max_steps=-1, patience_counter=None, threshold=0.0):
    callbacks = []
    if patience_counter is not None:
        stopper = EarlyStoppingCallback(early_stopping_patience=2, early_stopping_threshold=threshold)
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


def test_a_multi_task_run_goes_on_while_any_task_still_improves():
    """The mean stalls for two evaluations while task b still improves: the mean-only stopper stops the run,
    ours only once no task improves for `patience` evaluations; a single-task run stops as the mean-only one."""
    from transformers import TrainerControl

    from mtl_study.training import EveryTaskEarlyStopping

    args = SimpleNamespace(metric_for_best_model="mean_micro_f1", greater_is_better=True)
    # (a, b): a saturates then drifts down, b keeps learning, the mean stays at 0.5 (binary fractions: exact means)
    scores = [(0.25, 0.25), (0.75, 0.25), (0.625, 0.375), (0.5, 0.5), (0.5, 0.5), (0.5, 0.5)]

    def stopping_step(stopper):
        state, control = SimpleNamespace(best_metric=None), TrainerControl()
        for step, (a, b) in enumerate(scores, start=1):
            metrics = {"eval_validation_a_micro_f1": a, "eval_validation_b_micro_f1": b}
            MeanPrimaryMetric("micro_f1", ["a", "b"]).on_evaluate(args, state, control, metrics=metrics)
            stopper.on_evaluate(args, state, control, metrics)
            if state.best_metric is None or metrics["eval_mean_micro_f1"] > state.best_metric:  # as the Trainer does
                state.best_metric = metrics["eval_mean_micro_f1"]
            if control.should_training_stop:
                return step
        return None

    assert stopping_step(EarlyStoppingCallback(early_stopping_patience=2)) == 4
    assert stopping_step(EveryTaskEarlyStopping(2, 0.0, "micro_f1", ["a", "b"])) == 6
    assert stopping_step(EveryTaskEarlyStopping(2, 0.0, "micro_f1", ["a"])) == 4  # one task: the mean decides
    # its state survives a resume (transformers rebuilds it from `state()`)
    stopper = EveryTaskEarlyStopping(3, 0.01, "micro_f1", ["a", "b"])
    stopper.best_per_task = {"a": 0.9}
    exported = stopper.state()
    rebuilt = EveryTaskEarlyStopping(**exported["args"])
    for name, value in exported["attributes"].items():
        setattr(rebuilt, name, value)
    assert rebuilt.tasks == ["a", "b"] and rebuilt.best_per_task == {"a": 0.9} and rebuilt.early_stopping_patience == 3


def test_the_step_cap_still_stops_a_run_whose_task_improves():
    from transformers import TrainerControl

    from mtl_study.training import EveryTaskEarlyStopping

    args = SimpleNamespace(metric_for_best_model="mean_micro_f1", greater_is_better=True)
    control = TrainerControl(should_training_stop=True)  # set earlier in the step (e.g. max_steps reached)
    metrics = {"eval_validation_a_micro_f1": 0.5, "eval_validation_b_micro_f1": 0.5, "eval_mean_micro_f1": 0.5}
    EveryTaskEarlyStopping(2, 0.0, "micro_f1", ["a", "b"]).on_evaluate(args, SimpleNamespace(best_metric=None), control, metrics)
    assert control.should_training_stop


def test_a_resumed_run_restores_its_early_stopping_state(tiny_backbone_dir, tmp_path):
    # transformers rebuilds stateful callbacks from a checkpoint only when asked: without it a resumed run (a kill,
    # a Ray retry) starts its patience and per-task bests afresh and trains longer than an uninterrupted one.
    from mtl_study.config import parse_recipe_args
    from mtl_study.runner import RunSpec
    from mtl_study.study import Study

    parsed = parse_recipe_args("t", ["--model_name_or_path", str(tiny_backbone_dir), "--output_dir", str(tmp_path),
                                     "--synthetic_num_documents", "24", "--seeds", "0"])
    study = Study(*parsed, "t", "t", "q")
    args = study.training_arguments(RunSpec("mtl", 0, study.task_names()), tmp_path / "runs" / "mtl__seed0")
    assert args.restore_callback_states_from_checkpoint


def test_a_capped_run_whose_mean_stalled_while_one_task_still_learned_ended_improving():
    """At the cap the mean is below its best, but task b sets a new best at the last evaluation: the run's own
    early stopping (any task improving resets it) would have gone on, so the run did not converge."""
    history = [evaluation(4, 0.25, 0.25), evaluation(8, 0.75, 0.25), evaluation(12, 0.25, 0.5)]
    summary = training_summary(fake_trainer(history, max_steps=12, patience_counter=0), "micro_f1", ["a", "b"])
    assert summary["best_step"] == 8 and summary["still_improving"] is True
    flat = history[:2] + [evaluation(12, 0.25, 0.25)]  # no task and not the mean improved at the end
    assert training_summary(fake_trainer(flat, max_steps=12), "micro_f1", ["a", "b"])["still_improving"] is False
    # a gain within --early_stopping_threshold is not an improvement, as for the run's early stopping
    small = history[:2] + [evaluation(12, 0.25, 0.26)]
    assert training_summary(fake_trainer(small, max_steps=12, patience_counter=0), "micro_f1", ["a", "b"])["still_improving"]
    assert not training_summary(fake_trainer(small, max_steps=12, patience_counter=0, threshold=0.05), "micro_f1",
                                ["a", "b"])["still_improving"]
    # an early-stopped run converged by definition, whatever its last evaluation
    assert training_summary(fake_trainer(history, patience_counter=2), "micro_f1", ["a", "b"])["still_improving"] is False
