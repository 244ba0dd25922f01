"""`MultiTaskTrainer`: a `transformers.Trainer` for `MultiTaskModel`.

What it adds to `Trainer` (see `MultiTaskTrainingArguments` for the switches):

- **Exact masked loss.** Each task's loss is the mean over the examples (span tasks: mentions) labelled for it in
  the whole optimizer step: `get_batch_samples` counts the labelled items of every task over the accumulation
  window and over all processes, and each micro-batch contributes ``task_loss_sum * world_size / count`` (DDP
  averages gradients over processes). Gradient accumulation and multi-process training therefore give the
  gradient of one big batch. A task absent from a step adds exactly 0, and its head (and learned loss weight) is
  left untouched by the optimizer (its gradient is cleared, so neither momentum nor weight decay move it).
- **Loss weighting** (`modeling.loss_weighting`): static, uncertainty, GradNorm, PCGrad, DWA, with warm-up.
  PCGrad and GradNorm need per-task gradients (`modeling.task_gradients`): for them the trainer runs the
  unwrapped model and averages every gradient over processes itself.
- **Task sampling and length-grouped batching** (`modeling.sampling`), class weights / `pos_weight` from the
  training label frequencies, a separate learning rate for the heads (``--head_learning_rate``).
- **Logging**: per-task training loss (``loss_<task>``) and current weights (``task_weight_<task>``) in every
  training log, so they reach the progress output and every `report_to` integration.
- **Evaluation** (`modeling.evaluation`, `modeling.metrics`): per-task metrics; document tasks on windowed texts
  scored per document; predictions gathered over processes and de-duplicated (2 processes give the numbers of
  1); a dict `eval_dataset` gives metrics per set (``eval_<set>_<task>_<metric>``) plus their mean.
- **Model selection**: best checkpoint / early stopping on ``eval_mean_macro_f1`` by default; multi-label
  thresholds chosen on the validation set during training (`modeling.thresholds`, ``--threshold_strategy``)
  and stored through `MultiTaskConfig.set_thresholds`.
- **Fail fast**: a non-finite task loss stops training with an error naming the step and the task.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time

import torch
from torch import nn
from torch.utils.data import SequentialSampler
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, EvalLoopOutput, has_length, speed_metrics

from .evaluation import collect_predictions, gather_predictions, mean_over_sets, score_predictions
from .loss_weighting import balanced_loss_options, build_loss_weighting, load_weighting_state, save_weighting_state
from .losses import label_counts
from .optimizer_groups import add_loss_weight_group, move_to_head_groups
from .sampling import build_train_sampler, check_label_columns, check_trainer_datasets, threshold_tuning_set_name
from .task_gradients import TaskGradients, all_reduce_mean_, gradnorm_parameters
from .training_args import MultiTaskTrainingArguments, check_arguments_for_model
from .vocabulary import MULTI_LABEL

logger = logging.getLogger(__name__)

LOSS_WEIGHTING_FILE = "loss_weighting.pt"
LOSS_KINDS = ("log", "epoch", "step")  # per-task loss totals kept for the logs, DWA's epochs, GradNorm's steps


class NonFiniteLossError(FloatingPointError):
    """A task loss became NaN or infinite during training."""


class _MultiTaskCallback(TrainerCallback):
    """Forwards epoch ends to the trainer (DWA needs the epoch's mean task losses)."""

    def __init__(self, trainer: MultiTaskTrainer):
        self.trainer = trainer

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        # A model built by `model_init` exists only now; see `MultiTaskTrainer._record_decision_rule`.
        self.trainer._record_decision_rule()

    def on_epoch_end(self, args, state, control, **kwargs):
        self.trainer._end_epoch()


class MultiTaskTrainer(Trainer):
    """`Trainer` for `MultiTaskModel` (see the module docstring).

    Takes the same arguments as `Trainer`; `args` must be a `MultiTaskTrainingArguments`. When `data_collator` is
    not given, a `MultiTaskCollator` for the model's tasks is used (padding with `processing_class`'s pad id).
    """

    def __init__(self, model=None, args: MultiTaskTrainingArguments | None = None, data_collator=None, **kwargs):
        args = check_arguments_for_model(args, model)
        super().__init__(model=model, args=args, data_collator=data_collator, **kwargs)
        # Our loss is already normalised over the accumulation window: Trainer must not divide it again, and the
        # model must never receive `num_items_in_batch`.
        self.loss_is_scaled_for_ga = True
        self.model_accepts_loss_kwargs = False

        raw_model = self._raw_model
        if data_collator is None:  # Trainer's default collator cannot batch multi-task rows
            from .collator import MultiTaskCollator

            self.data_collator = MultiTaskCollator(tasks=raw_model.config, tokenizer=self.processing_class)
        self.tasks = raw_model.config.tasks
        self._record_decision_rule()
        self.task_names = [task["name"] for task in self.tasks]
        if args.loss_weighting == "gradnorm" and model is None:
            gradnorm_parameters(raw_model)  # built by `model_init`
        self.loss_weighting = build_loss_weighting(args, self.task_names).to(args.device)
        self.task_gradients = (
            TaskGradients(self.loss_weighting, self.task_names) if self.loss_weighting.uses_task_gradients else None
        )
        unknown = sorted(set(args.oversample_map) - set(self.task_names)) if args.task_sampling_column is None else []
        if unknown:
            raise ValueError(f"--oversample names unknown tasks {unknown}; the model's tasks are {self.task_names}")
        check_trainer_datasets(self.train_dataset, self.eval_dataset, self.task_names, args.threshold_tuning_set)

        self._window_counts: dict[str, float] | None = None
        self._micro_batch_in_window = 0
        self._window_uses_task_gradients = False
        # Per-task [loss sums; item counts] since the last flush, per kind: `log` is flushed by `log`, `epoch`
        # at epoch ends (DWA), `step` at each optimizer step (GradNorm).
        self._task_loss_totals = {kind: self._zero_totals() for kind in LOSS_KINDS}
        self._applied_task_weights: dict[str, float] | None = None  # by the last training step
        self._ended_epoch: float | None = None  # `state.epoch` when the weighting last got an epoch's losses
        self.add_callback(_MultiTaskCallback(self))
        if args.class_weighting == "balanced" and self.train_dataset is not None:
            self.apply_class_weights(self.train_dataset)

    def train(self, resume_from_checkpoint=None, trial=None, ignore_keys_for_eval=None, **kwargs):
        """`Trainer.train`, preceded by the linear-probe fit of the heads with ``--linear_probe_init`` (not when
        resuming: the checkpoint holds the heads; with `model_init`, on the model it builds)."""
        self._probe_heads = self.args.linear_probe_init and not resume_from_checkpoint and self.train_dataset is not None
        if self._probe_heads and self.model_init is None:
            self.fit_linear_heads()
        return super().train(resume_from_checkpoint=resume_from_checkpoint, trial=trial,
                             ignore_keys_for_eval=ignore_keys_for_eval, **kwargs)

    def call_model_init(self, trial=None):
        """A fresh model from `model_init` gets what `__init__` and `train` gave the first one: class weights, and
        the linear-probe fit of its heads."""
        model = super().call_model_init(trial)
        for name, options in getattr(self, "_class_weight_options", {}).items():
            model.set_loss_options(name, **options)
        if getattr(self, "_probe_heads", False):
            self.fit_linear_heads(model=model)
        return model

    def fit_linear_heads(self, dataset=None, model=None) -> dict[str, dict]:
        """Fit the single-layer heads of `model` (default: the trainer's) on `dataset` (default: the training set)
        by logistic regression (`modeling.linear_probe.fit_linear_heads`, ``C = --linear_probe_c``)."""
        from .linear_probe import fit_linear_heads

        dataset = self.train_dataset if dataset is None else dataset
        start = time.time()
        fitted = fit_linear_heads(self._raw_model if model is None else model, dataset, self.data_collator, c=self.args.linear_probe_c,
                                  batch_size=self.args.per_device_eval_batch_size, seed=self.args.seed)
        logger.info("linear probe: %d head(s) fitted in %.1f s", len(fitted), time.time() - start)
        return fitted

    # ------------------------------------------------------------------------------------------ helpers
    def _record_decision_rule(self) -> None:
        """Write ``--top1_fallback`` into the model's config: the saved model's `predict` then decides multi-label
        rows as its evaluation and threshold tuning did (an empty row falls back to its top label, or stays empty)."""
        config = self._raw_model.config
        if getattr(config, "top1_fallback", None) != self.args.top1_fallback:
            logger.info("model config top1_fallback set to %s (--top1_fallback)", self.args.top1_fallback)
        config.top1_fallback = self.args.top1_fallback

    @property
    def _raw_model(self) -> nn.Module:
        return self.accelerator.unwrap_model(self.model)

    def _zero_totals(self) -> torch.Tensor:
        return torch.zeros(2, len(self.task_names), dtype=torch.float64, device=self.args.device)

    def _reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.accelerator.num_processes > 1:
            return self.accelerator.reduce(tensor.clone(), reduction="sum")
        return tensor

    def _mean_losses(self, kind: str, reset: bool = True) -> dict[str, float]:
        """Mean loss per task over the accumulated items of all processes (tasks without items left out)."""
        totals = self._reduce_sum(self._task_loss_totals[kind])
        if reset:
            self._task_loss_totals[kind] = self._zero_totals()
        sums, counts = totals.tolist()
        return {name: s / c for name, s, c in zip(self.task_names, sums, counts) if c > 0}

    # ------------------------------------------------------------------------------------------ data
    def apply_class_weights(self, dataset) -> dict[str, dict[str, list[float]]]:
        """Set class weights / pos_weight of every task from `dataset`'s label frequencies (``balanced``)."""
        applied, self._class_weight_options = {}, {}
        for task in self.tasks:
            options = balanced_loss_options(dataset, task, self.args.max_class_weight)
            if options:
                self._class_weight_options[task["name"]] = options  # also for a model `model_init` builds
                self._raw_model.set_loss_options(task["name"], **options)
                applied[task["name"]] = {key: value.tolist() for key, value in options.items()}
                logger.info("class weighting for task %r: %s", task["name"], applied[task["name"]])
        return applied

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        sampler = None
        if dataset is not None and has_length(dataset):
            sampler = build_train_sampler(dataset, self.task_names, self.args, self._train_batch_size)
        return sampler if sampler is not None else super()._get_train_sampler(train_dataset)

    def _get_dataloader(self, dataset, description, batch_size, sampler_fn=None, is_training=False, dataloader_key=None):
        # `--dataloader_drop_last` is about training batches; transformers applies it to evaluation too, which
        # would score a set without its last rows.
        drop_last = self.args.dataloader_drop_last
        self.args.dataloader_drop_last = drop_last and is_training
        try:
            return super()._get_dataloader(dataset, description, batch_size, sampler_fn, is_training, dataloader_key)
        finally:
            self.args.dataloader_drop_last = drop_last

    def _get_eval_sampler(self, eval_dataset):
        # Evaluation order never matters for the metrics (predictions are keyed by their indices), so keep it
        # sequential instead of inheriting a length-grouped order.
        if eval_dataset is None or not has_length(eval_dataset):
            return None
        return SequentialSampler(eval_dataset) if self.args.world_size <= 1 else None

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """Fetch the micro-batches of one optimizer step and count each task's labelled items over all of them
        and over all processes: the denominators of the exact per-task means."""
        batch_samples = []
        for _ in range(num_batches):
            try:
                batch_samples.append(next(epoch_iterator))
            except StopIteration:
                break
        counts = torch.zeros(len(self.task_names), dtype=torch.float64)
        for batch in batch_samples:
            counts += torch.tensor(label_counts(self.tasks, batch.get("labels")), dtype=torch.float64)
        counts = self._reduce_sum(counts.to(device))
        self._window_counts = dict(zip(self.task_names, counts.tolist()))
        self._micro_batch_in_window = 0
        return batch_samples, None

    # ------------------------------------------------------------------------------------------ loss
    def _partial_task_losses(self, outputs) -> dict[str, torch.Tensor]:
        """Each task's share of the step's mean loss contributed by this micro-batch (see module docstring)."""
        sums = outputs.task_loss_sums or {}
        counts = outputs.task_counts or {}
        in_window = self._window_counts is not None and self.model.training
        world = self.accelerator.num_processes if in_window else 1
        partial, local_sums, local_counts = {}, [], []
        for name in self.task_names:
            loss_sum = sums.get(name)
            if loss_sum is None:
                loss_sum = outputs.logits[name].sum() * 0.0
            count = float(counts[name]) if name in counts else 0.0
            denominator = self._window_counts[name] if in_window else count
            partial[name] = loss_sum * (world / denominator) if denominator > 0 else loss_sum * 0.0
            local_sums.append(loss_sum.detach().double())
            local_counts.append(count)
        sums_tensor = torch.stack(local_sums)
        if not bool(torch.isfinite(sums_tensor).all()):
            values = dict(zip(self.task_names, sums_tensor.tolist()))
            bad = [name for name, value in values.items() if not math.isfinite(value)]
            raise NonFiniteLossError(
                f"non-finite training loss ({', '.join(f'{name}={values[name]}' for name in bad)}) "
                f"for task {bad[0]!r} at step {self.state.global_step + 1} (epoch {self.state.epoch or 0:.2f}, "
                f"micro-batch {self._micro_batch_in_window + 1} of the step): lower the learning rate, check the "
                "inputs and labels of that batch, or enable gradient clipping (--max_grad_norm)"
            )
        totals = torch.stack([sums_tensor.to(self.args.device),
                              torch.tensor(local_counts, dtype=torch.float64, device=self.args.device)])
        for kind in LOSS_KINDS:
            self._task_loss_totals[kind] += totals
        return partial

    @staticmethod
    def _graph_anchor(outputs) -> torch.Tensor:
        # Keeps every head in the autograd graph even when the model returns no losses (no labels at all), so
        # DDP with find_unused_parameters=False never waits for a gradient that does not come.
        return sum(logits.sum() for logits in outputs.logits.values()) * 0.0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Weighted sum of the exact per-task partial losses (see `_partial_task_losses`)."""
        outputs = model(**inputs)
        partial = self._partial_task_losses(outputs)
        first = self._window_counts is None or self._micro_batch_in_window == 0
        active = None if self._window_counts is None else {n: c > 0 for n, c in self._window_counts.items()}
        loss = self.loss_weighting.combine(partial, self.state.global_step, first, active)
        if model.training and first:  # what this step applies, for `log` (the step's update may change them)
            self._applied_task_weights = self.loss_weighting.task_weights(self.state.global_step)
        loss = loss + self._graph_anchor(outputs)
        self._micro_batch_in_window += 1
        return (loss, outputs) if return_outputs else loss

    def training_step(self, model, inputs, num_items_in_batch=None):
        uses_task_gradients = self.task_gradients is not None and not self.loss_weighting.in_warmup(
            self.state.global_step
        )
        if self._window_counts is None or self._micro_batch_in_window == 0:
            self._window_uses_task_gradients = uses_task_gradients
            self._task_loss_totals["step"] = self._zero_totals()
            # Trainer's `model.zero_grad()` does not reach parameters outside the model (uncertainty weights).
            for parameter in self.loss_weighting.parameters():
                parameter.grad = None
        if uses_task_gradients:
            loss = self._task_gradient_training_step(inputs)
        else:
            loss = super().training_step(model, inputs, num_items_in_batch)
        if self.accelerator.sync_gradients:
            self._finish_window()
        return loss

    def _task_gradient_training_step(self, inputs) -> torch.Tensor:
        """Forward/backward for PCGrad and GradNorm on the unwrapped model (DDP bypassed; `_finish_window`
        averages every gradient over processes), so per-task `autograd.grad` calls never meet DDP's hooks."""
        raw = self._raw_model
        raw.train()
        if hasattr(self.optimizer, "train") and callable(self.optimizer.train):
            self.optimizer.train()
        inputs = self._prepare_inputs(inputs)
        with self.compute_loss_context_manager():
            outputs = raw(**inputs)
        partial = self._partial_task_losses(outputs)
        weights = self._applied_task_weights = self.loss_weighting.task_weights(self.state.global_step)
        total = sum(weights[name] * partial[name] for name in self.task_names) + self._graph_anchor(outputs)
        self.task_gradients.backward(raw, partial, weights, outputs.task_counts or {}, total)
        self._micro_batch_in_window += 1
        return total.detach()

    def _finish_window(self) -> None:
        """After the last micro-batch of a step: finish gradients (strategy, process averaging, absent heads)."""
        raw, world = self._raw_model, self.accelerator.num_processes
        if self._window_uses_task_gradients:
            active = None  # training_step called outside the Trainer loop: the tasks this process saw
            if self._window_counts is not None:
                active = [name for name in self.task_names if self._window_counts.get(name, 0) > 0]
            self.task_gradients.finish(
                raw, active, self.state.global_step, lambda: self._mean_losses("step", reset=False), world
            )
        else:
            weighting_parameters = [p for p in self.loss_weighting.parameters() if p.requires_grad]
            for parameter in weighting_parameters:
                if parameter.grad is None:
                    parameter.grad = torch.zeros_like(parameter)
            # The weighting parameters live outside the DDP-wrapped model: average their gradients ourselves.
            all_reduce_mean_([p.grad for p in weighting_parameters], world)
        # A task with no labelled item anywhere in this step: clear its head's (and its learned loss weight's)
        # gradient so the optimizer skips it (no momentum drift, no weight decay): absent tasks stay exactly unchanged.
        for name, count in (self._window_counts or {}).items():
            if count == 0:
                for parameter in [*raw.head_parameters(name), *self.loss_weighting.task_parameters(name)]:
                    parameter.grad = None
        self._window_counts = None

    def create_optimizer(self, model=None):
        """Trainer's optimizer; with ``--head_learning_rate`` the task heads' parameters move to groups with that
        rate; learned loss weights (uncertainty) get a group without weight decay at ``--uncertainty_learning_rate``
        (default: the head rate)."""
        optimizer = super().create_optimizer(model)
        head_rate = self.args.head_learning_rate
        if head_rate is not None:
            raw = self._raw_model
            heads = {id(p) for name in self.task_names for p in raw.head_parameters(name, include_adapter=False)}
            move_to_head_groups(optimizer, heads, head_rate)
        uncertainty_rate = self.args.uncertainty_learning_rate
        add_loss_weight_group(optimizer, self.loss_weighting.parameters(),
                              uncertainty_rate if uncertainty_rate is not None else head_rate)
        return optimizer

    # ------------------------------------------------------------------------------------------ logging
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Adds per-task training losses (``loss_<task>``, flushed here) and task weights (``task_weight_<task>``)
        to the training logs (the ones with ``loss`` and ``learning_rate``)."""
        if "loss" in logs and "learning_rate" in logs:
            logs.update({f"loss_{name}": round(value, 6) for name, value in self._mean_losses("log").items()})
            applied = self._applied_task_weights or self.loss_weighting.task_weights(self.state.global_step)
            for name, weight in applied.items():  # those of the last step, not of the next one
                logs[f"task_weight_{name}"] = round(float(weight), 6)
            logs.update(self.loss_weighting.extra_logs())
        super().log(logs, start_time)

    # ------------------------------------------------------------------------------------------ checkpoints
    def _end_epoch(self) -> None:
        """Hand the epoch's mean task losses to the weighting (DWA), once per epoch."""
        if self._ended_epoch != self.state.epoch:
            self._ended_epoch = self.state.epoch
            self.loss_weighting.after_epoch(self._mean_losses("epoch"))

    def _save_checkpoint(self, model, trial) -> None:
        # A step checkpoint at an epoch's last step comes before `on_epoch_end`: end the epoch first, or the
        # checkpoint misses it and a run resumed from it never gets it (the trainer skips finished epochs).
        if self.state.epoch is not None and float(self.state.epoch).is_integer():
            self._end_epoch()
        if self.args.should_save:  # before Trainer writes trainer_state.json, the file that makes a checkpoint whole
            folder = os.path.join(self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
            os.makedirs(folder, exist_ok=True)
            save_weighting_state(self.loss_weighting, os.path.join(folder, LOSS_WEIGHTING_FILE))
        super()._save_checkpoint(model, trial)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None) -> None:
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        path = os.path.join(resume_from_checkpoint, LOSS_WEIGHTING_FILE)
        if os.path.isfile(path):
            self.loss_weighting.load_state_dict(load_weighting_state(path, self.args.device))
        elif self.loss_weighting.state_dict():  # a learned or history-keeping weighting would restart silently
            logger.warning("%s has no %s: the loss weighting restarts from its initial state", resume_from_checkpoint,
                           LOSS_WEIGHTING_FILE)

    def _load_best_model(self) -> None:
        super()._load_best_model()
        # The weights come from the best checkpoint: so must the thresholds chosen at that evaluation.
        config_path = os.path.join(self.state.best_model_checkpoint, "config.json")
        if os.path.isfile(config_path):
            with open(config_path, encoding="utf-8") as handle:
                saved = {task["name"]: task for task in json.load(handle).get("tasks", [])}
            config = self._raw_model.config
            for name in self.task_names:
                if name in saved and config.get_task(name)["problem_type"] == MULTI_LABEL:
                    config.set_thresholds(name, saved[name].get("thresholds"))

    # ------------------------------------------------------------------------------------------ evaluation
    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """Evaluate on `eval_dataset` (a dataset or a dict of named datasets; default `self.eval_dataset`).

        With a dict, metrics come per set (``eval_<set>_...``) plus ``eval_mean_macro_f1`` / ``eval_loss``
        averaged over the sets, and callbacks (early stopping, best checkpoint) see one merged report. During
        training with ``tune_thresholds``, multi-label thresholds are chosen on the tuning set (evaluated first)
        and stored in the model config; evaluations outside training use the stored thresholds.
        """
        override = eval_dataset is not None
        dataset = eval_dataset if override else self.eval_dataset
        if dataset is None:
            raise ValueError("MultiTaskTrainer.evaluate: no eval_dataset given and none set on the trainer")
        self._memory_tracker.start()
        tune = self.args.tune_thresholds and self.is_in_train
        if isinstance(dataset, dict):
            if not dataset:
                raise ValueError("eval_dataset is an empty dict")
            names = list(dataset)
            tuning_set = threshold_tuning_set_name(self.args.threshold_tuning_set, names)
            metrics: dict[str, float] = {}
            for name in [tuning_set] + [n for n in names if n != tuning_set]:
                metrics.update(self._evaluate_one(dataset[name] if override else name, ignore_keys,
                                                  f"{metric_key_prefix}_{name}", tune and name == tuning_set,
                                                  f"eval_dataset[{name!r}]"))
            mean_over_sets(metrics, names, metric_key_prefix)
        else:
            metrics = self._evaluate_one(dataset if override else None, ignore_keys, metric_key_prefix, tune,
                                         "eval_dataset")
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        self._memory_tracker.stop_and_update_metrics(metrics)
        return metrics

    def _evaluate_one(self, dataset, ignore_keys, prefix: str, tune: bool, description: str) -> dict[str, float]:
        if dataset is not None and not isinstance(dataset, str):
            check_label_columns(dataset, description, self.task_names)
        start_time = time.time()
        output = self.evaluation_loop(self.get_eval_dataloader(dataset), "Evaluation", ignore_keys=ignore_keys,
                                      metric_key_prefix=prefix, tune_thresholds=tune, dataset_description=description)
        steps = math.ceil(output.num_samples / max(self.args.eval_batch_size * self.args.world_size, 1))
        output.metrics.update(speed_metrics(prefix, start_time, num_samples=output.num_samples, num_steps=steps))
        return output.metrics

    def tune_thresholds(self, eval_dataset=None) -> dict[str, list[float]]:
        """Choose the multi-label thresholds on `eval_dataset` (default: the tuning set of `self.eval_dataset`) by
        ``--threshold_strategy``, store them in the model config and return the stored thresholds."""
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        if isinstance(dataset, dict):
            dataset = dataset[threshold_tuning_set_name(self.args.threshold_tuning_set, list(dataset))]
        self.evaluation_loop(self.get_eval_dataloader(dataset), "Threshold tuning", tune_thresholds=True)
        return {
            task["name"]: list(task["thresholds"])
            for task in self._raw_model.config.tasks
            if task["problem_type"] == MULTI_LABEL and task.get("thresholds") is not None
        }

    def evaluation_loop(self, dataloader, description: str, prediction_loss_only: bool | None = None,
                        ignore_keys: list[str] | None = None, metric_key_prefix: str = "eval",
                        tune_thresholds: bool = False, dataset_description: str = "eval_dataset") -> EvalLoopOutput:
        """Predict, gather over processes, de-duplicate, aggregate windows per document, score
        (`modeling.evaluation`).

        Returns an `EvalLoopOutput` whose `predictions` / `label_ids` are ``{task: array}`` (probabilities per
        document for document tasks, per mention for span tasks, sorted by document / mention index).
        """
        model = self._wrap_model(self.model, training=False)
        if len(self.accelerator._models) == 0 and model is self.model:
            model = self.accelerator.prepare_model(model, evaluation_mode=True)
            if model is not self.model:
                self.model_wrapped = model
        model.eval()
        if hasattr(self.optimizer, "eval") and callable(self.optimizer.eval):
            self.optimizer.eval()
        self.callback_handler.eval_dataloader = dataloader
        world = self.accelerator.num_processes
        local = collect_predictions(model, dataloader, self.tasks, self._prepare_inputs,
                                    self.compute_loss_context_manager, world, dataset_description)
        merged = gather_predictions(local, self.task_names, world)
        predictions, label_ids, metrics = score_predictions(merged, self._raw_model.config, self.args,
                                                            tune_thresholds, self.compute_metrics)
        metrics = {
            (key if key.startswith(f"{metric_key_prefix}_") else f"{metric_key_prefix}_{key}"): value
            for key, value in metrics.items()
        }
        return EvalLoopOutput(predictions=predictions, label_ids=label_ids, metrics=metrics,
                              num_samples=len(merged["__examples__"]))
