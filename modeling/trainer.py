"""`MultiTaskTrainer`: a `transformers.Trainer` for `MultiTaskModel`.

What it adds to `Trainer` (see `MultiTaskTrainingArguments` for the switches):

- **Exact masked loss.** Each task's loss is the mean over the examples (span tasks: mentions) labelled for it in
  the whole optimizer step: `get_batch_samples` counts the labelled items of every task over the accumulation
  window and over all processes, and each micro-batch contributes ``task_loss_sum * world_size / count`` (DDP
  averages gradients over processes). Gradient accumulation and multi-process training therefore give the
  gradient of one big batch. A task absent from a step adds exactly 0, and its head is left untouched by the
  optimizer (its gradient is cleared, so neither momentum nor weight decay move it).
- **Loss weighting** (`modeling.loss_weighting`): static, uncertainty, GradNorm, PCGrad, DWA, with warm-up.
  PCGrad and GradNorm need per-task gradients: for them the trainer runs the unwrapped model, accumulates per-task
  gradients over the window, averages every gradient over processes itself, then applies the strategy.
- **Task sampling and length-grouped batching** (`modeling.sampling`), class weights / `pos_weight` from the
  training label frequencies.
- **Logging**: per-task training loss (`loss_<task>`) and current weights (`task_weight_<task>`) in every
  training log, so they reach the progress output and every `report_to` integration.
- **Evaluation** (`modeling.metrics`): per-task micro/macro/samples-F1, exact match, per-label F1, calibration,
  hierarchical coarse metrics; document tasks on windowed texts scored per document; predictions gathered over
  processes and de-duplicated by `example_index` / `mention_index` (so 2 processes give the numbers of 1); a
  dict `eval_dataset` gives metrics per set (``eval_<set>_<task>_<metric>``) plus their mean.
- **Model selection**: best checkpoint / early stopping on ``eval_mean_macro_f1`` by default; multi-label
  thresholds tuned on the validation set during training and stored in ``model.config.tasks[i]["thresholds"]``.
- **Fail fast**: a non-finite task loss stops training with an error naming the step and the task.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import SequentialSampler
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, EvalLoopOutput, EvalPrediction, has_length, speed_metrics

from .loss_weighting import GradNormWeighting, PCGradWeighting, balanced_loss_options, build_loss_weighting
from .metrics import (
    IGNORE_INDEX,
    MULTI_LABEL,
    SINGLE_LABEL,
    compute_multitask_metrics,
    labelled_mask,
    probabilities_from_logits,
)
from .metrics import tune_thresholds as tune_label_thresholds
from .sampling import LABEL_COLUMN_PREFIX, MultiTaskSampler, describe_source, example_lengths, source_ids
from .training_args import MultiTaskTrainingArguments
from .windowing import aggregate_document_scores

logger = logging.getLogger(__name__)

LOSS_WEIGHTING_FILE = "loss_weighting.pt"
DOCUMENT = "document"


class NonFiniteLossError(FloatingPointError):
    """A task loss became NaN or infinite during training."""


class _MultiTaskCallback(TrainerCallback):
    """Forwards epoch ends to the trainer (DWA needs the epoch's mean task losses)."""

    def __init__(self, trainer: MultiTaskTrainer):
        self.trainer = trainer

    def on_epoch_end(self, args, state, control, **kwargs):
        self.trainer._end_epoch()


class MultiTaskTrainer(Trainer):
    """`Trainer` for `MultiTaskModel` (see the module docstring).

    Takes the same arguments as `Trainer`; `args` must be a `MultiTaskTrainingArguments`. When `data_collator` is
    not given, a `MultiTaskCollator` for the model's tasks is used (padding with `processing_class`'s pad id).
    """

    def __init__(self, model=None, args: MultiTaskTrainingArguments | None = None, data_collator=None, **kwargs):
        if args is None:
            args = MultiTaskTrainingArguments(output_dir="tmp_trainer")
        if not isinstance(args, MultiTaskTrainingArguments):
            raise TypeError(
                f"MultiTaskTrainer needs MultiTaskTrainingArguments, got {type(args).__name__}; the multi-task "
                "options (loss weighting, sampling, metrics) live there"
            )
        if model is not None:
            config = getattr(model, "config", None)
            if getattr(config, "tasks", None) is None:
                raise TypeError(f"MultiTaskTrainer needs a MultiTaskModel (config.tasks), got {type(model).__name__}")
            if args.ddp_find_unused_parameters is None:
                # Every head stays in the graph (absent tasks contribute logits.sum() * 0), so DDP never meets an
                # unused parameter with hard sharing; per-task adapters are used only by their task.
                args.ddp_find_unused_parameters = getattr(config, "sharing", "hard") != "hard"
            if data_collator is None:
                from .collator import MultiTaskCollator

                data_collator = MultiTaskCollator(tasks=config, tokenizer=kwargs.get("processing_class"))
        if args.loss_weighting in ("pcgrad", "gradnorm") and args.fp16:
            raise ValueError(
                f"--loss_weighting {args.loss_weighting} computes per-task gradients outside the fp16 GradScaler; "
                "train with --bf16 or in fp32"
            )
        super().__init__(model=model, args=args, data_collator=data_collator, **kwargs)
        # Our loss is already normalised over the accumulation window: Trainer must not divide it again, and the
        # model must never receive `num_items_in_batch`.
        self.loss_is_scaled_for_ga = True
        self.model_accepts_loss_kwargs = False

        raw_model = self._raw_model
        if data_collator is None:  # built by `model_init`: the default collator cannot batch multi-task rows
            from .collator import MultiTaskCollator

            self.data_collator = MultiTaskCollator(tasks=raw_model.config, tokenizer=self.processing_class)
        self.tasks = raw_model.config.tasks
        self.task_names = [task["name"] for task in self.tasks]
        self.loss_weighting = build_loss_weighting(args, self.task_names).to(args.device)
        unknown = sorted(set(args.oversample_map) - set(self.task_names)) if args.task_sampling_column is None else []
        if unknown:
            raise ValueError(f"--oversample names unknown tasks {unknown}; the model's tasks are {self.task_names}")

        for description, dataset in self._named_datasets():
            self._check_label_columns(dataset, description)
        if isinstance(self.eval_dataset, dict) and args.threshold_tuning_set is not None:
            if args.threshold_tuning_set not in self.eval_dataset:
                raise ValueError(
                    f"--threshold_tuning_set {args.threshold_tuning_set!r} is not one of the evaluation sets "
                    f"{list(self.eval_dataset)}"
                )

        self._window_counts: dict[str, float] | None = None
        self._micro_batch_in_window = 0
        self._window_uses_task_gradients = False
        self._task_gradient_buffers: dict[str, torch.Tensor] = {}
        self._reset_accumulators("log")
        self._reset_accumulators("epoch")
        self._reset_accumulators("step")
        self.add_callback(_MultiTaskCallback(self))
        if args.class_weighting == "balanced" and self.train_dataset is not None:
            self.apply_class_weights(self.train_dataset)

    # ------------------------------------------------------------------------------------------ helpers
    @property
    def _raw_model(self) -> nn.Module:
        return self.accelerator.unwrap_model(self.model)

    def _named_datasets(self):
        if self.train_dataset is not None:
            yield "train_dataset", self.train_dataset
        if isinstance(self.eval_dataset, dict):
            for name, dataset in self.eval_dataset.items():
                yield f"eval_dataset[{name!r}]", dataset
        elif self.eval_dataset is not None:
            yield "eval_dataset", self.eval_dataset

    def _check_label_columns(self, dataset, description: str) -> None:
        """Reject a dataset with a ``labels.<task>`` column for a task the model lacks (a silent skip hides bugs)."""
        columns = getattr(dataset, "column_names", None)
        if not columns:
            return
        unknown = [
            column
            for column in columns
            if column.startswith(LABEL_COLUMN_PREFIX) and column[len(LABEL_COLUMN_PREFIX) :] not in self.task_names
        ]
        if unknown:
            raise ValueError(
                f"{description} has label column(s) {unknown} for task(s) the model lacks; the model's tasks are "
                f"{self.task_names}"
            )

    def _reset_accumulators(self, kind: str) -> None:
        device = self.args.device
        setattr(self, f"_{kind}_loss_sums", torch.zeros(len(self.task_names), dtype=torch.float64, device=device))
        setattr(self, f"_{kind}_counts", torch.zeros(len(self.task_names), dtype=torch.float64, device=device))

    def _reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.accelerator.num_processes > 1:
            return self.accelerator.reduce(tensor.clone(), reduction="sum")
        return tensor

    def _all_reduce_mean_(self, tensors: list[torch.Tensor]) -> None:
        """Average tensors over processes in place (one flat collective)."""
        world = self.accelerator.num_processes
        if world <= 1 or not tensors:
            return
        flat = torch.cat([tensor.reshape(-1) for tensor in tensors])
        torch.distributed.all_reduce(flat)
        flat /= world
        offset = 0
        for tensor in tensors:
            tensor.copy_(flat[offset : offset + tensor.numel()].view_as(tensor))
            offset += tensor.numel()

    def _mean_losses(self, kind: str, reset: bool = True) -> dict[str, float]:
        """Mean loss per task over the accumulated items of all processes (tasks without items left out)."""
        totals = self._reduce_sum(torch.stack([getattr(self, f"_{kind}_loss_sums"), getattr(self, f"_{kind}_counts")]))
        if reset:
            self._reset_accumulators(kind)
        sums, counts = totals[0].tolist(), totals[1].tolist()
        return {name: s / c for name, s, c in zip(self.task_names, sums, counts) if c > 0}

    def _label_counts(self, labels: Mapping[str, torch.Tensor] | None) -> list[float]:
        """Number of labelled examples / mentions per task in one batch (same rule as the model's task_counts)."""
        counts = []
        for task in self.tasks:
            target = (labels or {}).get(task["name"])
            if target is None or target.numel() == 0:
                counts.append(0.0)
            elif task["problem_type"] == MULTI_LABEL:
                counts.append(float((~(target == IGNORE_INDEX).all(dim=-1)).sum()))
            else:
                counts.append(float((target != IGNORE_INDEX).sum()))
        return counts

    # ------------------------------------------------------------------------------------------ data
    def apply_class_weights(self, dataset) -> dict[str, dict[str, list[float]]]:
        """Set class weights / pos_weight of every task from `dataset`'s label frequencies (``balanced``)."""
        applied = {}
        for task in self.tasks:
            options = balanced_loss_options(dataset, task, self.args.max_class_weight)
            if options:
                self._raw_model.set_loss_options(task["name"], **options)
                applied[task["name"]] = {key: value.tolist() for key, value in options.items()}
                logger.info("class weighting for task %r: %s", task["name"], applied[task["name"]])
        return applied

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        args = self.args
        grouping = args.train_sampling_strategy == "group_by_length"
        if dataset is None or not has_length(dataset):
            return super()._get_train_sampler(train_dataset)
        if args.task_sampling == "none" and not args.oversample_map and not grouping:
            return super()._get_train_sampler(train_dataset)
        sources = source_ids(dataset, self.task_names, args.task_sampling_column)
        factors = {}
        for source in set(sources):
            if isinstance(source, frozenset):
                factors[source] = max([args.oversample_map.get(name, 1.0) for name in source] or [1.0])
            else:
                factors[source] = args.oversample_map.get(str(source), 1.0)
        lengths = example_lengths(dataset, args.length_column_name) if grouping else None
        sampler = MultiTaskSampler(
            sources,
            strategy=args.task_sampling,
            temperature=args.sampling_temperature,
            source_factors=factors,
            lengths=lengths,
            batch_size=self._train_batch_size,
            megabatch=args.length_grouping_megabatch,
            seed=args.data_seed if args.data_seed is not None else args.seed,
        )
        if sampler.resample:
            shares = {
                describe_source(source): round(float(probability), 4)
                for source, probability in zip(sampler.source_names, sampler.probabilities)
            }
            logger.info("task sampling %r: source probabilities %s", args.task_sampling, shares)
        return sampler

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
            counts += torch.tensor(self._label_counts(batch.get("labels")), dtype=torch.float64)
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
        counts_tensor = torch.tensor(local_counts, dtype=torch.float64, device=sums_tensor.device)
        for kind in ("log", "epoch", "step"):
            getattr(self, f"_{kind}_loss_sums").add_(sums_tensor.to(self.args.device))
            getattr(self, f"_{kind}_counts").add_(counts_tensor.to(self.args.device))
        return partial

    def _active_tasks(self) -> dict[str, bool] | None:
        if self._window_counts is None:
            return None
        return {name: count > 0 for name, count in self._window_counts.items()}

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
        loss = self.loss_weighting.combine(partial, self.state.global_step, first, self._active_tasks())
        loss = loss + self._graph_anchor(outputs)
        self._micro_batch_in_window += 1
        return (loss, outputs) if return_outputs else loss

    def training_step(self, model, inputs, num_items_in_batch=None):
        step = self.state.global_step
        uses_task_gradients = self.loss_weighting.uses_task_gradients and not self.loss_weighting.in_warmup(step)
        if self._window_counts is None or self._micro_batch_in_window == 0:
            self._window_uses_task_gradients = uses_task_gradients
            self._reset_accumulators("step")
            # Trainer's `model.zero_grad()` does not reach parameters outside the model (uncertainty weights).
            for parameter in self.loss_weighting.parameters():
                parameter.grad = None
        if uses_task_gradients:
            loss = self._task_gradient_training_step(model, inputs)
        else:
            loss = super().training_step(model, inputs, num_items_in_batch)
        if self.accelerator.sync_gradients:
            self._finish_window()
        return loss

    def _shared_and_other_parameters(self):
        raw = self._raw_model
        shared = [p for p in raw.shared_parameters() if p.requires_grad]
        shared_ids = {id(p) for p in shared}
        others = [p for p in raw.parameters() if p.requires_grad and id(p) not in shared_ids]
        return shared, others

    def _gradnorm_parameters(self) -> list[nn.Parameter]:
        """The last shared layer: the trainable backbone parameters of the highest-numbered encoder layer."""
        raw = self._raw_model
        shared_ids = {id(p) for p in raw.shared_parameters() if p.requires_grad}
        named = [(n, p) for n, p in raw.named_parameters() if id(p) in shared_ids]
        layered = []
        for name, parameter in named:
            parts = name.split(".")
            numbers = [int(part) for part in parts if part.isdigit()]
            if numbers:
                layered.append((numbers[-1], name, parameter))
        if layered:
            last = max(number for number, _, _ in layered)
            return [p for number, _, p in layered if number == last]
        if not named:
            raise ValueError("--loss_weighting gradnorm needs trainable shared parameters; the backbone is frozen")
        return [p for _, p in named[-2:]]

    def _task_gradient_training_step(self, model, inputs) -> torch.Tensor:
        """Forward/backward for PCGrad and GradNorm: per-task gradients accumulated into flat buffers.

        Runs the unwrapped model (DDP is bypassed; `_finish_window` averages every gradient over processes), so
        the per-task `autograd.grad` calls never interfere with DDP's gradient hooks.
        """
        raw = self._raw_model
        raw.train()
        if hasattr(self.optimizer, "train") and callable(self.optimizer.train):
            self.optimizer.train()
        inputs = self._prepare_inputs(inputs)
        with self.compute_loss_context_manager():
            outputs = raw(**inputs)
        partial = self._partial_task_losses(outputs)
        step = self.state.global_step
        weights = self.loss_weighting.task_weights(step)
        local_counts = outputs.task_counts or {}
        total = sum(weights[name] * partial[name] for name in self.task_names) + self._graph_anchor(outputs)
        is_pcgrad = isinstance(self.loss_weighting, PCGradWeighting)
        if is_pcgrad:
            targets, others = self._shared_and_other_parameters()
        else:
            targets, others = self._gradnorm_parameters(), None
        for name in self.task_names:
            if float(local_counts.get(name, 0.0)) <= 0:
                continue
            # PCGrad projects the weighted task gradients; GradNorm measures the unweighted ones.
            task_loss = weights[name] * partial[name] if is_pcgrad else partial[name]
            gradients = torch.autograd.grad(task_loss, targets, retain_graph=True, allow_unused=True)
            flat = torch.cat(
                [(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(gradients, targets)]
            ).detach()
            if name in self._task_gradient_buffers:
                self._task_gradient_buffers[name] += flat
            else:
                self._task_gradient_buffers[name] = flat
        if is_pcgrad:
            if others:
                torch.autograd.backward(total, inputs=others)
        else:
            total.backward()
        self._micro_batch_in_window += 1
        return total.detach()

    def _finish_window(self) -> None:
        """After the last micro-batch of a step: finish gradients (strategy, process averaging, absent heads)."""
        step = self.state.global_step
        raw = self._raw_model
        if self._window_uses_task_gradients:
            trainable = [p for p in raw.parameters() if p.requires_grad]
            for parameter in trainable:
                if parameter.grad is None:
                    parameter.grad = torch.zeros_like(parameter)
            self._all_reduce_mean_([p.grad for p in trainable])
            if self._window_counts is not None:
                active = [name for name in self.task_names if self._window_counts.get(name, 0) > 0]
            else:  # training_step called outside the Trainer loop: the tasks this process saw
                active = [name for name in self.task_names if name in self._task_gradient_buffers]
            buffers = {}
            for name in active:
                if name not in self._task_gradient_buffers:
                    size = sum(p.numel() for p in self._task_gradient_targets())
                    self._task_gradient_buffers[name] = torch.zeros(size, device=self.args.device)
                buffers[name] = self._task_gradient_buffers[name]
            self._all_reduce_mean_(list(buffers.values()))
            if isinstance(self.loss_weighting, PCGradWeighting):
                shared, _ = self._shared_and_other_parameters()
                combined = self.loss_weighting.project(buffers, step)
                offset = 0
                for parameter in shared:
                    count = parameter.numel()
                    if combined is None:
                        parameter.grad.zero_()
                    else:
                        parameter.grad.copy_(combined[offset : offset + count].view_as(parameter))
                    offset += count
            elif isinstance(self.loss_weighting, GradNormWeighting):
                norms = {name: float(buffer.norm()) for name, buffer in buffers.items()}
                self.loss_weighting.update(norms, self._mean_losses("step", reset=False))
            self._task_gradient_buffers = {}
        else:
            weighting_parameters = [p for p in self.loss_weighting.parameters() if p.requires_grad]
            for parameter in weighting_parameters:
                if parameter.grad is None:
                    parameter.grad = torch.zeros_like(parameter)
            # The weighting parameters live outside the DDP-wrapped model: average their gradients ourselves.
            self._all_reduce_mean_([p.grad for p in weighting_parameters])
        # A task with no labelled item anywhere in this step: clear its head's gradient so the optimizer skips it
        # (no momentum drift, no weight decay) -- absent tasks leave their heads exactly unchanged.
        for name, count in (self._window_counts or {}).items():
            if count == 0:
                for parameter in raw.head_parameters(name):
                    parameter.grad = None
        self._window_counts = None

    def _task_gradient_targets(self) -> list[nn.Parameter]:
        if isinstance(self.loss_weighting, PCGradWeighting):
            return self._shared_and_other_parameters()[0]
        return self._gradnorm_parameters()

    def create_optimizer(self, model=None):
        """Trainer's optimizer plus a parameter group (no weight decay) for learned loss weights (uncertainty)."""
        optimizer = super().create_optimizer(model)
        extra = [p for p in self.loss_weighting.parameters() if p.requires_grad]
        known = {id(p) for group in optimizer.param_groups for p in group["params"]}
        extra = [p for p in extra if id(p) not in known]
        if extra:
            group = {"params": extra, "weight_decay": 0.0}
            if self.args.uncertainty_learning_rate is not None:
                group["lr"] = self.args.uncertainty_learning_rate
            optimizer.add_param_group(group)
        return optimizer

    def _end_epoch(self) -> None:
        self.loss_weighting.after_epoch(self._mean_losses("epoch"))

    # ------------------------------------------------------------------------------------------ logging
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Adds per-task training losses (``loss_<task>``) and task weights (``task_weight_<task>``) to the
        training logs (the ones with ``loss`` and ``learning_rate``)."""
        if "loss" in logs and "learning_rate" in logs:
            for name, value in self._mean_losses("log").items():
                logs[f"loss_{name}"] = round(value, 6)
            for name, weight in self.loss_weighting.task_weights(self.state.global_step).items():
                logs[f"task_weight_{name}"] = round(float(weight), 6)
            logs.update(self.loss_weighting.extra_logs())
        super().log(logs, start_time)

    # ------------------------------------------------------------------------------------------ checkpoints
    def _save_checkpoint(self, model, trial) -> None:
        super()._save_checkpoint(model, trial)
        if self.args.should_save:
            checkpoint = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            folder = os.path.join(self._get_output_dir(trial=trial), checkpoint)
            if os.path.isdir(folder):
                temporary = os.path.join(folder, LOSS_WEIGHTING_FILE + ".tmp")
                torch.save(self.loss_weighting.state_dict(), temporary)
                os.replace(temporary, os.path.join(folder, LOSS_WEIGHTING_FILE))  # never a half-written file

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None) -> None:
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        path = os.path.join(resume_from_checkpoint, LOSS_WEIGHTING_FILE)
        if os.path.isfile(path):
            state = torch.load(path, map_location=self.args.device, weights_only=False)
            self.loss_weighting.load_state_dict(state)

    def _load_best_model(self) -> None:
        super()._load_best_model()
        # The weights come from the best checkpoint: so must the thresholds tuned at that evaluation.
        config_path = os.path.join(self.state.best_model_checkpoint, "config.json")
        if os.path.isfile(config_path):
            with open(config_path, encoding="utf-8") as handle:
                saved = {task["name"]: task for task in json.load(handle).get("tasks", [])}
            for task in self._raw_model.config.tasks:
                if task["name"] in saved:
                    task["thresholds"] = saved[task["name"]].get("thresholds")

    # ------------------------------------------------------------------------------------------ evaluation
    def _threshold_tuning_set(self, names: list[str]) -> str:
        if self.args.threshold_tuning_set is not None:
            if self.args.threshold_tuning_set not in names:
                raise ValueError(
                    f"--threshold_tuning_set {self.args.threshold_tuning_set!r} is not one of the evaluation sets "
                    f"{names}"
                )
            return self.args.threshold_tuning_set
        return names[0]

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """Evaluate on `eval_dataset` (a dataset or a dict of named datasets; default `self.eval_dataset`).

        With a dict, metrics come per set (``eval_<set>_...``) plus ``eval_mean_macro_f1`` / ``eval_loss``
        averaged over the sets, and callbacks (early stopping, best checkpoint) see one merged report. During
        training with ``tune_thresholds``, multi-label thresholds are tuned on the tuning set (evaluated first)
        and stored in the model config; evaluations outside training use the stored thresholds.
        """
        override = eval_dataset is not None
        dataset = eval_dataset if override else self.eval_dataset
        if dataset is None:
            raise ValueError("MultiTaskTrainer.evaluate: no eval_dataset given and none set on the trainer")
        self._memory_tracker.start()
        tune = self.args.tune_thresholds and self.is_in_train
        if isinstance(dataset, dict):
            names = list(dataset)
            if not names:
                raise ValueError("eval_dataset is an empty dict")
            tuning_set = self._threshold_tuning_set(names)
            metrics: dict[str, float] = {}
            for name in [tuning_set] + [n for n in names if n != tuning_set]:
                metrics.update(
                    self._evaluate_one(
                        dataset[name] if override else name,
                        ignore_keys,
                        f"{metric_key_prefix}_{name}",
                        tune=tune and name == tuning_set,
                        description=f"eval_dataset[{name!r}]",
                    )
                )
            for key in ("mean_macro_f1", "loss"):
                keys = [f"{metric_key_prefix}_{name}_{key}" for name in names]
                values = [metrics[k] for k in keys if k in metrics]
                if values:
                    metrics[f"{metric_key_prefix}_{key}"] = float(np.mean(values))
        else:
            metrics = self._evaluate_one(
                dataset if override else None, ignore_keys, metric_key_prefix, tune=tune, description="eval_dataset"
            )
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        self._memory_tracker.stop_and_update_metrics(metrics)
        return metrics

    def _evaluate_one(self, dataset, ignore_keys, prefix: str, tune: bool, description: str) -> dict[str, float]:
        if dataset is not None and not isinstance(dataset, str):
            self._check_label_columns(dataset, description)
        dataloader = self.get_eval_dataloader(dataset)
        start_time = time.time()
        output = self.evaluation_loop(
            dataloader, description="Evaluation", ignore_keys=ignore_keys, metric_key_prefix=prefix,
            tune_thresholds=tune, dataset_description=description,
        )
        total_batch_size = self.args.eval_batch_size * self.args.world_size
        output.metrics.update(
            speed_metrics(prefix, start_time, num_samples=output.num_samples,
                          num_steps=math.ceil(output.num_samples / max(total_batch_size, 1)))
        )
        return output.metrics

    def tune_thresholds(self, eval_dataset=None) -> dict[str, list[float]]:
        """Tune the multi-label thresholds on `eval_dataset` (default: the tuning set of `self.eval_dataset`),
        store them in the model config and return them."""
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        if isinstance(dataset, dict):
            dataset = dataset[self._threshold_tuning_set(list(dataset))]
        self.evaluation_loop(self.get_eval_dataloader(dataset), "Threshold tuning", tune_thresholds=True)
        return {
            task["name"]: list(task["thresholds"])
            for task in self._raw_model.config.tasks
            if task["problem_type"] == MULTI_LABEL and task.get("thresholds") is not None
        }

    def _collect_predictions(self, model, dataloader, description: str) -> dict[str, dict[str, np.ndarray]]:
        """Run the model over `dataloader`; per task: ids, document ids, logits and labels of this process."""
        collected = {name: {"ids": [], "documents": [], "logits": [], "labels": []} for name in self.task_names}
        running_id = 0
        example_ids = []
        for inputs in dataloader:
            inputs = self._prepare_inputs(inputs)
            labels = inputs.pop("labels", None) or {}
            unknown = sorted(set(labels) - set(self.task_names))
            if unknown:
                raise ValueError(
                    f"{description}: labels for task(s) {unknown} that the model lacks; its tasks are {self.task_names}"
                )
            batch_size = inputs["input_ids"].shape[0]
            example_index = inputs.get("example_index")
            if example_index is None:
                if self.accelerator.num_processes > 1:
                    raise ValueError(
                        f"{description}: multi-process evaluation needs an 'example_index' column to de-duplicate "
                        "the predictions gathered from the processes"
                    )
                example_index = torch.arange(running_id, running_id + batch_size)
            running_id += batch_size
            example_ids.extend(example_index.cpu().tolist())
            document_index = inputs.get("document_index")
            if document_index is None:
                document_index = example_index
            with torch.no_grad(), self.compute_loss_context_manager():
                outputs = model(**inputs)
            spans = inputs.get("mention_spans")
            for task in self.tasks:
                name = task["name"]
                logits = outputs.logits[name].detach().float().cpu().numpy()
                if task["level"] == DOCUMENT:
                    ids, documents = example_index.cpu().numpy(), document_index.cpu().numpy()
                else:
                    rows = spans[:, 0] if spans is not None and spans.numel() else torch.zeros(0, dtype=torch.long)
                    mention_index = inputs.get("mention_index")
                    if mention_index is None:
                        raise ValueError(f"{description}: span task {name!r} needs 'mention_index' in the batches")
                    ids = mention_index.cpu().numpy()
                    documents = document_index.to(rows.device)[rows].cpu().numpy() if len(rows) else np.zeros(0, int)
                target = labels.get(name)
                if target is None:
                    shape = (logits.shape[0],) if task["problem_type"] == SINGLE_LABEL else logits.shape
                    target = np.full(shape, IGNORE_INDEX, dtype=np.float32 if len(shape) == 2 else np.int64)
                else:
                    target = target.detach().cpu().numpy()
                for key, value in (("ids", ids), ("documents", documents), ("logits", logits), ("labels", target)):
                    collected[name][key].append(value)
        local = {"__examples__": np.asarray(example_ids, dtype=np.int64)}
        for name, parts in collected.items():
            num_labels = len(self._raw_model.config.get_task(name)["labels"])
            local[name] = {
                "ids": np.concatenate(parts["ids"]).astype(np.int64) if parts["ids"] else np.zeros(0, np.int64),
                "documents": (
                    np.concatenate(parts["documents"]).astype(np.int64) if parts["documents"] else np.zeros(0, np.int64)
                ),
                "logits": np.concatenate(parts["logits"]) if parts["logits"] else np.zeros((0, num_labels), np.float32),
                "labels": np.concatenate(parts["labels"]) if parts["labels"] else np.zeros((0,), np.int64),
            }
        return local

    def _gather_predictions(self, local: dict) -> dict[str, dict[str, np.ndarray]]:
        """Predictions of all processes, de-duplicated by id (accelerate repeats samples to even out batches)."""
        if self.accelerator.num_processes > 1:
            from accelerate.utils import gather_object

            parts = gather_object([local])
        else:
            parts = [local]
        merged = {}
        for name in self.task_names:
            ids = np.concatenate([part[name]["ids"] for part in parts])
            keep = np.unique(ids, return_index=True)[1]  # sorted by id: independent of the process count
            merged[name] = {}
            for key in ("ids", "documents", "logits", "labels"):
                pieces = [part[name][key] for part in parts if len(part[name]["ids"])]
                merged[name][key] = np.concatenate(pieces)[keep] if pieces else local[name][key]
        examples = np.unique(np.concatenate([part["__examples__"] for part in parts]))
        merged["__examples__"] = examples
        return merged

    @staticmethod
    def _task_eval_loss(task: dict, logits: np.ndarray, labels: np.ndarray) -> float | None:
        """Unweighted mean loss over labelled rows (windows / mentions), as the model computes it in training."""
        mask = labelled_mask(labels, task["problem_type"])
        if not mask.any():
            return None
        logits_t = torch.as_tensor(logits[mask], dtype=torch.float64)
        if task["problem_type"] == SINGLE_LABEL:
            return float(F.cross_entropy(logits_t, torch.as_tensor(labels[mask], dtype=torch.long)))
        target = torch.as_tensor(labels[mask], dtype=torch.float64)
        known = target != IGNORE_INDEX
        per_class = F.binary_cross_entropy_with_logits(logits_t, torch.where(known, target, 0.0), reduction="none")
        return float(((per_class * known).sum(1) / known.sum(1).clamp_min(1)).mean())

    def _per_document(self, task: dict, data: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Aggregate the windows of each document into document probabilities (windows sorted by id)."""
        documents = data["documents"]
        if len(np.unique(documents)) == len(documents):
            return documents, probabilities_from_logits(data["logits"], task["problem_type"]), data["labels"]
        unique_documents, inverse = np.unique(documents, return_inverse=True)
        probabilities, labels = [], []
        mask = labelled_mask(data["labels"], task["problem_type"])
        for position in range(len(unique_documents)):
            rows = np.flatnonzero(inverse == position)
            probabilities.append(aggregate_document_scores(data["logits"][rows], task["problem_type"]))
            labelled_rows = rows[mask[rows]]
            labels.append(data["labels"][labelled_rows[0] if len(labelled_rows) else rows[0]])
        return unique_documents, np.stack(probabilities), np.stack(labels)

    def evaluation_loop(
        self,
        dataloader,
        description: str,
        prediction_loss_only: bool | None = None,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "eval",
        tune_thresholds: bool = False,
        dataset_description: str = "eval_dataset",
    ) -> EvalLoopOutput:
        """Predict, gather over processes, de-duplicate, aggregate windows per document, score.

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

        merged = self._gather_predictions(self._collect_predictions(model, dataloader, dataset_description))
        raw_config = self._raw_model.config
        predictions, label_ids, losses = {}, {}, {}
        num_samples = len(merged["__examples__"])
        for task in raw_config.tasks:
            name, data = task["name"], merged[task["name"]]
            loss = self._task_eval_loss(task, data["logits"], data["labels"]) if len(data["ids"]) else None
            if loss is not None:
                losses[name] = loss
            if task["level"] == DOCUMENT:
                if len(data["ids"]):
                    _, probabilities, labels = self._per_document(task, data)
                else:
                    probabilities, labels = data["logits"], data["labels"]
            else:
                probabilities, labels = probabilities_from_logits(data["logits"], task["problem_type"]), data["labels"]
            predictions[name], label_ids[name] = probabilities, labels
            if tune_thresholds and task["problem_type"] == MULTI_LABEL and len(labels):
                if labelled_mask(labels, MULTI_LABEL).any():
                    task["thresholds"] = tune_label_thresholds(probabilities, labels, task.get("thresholds"))

        metrics = compute_multitask_metrics(
            predictions,
            label_ids,
            raw_config.tasks,
            macro_average=self.args.macro_average,
            per_label=self.args.log_per_label_metrics,
            calibration_bins=self.args.calibration_bins,
        )
        if losses:
            metrics["loss"] = float(sum(losses.values()))
            metrics.update({f"{name}_loss": value for name, value in losses.items()})
        if self.compute_metrics is not None:
            metrics.update(self.compute_metrics(EvalPrediction(predictions=predictions, label_ids=label_ids)))
        if any(key.endswith("_macro_f1_num_labels") for key in metrics):
            logger.info(
                "%s: macro-F1 averages over %s (see *_macro_f1_num_labels); --macro_average %s",
                metric_key_prefix,
                "the labels present in the evaluation set" if self.args.macro_average == "present" else "every label",
                "all scores unseen labels as 0"
                if self.args.macro_average == "present"
                else "present averages over seen labels only",
            )
        metrics = {
            (key if key.startswith(f"{metric_key_prefix}_") else f"{metric_key_prefix}_{key}"): value
            for key, value in metrics.items()
        }
        return EvalLoopOutput(predictions=predictions, label_ids=label_ids, metrics=metrics, num_samples=num_samples)

