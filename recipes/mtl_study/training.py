"""What one run adds to ``MultiTaskTrainer``: the primary metric on validation as the model-selection metric,
early stopping (until no task improves any more), a compact console line per logging step, and the run's
training summary (how it stopped, its best and last validation scores) that the runner writes into
``runs/<run_id>/run_summary.json``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
from transformers import EarlyStoppingCallback, TrainerCallback

#: The evaluation set the trainer evaluates during training (early stopping, best checkpoint, thresholds).
VALIDATION = "validation"


def validation_key(task: str, metric: str) -> str:
    """The key of one task's metric on validation in the trainer's evaluation metrics (and log history)."""
    return f"eval_{VALIDATION}_{task}_{metric}"


def selection_metric(primary_metric: str) -> str:
    """The ``metric_for_best_model`` of a run: the primary metric averaged over the run's tasks, on validation."""
    return f"mean_{primary_metric}"


class MeanPrimaryMetric(TrainerCallback):
    """Adds ``eval_mean_<metric>`` (mean over the tasks of ``eval_validation_<task>_<metric>``) to every
    evaluation, so that early stopping and the best checkpoint use the study's primary metric whatever it is
    (the trainer itself only averages macro-F1). Must come before :class:`EarlyStoppingCallback`: both read the
    same metrics dict, which the trainer then uses to pick the best checkpoint."""

    def __init__(self, metric: str, tasks: Sequence[str]):
        self.metric, self.tasks = metric, list(tasks)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if metrics is None:
            return
        values = [metrics[k] for k in (validation_key(t, self.metric) for t in self.tasks) if k in metrics]
        if values:
            metrics[f"eval_{selection_metric(self.metric)}"] = float(sum(values) / len(values))


class EveryTaskEarlyStopping(EarlyStoppingCallback):
    """Early stopping for a multi-task run: stops after ``early_stopping_patience`` evaluations in which neither the
    selection metric (the mean over tasks) nor ANY task's primary metric improved by more than the threshold on
    its best so far. With the mean alone, a run stops as soon as its fast tasks saturate, while a slower task is
    still learning (measured on the synthetic ticket table: the urgency head needed 72 steps alone, and the
    multi-task run stopped at step 40 with it at 0.65 validation macro-F1): that compares budgets, not
    architectures. The best checkpoint is still the one with the best mean. A single-task run behaves exactly as
    :class:`~transformers.EarlyStoppingCallback`."""

    def __init__(self, early_stopping_patience: int = 1, early_stopping_threshold: float | None = 0.0,
                 primary_metric: str = "macro_f1", tasks: Sequence[str] = ()):
        super().__init__(early_stopping_patience, early_stopping_threshold)
        self.primary_metric, self.tasks = primary_metric, list(tasks)
        self.best_per_task: dict[str, float] = {}

    def on_evaluate(self, args, state, control, metrics, **kwargs):
        stop_before = control.should_training_stop  # another callback's stop (e.g. the step cap) must stand
        super().on_evaluate(args, state, control, metrics, **kwargs)  # counts evaluations without a better mean
        better = np.greater if args.greater_is_better else np.less
        task_improved = False
        for task in self.tasks:
            value = metrics.get(validation_key(task, self.primary_metric))
            if value is None:
                continue
            best = self.best_per_task.get(task)
            if best is None or (better(value, best) and abs(value - best) > (self.early_stopping_threshold or 0.0)):
                self.best_per_task[task] = float(value)
                task_improved = True
        if task_improved and len(self.tasks) > 1:
            self.early_stopping_patience_counter = 0
            control.should_training_stop = stop_before

    def state(self) -> dict:
        exported = super().state()
        exported["args"].update(primary_metric=self.primary_metric, tasks=self.tasks)
        exported["attributes"]["best_per_task"] = dict(self.best_per_task)
        return exported


class CompactProgress(TrainerCallback):
    """Prints one line per training log (step, loss, per-task losses) and one per validation evaluation."""

    def __init__(self, metric: str):
        self.key = f"eval_{selection_metric(metric)}"
        self.training = False  # evaluations after training (thresholds, test) are reported by the runner

    def on_train_begin(self, args, state, control, **kwargs):
        self.training = True

    def on_train_end(self, args, state, control, **kwargs):
        self.training = False

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "loss" not in logs or not state.is_world_process_zero:
            return
        per_task = ", ".join(f"{k[5:]} {v:.3f}" for k, v in logs.items() if k.startswith("loss_"))
        print(f"[runner]     step {state.global_step}/{state.max_steps}: loss {logs['loss']:.3f}"
              f"{' (' + per_task + ')' if per_task else ''}", flush=True)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if self.training and state.is_world_process_zero and metrics and self.key in metrics:
            print(f"[runner]     step {state.global_step}: validation {self.key[5:]} {metrics[self.key]:.3f}", flush=True)


class ExpectedNoise(logging.Filter):
    """Drops the two warnings every run triggers by design, and only those: the backbone's pooler weights left
    unused (the multi-task model keeps the encoder without its pooler) and the pad token id the model config
    takes from the tokenizer. Any other load report or token change still shows."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "LOAD REPORT" in message:
            rows = [line for line in message.splitlines()[1:] if "|" in line and not line.startswith("Key")
                    and not set(line) <= set("-+| ")]
            return not rows or not all(row.lstrip().startswith("pooler.") for row in rows)
        if message.startswith("The tokenizer has new PAD/BOS/EOS tokens"):
            return not message.rstrip(".").endswith("Updated tokens: {'pad_token_id': 0}")
        return True


def filter_expected_noise() -> None:
    for name in ("transformers.modeling_utils", "transformers.trainer_utils"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, ExpectedNoise) for f in logger.filters):
            logger.addFilter(ExpectedNoise())


def run_callbacks(primary_metric: str, tasks: Sequence[str], patience: int, threshold: float, evaluates: bool) -> list:
    """The callbacks of one run, in the order they must run (the metric first, then early stopping)."""
    callbacks: list[TrainerCallback] = [MeanPrimaryMetric(primary_metric, tasks)]
    if evaluates and patience > 0:
        callbacks.append(EveryTaskEarlyStopping(patience, threshold, primary_metric, tasks))
    return callbacks


def validation_curve(log_history: Sequence[dict], primary_metric: str, tasks: Sequence[str]) -> list[tuple[int, float]]:
    """``(step, mean primary metric on validation)`` of every evaluation logged during training.

    Read from the log history (restored on resume) rather than recorded by a callback, so a resumed run still
    counts the evaluations done before its interruption.
    """
    curve = []
    for entry in log_history:
        # The tasks the evaluation scored, as MeanPrimaryMetric averages them: a task unlabelled on validation has none.
        values = [entry[k] for k in (validation_key(t, primary_metric) for t in tasks) if k in entry]
        if values:
            curve.append((int(entry["step"]), float(sum(values) / len(values))))
    return curve


def training_summary(trainer, primary_metric: str, tasks: Sequence[str]) -> dict:
    """How a finished run trained, for ``run_summary.json`` (call it before any evaluation after training).

    Keys: ``stopped_by`` (early_stopping | max_steps | epochs), ``steps``, ``best_step``, ``primary_metric``,
    ``best_validation`` / ``final_validation`` (mean primary metric on validation at the best and at the last
    evaluation; None without evaluation), ``evaluations`` and ``still_improving``: not stopped early, and the last
    evaluation set a new best for the mean or for any single task (the criterion of `EveryTaskEarlyStopping`: a
    run whose mean had stalled while one task still learned ended improving too), so more steps would probably
    have helped.
    """
    state, args = trainer.state, trainer.args
    stopper = next((c for c in trainer.callback_handler.callbacks if isinstance(c, EarlyStoppingCallback)), None)
    if stopper is not None and stopper.early_stopping_patience_counter >= stopper.early_stopping_patience:
        stopped_by = "early_stopping"
    else:
        stopped_by = "max_steps" if args.max_steps > 0 else "epochs"
    curve = validation_curve(state.log_history, primary_metric, tasks)
    best_step, best = None, None
    for step, value in curve:  # the first evaluation reaching the maximum, as the trainer picks its best checkpoint
        if best is None or value > best:
            best_step, best = step, value
    return {
        "stopped_by": stopped_by,
        "steps": int(state.global_step),
        "best_step": best_step,
        "primary_metric": primary_metric,
        "best_validation": best,
        "final_validation": curve[-1][1] if curve else None,
        "evaluations": len(curve),
        "still_improving": (stopped_by != "early_stopping" and (best_step == curve[-1][0] or bool(
            tasks_improving_at_the_end(state.log_history, primary_metric, tasks,
                                       getattr(stopper, "early_stopping_threshold", 0.0) or 0.0)))) if curve else None,
    }


def tasks_improving_at_the_end(log_history: Sequence[dict], primary_metric: str, tasks: Sequence[str],
                               threshold: float = 0.0) -> list[str]:
    """Tasks whose primary metric on validation beat its best by more than `threshold` at the last evaluation of
    training (as `EveryTaskEarlyStopping` counts an improvement; every reported metric is higher-is-better)."""
    improving = []
    for task in tasks:
        key = validation_key(task, primary_metric)
        values = [float(entry[key]) for entry in log_history if key in entry]
        if len(values) > 1 and values[-1] > max(values[:-1]) + threshold:
            improving.append(task)
    return improving


def count_parameters(model) -> dict[str, int]:
    """``{"trainable_parameters", "total_parameters"}`` of a model as built for training (tied tensors counted once).

    Trainable means ``requires_grad``: the embeddings and the ``num_frozen_layers`` lowest layers are frozen, and
    under adapters every base weight is, so arms differ in what they train.
    """
    parameters = list(model.parameters())
    return {"trainable_parameters": sum(p.numel() for p in parameters if p.requires_grad),
            "total_parameters": sum(p.numel() for p in parameters)}



def with_validation(train, validation):
    """Training rows followed by the validation rows, as one set for a refit. ``document_index`` numbers the rows
    of each set from 0, so validation's is shifted past training's: a document's windows must stay its own."""
    from datasets import concatenate_datasets

    offset = max(train["document_index"], default=-1) + 1
    shifted = validation.remove_columns("document_index").add_column(
        "document_index", [index + offset for index in validation["document_index"]])
    if shifted.features != train.features:
        shifted = shifted.cast(train.features)
    return concatenate_datasets([train, shifted])


def refit(selected, model, args, train, validation, steps: int, callbacks=()):
    """Train `model` (a fresh one, seeded like the selection run) on training + validation rows for `steps`
    optimisation steps, with the decision thresholds the `selected` trainer's model tuned on validation.

    The selection run chose how long to train and the thresholds; the refit spends the validation articles on
    training too (for a logistic regression on the SemEval features, 25 % more articles gave +0.05 samples-F1).
    Nothing is evaluated or checkpointed during a refit: there is no held-out set left to stop on.
    """
    import dataclasses

    from modeling import MultiTaskTrainer

    chosen = selected.accelerator.unwrap_model(selected.model).config
    for task in chosen.tasks:
        if task.get("thresholds") is not None:
            model.config.set_thresholds(task["name"], task["thresholds"])
    refit_args = dataclasses.replace(args, output_dir=str(Path(args.output_dir).parent / "refit"), max_steps=steps,
                                     eval_strategy="no", save_strategy="no", load_best_model_at_end=False)
    trainer = MultiTaskTrainer(model=model, args=refit_args, train_dataset=with_validation(train, validation),
                               processing_class=selected.processing_class, callbacks=list(callbacks))
    trainer.train()
    return trainer
