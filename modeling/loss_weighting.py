"""Loss-weighting strategies of `MultiTaskTrainer` and class weights from label frequencies.

Every strategy sees the per-task losses of one optimizer step as *partial* losses: each micro-batch contributes
``sum of its per-example losses / labelled examples in the whole accumulation window (all processes)``, so that
summing over micro-batches and averaging gradients over processes gives exactly the per-task mean over the whole
step. Strategies that are linear in the task losses (static, uncertainty, DWA) can therefore weight the partial
losses directly; GradNorm and PCGrad, which are not linear in the gradients, work on per-task gradients that the
trainer accumulates over the window and averages over processes before they act.

- ``static``: fixed weights (``--task_weights``), 1.0 by default.
- ``uncertainty`` (Kendall, Gal & Cipolla 2018): learned log-variances ``s_t``; loss ``exp(-s_t) L_t + s_t / 2``
  (the classification form). ``s_t`` are trainable parameters that the trainer adds to the optimizer.
- ``gradnorm`` (Chen et al. 2018): weights ``w_t`` (summing to the number of tasks) updated after each step so
  that the norm of each weighted task gradient on the last shared layer moves toward the mean norm times the
  task's relative inverse training rate ``r_t ** alpha``.
- ``pcgrad`` (Yu et al. 2020): per-task gradients on the shared parameters; a task gradient that conflicts with
  another (negative dot product) is projected onto the other's normal plane, in random order; heads keep their
  own gradients.
- ``dwa`` (Liu, Johns & Davison 2019): ``w_t = K softmax(r_t / T)`` with ``r_t = L_t(e-1) / L_t(e-2)`` from the
  mean task losses of the two previous epochs; equal weights for the first two epochs.

All strategies share an optional warm-up (``--weighting_warmup_steps``) with equal weights.
"""

from __future__ import annotations

import math
import os
import pickle
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .vocabulary import MULTI_LABEL, SINGLE_LABEL, label_column  # noqa: F401


class TaskWeighting(nn.Module):
    """Base class: equal weights, no parameters, no per-task gradients.

    Subclasses override `task_weights` (and the hooks they need). The trainer calls:
    `combine` on every micro-batch, `after_step` after every optimizer step (with the window's mean task losses),
    `after_epoch` at epoch ends, and, for strategies with ``uses_task_gradients``, hands them per-task gradients.
    """

    name = "equal"
    uses_task_gradients = False

    def __init__(self, task_names: Sequence[str], warmup_steps: int = 0):
        super().__init__()
        if len(set(task_names)) != len(task_names) or not task_names:
            raise ValueError(f"task names must be unique and non-empty, got {list(task_names)}")
        self.task_names = list(task_names)
        self.warmup_steps = int(warmup_steps)

    def in_warmup(self, step: int) -> bool:
        """Whether optimizer step `step` (0-based) still trains with equal weights."""
        return step < self.warmup_steps

    def task_weights(self, step: int) -> dict[str, float]:
        """The weights the strategy applies at optimizer step `step` (for the loss and for logging)."""
        return {name: 1.0 for name in self.task_names}

    def combine(
        self,
        partial_losses: Mapping[str, torch.Tensor],
        step: int,
        first_micro_batch: bool,
        active: Mapping[str, bool] | None = None,
    ) -> torch.Tensor:
        """Weighted sum of the micro-batch's partial task losses.

        Args:
            partial_losses: ``{task: partial loss}`` (see module docstring); every task of the model.
            step: the optimizer step being computed (0-based).
            first_micro_batch: whether this is the first micro-batch of the accumulation window (terms that must
                be added once per step, like the uncertainty regulariser, are added here).
            active: ``{task: whether the task has labelled items anywhere in the window}``.
        """
        weights = self.task_weights(step)
        return sum(weights[name] * partial_losses[name] for name in self.task_names)

    def after_step(self, step: int, task_losses: Mapping[str, float]) -> None:
        """Hook after optimizer step `step` with the step's mean loss per active task."""

    def after_epoch(self, epoch_losses: Mapping[str, float]) -> None:
        """Hook at the end of an epoch with the epoch's mean loss per task."""

    def extra_logs(self) -> dict[str, float]:
        """Strategy-specific scalars added to the training logs."""
        return {}

    def task_parameters(self, name: str) -> list[nn.Parameter]:
        """The learned parameters that belong to task `name` alone (the trainer clears their gradient in a step
        without the task, so the optimizer leaves them as they are)."""
        return []


class StaticWeighting(TaskWeighting):
    """Fixed task weights; tasks not named get 1.0."""

    name = "static"

    def __init__(self, task_names, warmup_steps: int = 0, weights: Mapping[str, float] | None = None):
        super().__init__(task_names, warmup_steps)
        weights = dict(weights or {})
        unknown = sorted(set(weights) - set(self.task_names))
        if unknown:
            raise ValueError(f"--task_weights names unknown tasks {unknown}; the model's tasks are {self.task_names}")
        self.weights = {name: float(weights.get(name, 1.0)) for name in self.task_names}

    def task_weights(self, step: int) -> dict[str, float]:
        if self.in_warmup(step):
            return super().task_weights(step)
        return dict(self.weights)


class UncertaintyWeighting(TaskWeighting):
    """Kendall et al. (2018): ``sum_t exp(-s_t) L_t + s_t / 2`` with learned ``s_t = log sigma_t^2``."""

    name = "uncertainty"

    def __init__(self, task_names, warmup_steps: int = 0, init_log_variance: float = 0.0):
        super().__init__(task_names, warmup_steps)
        # One parameter per task: a task absent from a step gets no gradient at all, so Adam's momentum cannot move
        # its log-variance (an entry of one shared vector would drift on its zero gradient).
        self.task_log_variances = nn.ParameterList(
            nn.Parameter(torch.tensor(float(init_log_variance))) for _ in self.task_names
        )
        # torch < 2.5 has only the private spelling of the (public since 2.5) load_state_dict pre-hook
        self._register_load_state_dict_pre_hook(_split_stacked_log_variances, with_module=True)

    @property
    def log_variances(self) -> torch.Tensor:
        """``[s_t]`` in task order (differentiable)."""
        return torch.stack(list(self.task_log_variances))

    def task_parameters(self, name: str) -> list[nn.Parameter]:
        return [self.task_log_variances[self.task_names.index(name)]]

    def task_weights(self, step: int) -> dict[str, float]:
        if self.in_warmup(step):
            return super().task_weights(step)
        precisions = torch.exp(-self.log_variances.detach()).tolist()
        return dict(zip(self.task_names, precisions))

    def combine(self, partial_losses, step, first_micro_batch, active=None):
        if self.in_warmup(step):
            return super().combine(partial_losses, step, first_micro_batch, active)
        log_variances = self.log_variances.to(next(iter(partial_losses.values())).device)
        total = 0.0
        for index, name in enumerate(self.task_names):
            total = total + torch.exp(-log_variances[index]) * partial_losses[name]
            # The regulariser is added once per step, and only for tasks seen in the step: a task absent from
            # a step gives no evidence about its noise, and a lone s/2 term would drive s to -inf.
            if first_micro_batch and (active is None or active.get(name, False)):
                total = total + 0.5 * log_variances[index]
        return total

    def extra_logs(self) -> dict[str, float]:
        return dict(zip((f"log_variance_{name}" for name in self.task_names), self.log_variances.detach().tolist()))


def legacy_weighting_state(state: Mapping) -> bool:
    """Whether a saved weighting state holds the log-variances as one vector (before they were one parameter per
    task): the weighting itself still loads it, but the optimizer state saved beside it has the old layout."""
    return "log_variances" in state


def _split_stacked_log_variances(module, state_dict, prefix, *args) -> None:
    """Reads a state saved when the log-variances were one vector (``log_variances``: ``[num_tasks]``)."""
    stacked = state_dict.pop(prefix + "log_variances", None)
    if stacked is not None:
        for index, value in enumerate(stacked):
            state_dict[f"{prefix}task_log_variances.{index}"] = value


class DynamicWeightAverage(TaskWeighting):
    """Liu et al. (2019): ``w_t = K exp(r_t / T) / sum_k exp(r_k / T)``, ``r_t = L_t(e-1) / L_t(e-2)``."""

    name = "dwa"

    def __init__(self, task_names, warmup_steps: int = 0, temperature: float = 2.0):
        super().__init__(task_names, warmup_steps)
        if not temperature > 0:
            raise ValueError(f"--dwa_temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        self.history: list[dict[str, float]] = []

    def task_weights(self, step: int) -> dict[str, float]:
        if self.in_warmup(step) or len(self.history) < 2:
            return super().task_weights(step)
        previous, before = self.history[-1], self.history[-2]
        ratios = []
        for name in self.task_names:
            # A task missing from one of the two epochs keeps a neutral rate of 1.
            if name in previous and name in before and before[name] > 0:
                ratios.append(previous[name] / before[name])
            else:
                ratios.append(1.0)
        scaled = np.asarray(ratios) / self.temperature
        weights = np.exp(scaled - scaled.max())
        weights = len(self.task_names) * weights / weights.sum()
        return dict(zip(self.task_names, weights.tolist()))

    def after_epoch(self, epoch_losses: Mapping[str, float]) -> None:
        self.history.append({name: float(value) for name, value in epoch_losses.items() if math.isfinite(value)})
        del self.history[:-2]

    def get_extra_state(self):
        return {"history": self.history}

    def set_extra_state(self, state):
        self.history = [dict(entry) for entry in state.get("history", [])]


class GradNormWeighting(TaskWeighting):
    """Chen et al. (2018): balance the task gradient norms on the last shared layer.

    The trainer computes, for each task, the norm ``n_t`` of the gradient of the (unweighted) window loss ``L_t``
    on the last shared layer, averaged over processes; `update` then takes one gradient step on
    ``sum_t |w_t n_t - mean(w n) * r_t ** alpha|`` with respect to the weights (the target held constant, as in
    the paper), where ``r_t = (L_t / L_t(0)) / mean_k (L_k / L_k(0))``, and renormalises the weights to sum to
    the number of tasks.
    """

    name = "gradnorm"
    uses_task_gradients = True

    def __init__(self, task_names, warmup_steps: int = 0, alpha: float = 1.5, learning_rate: float = 0.025):
        super().__init__(task_names, warmup_steps)
        self.alpha = float(alpha)
        self.learning_rate = float(learning_rate)
        self.register_buffer("weights", torch.ones(len(self.task_names)))
        self.register_buffer("initial_losses", torch.full((len(self.task_names),), float("nan")))
        self._last_norms: dict[str, float] = {}

    def task_weights(self, step: int) -> dict[str, float]:
        if self.in_warmup(step):
            return super().task_weights(step)
        return dict(zip(self.task_names, self.weights.tolist()))

    def update(self, gradient_norms: Mapping[str, float], task_losses: Mapping[str, float]) -> None:
        """One GradNorm step from the unweighted per-task gradient norms and mean losses of the last window."""
        active = [
            index
            for index, name in enumerate(self.task_names)
            if name in gradient_norms and name in task_losses and task_losses[name] > 0 and gradient_norms[name] > 0
        ]
        if not active:
            return
        for index in active:
            if math.isnan(float(self.initial_losses[index])):
                self.initial_losses[index] = float(task_losses[self.task_names[index]])
        norms = np.asarray([gradient_norms[self.task_names[index]] for index in active], dtype=np.float64)
        losses = np.asarray([task_losses[self.task_names[index]] for index in active], dtype=np.float64)
        # .cpu(): the trainer moves this module to the model's device, and numpy only reads host memory.
        initial = self.initial_losses[active].detach().double().cpu().numpy()
        weights = self.weights[active].detach().double().cpu().numpy()
        weighted_norms = weights * norms
        loss_ratios = losses / initial
        inverse_rates = loss_ratios / loss_ratios.mean()
        targets = weighted_norms.mean() * inverse_rates**self.alpha
        gradient = np.sign(weighted_norms - targets) * norms
        new_weights = self.weights.detach().double().cpu().numpy().copy()
        new_weights[active] = np.maximum(weights - self.learning_rate * gradient, 1e-3)
        new_weights *= len(self.task_names) / new_weights.sum()
        self.weights.copy_(torch.as_tensor(new_weights, dtype=self.weights.dtype, device=self.weights.device))
        self._last_norms = {self.task_names[index]: float(norm) for index, norm in zip(active, weighted_norms)}

    def extra_logs(self) -> dict[str, float]:
        return {f"gradnorm_{name}": value for name, value in self._last_norms.items()}


class PCGradWeighting(StaticWeighting):
    """Yu et al. (2020): gradient surgery on the shared parameters (task weights as in ``static``)."""

    name = "pcgrad"
    uses_task_gradients = True

    def __init__(self, task_names, warmup_steps: int = 0, weights=None, seed: int = 0):
        super().__init__(task_names, warmup_steps, weights)
        self.seed = int(seed)
        self.conflict_fraction = 0.0

    def project(self, task_gradients: Mapping[str, torch.Tensor], step: int) -> torch.Tensor:
        """Sum of the task gradients after projecting away pairwise conflicts.

        `task_gradients` are flat gradients (already weighted), identical on every process; the random order of
        projections is drawn from ``seed + step``, so every process computes the same result.
        """
        names = [name for name in self.task_names if name in task_gradients]
        gradients = [task_gradients[name] for name in names]
        if len(gradients) < 2:
            return gradients[0].clone() if gradients else None
        generator = torch.Generator().manual_seed(self.seed + int(step))
        squared_norms = [torch.dot(g, g) for g in gradients]
        conflicts, pairs = 0, 0
        projected_sum = torch.zeros_like(gradients[0])
        for i, gradient in enumerate(gradients):
            projected = gradient.clone()
            for j in torch.randperm(len(gradients), generator=generator).tolist():
                if j == i or squared_norms[j] <= 0:
                    continue
                dot = torch.dot(projected, gradients[j])
                pairs += 1
                if dot < 0:
                    conflicts += 1
                    projected -= (dot / squared_norms[j]) * gradients[j]
            projected_sum += projected
        self.conflict_fraction = conflicts / max(pairs, 1)
        return projected_sum

    def extra_logs(self) -> dict[str, float]:
        return {"pcgrad_conflict_fraction": self.conflict_fraction}


def build_loss_weighting(args, task_names: Sequence[str]) -> TaskWeighting:
    """The strategy named by ``args.loss_weighting`` (a `MultiTaskTrainingArguments`)."""
    strategy = args.loss_weighting
    warmup = args.weighting_warmup_steps
    static_weights = getattr(args, "task_weight_map", {})
    if static_weights and strategy not in ("static", "pcgrad"):
        raise ValueError(f"--task_weights is only used by --loss_weighting static or pcgrad, not {strategy!r}")
    if strategy == "static":
        return StaticWeighting(task_names, warmup, static_weights)
    if strategy == "uncertainty":
        return UncertaintyWeighting(task_names, warmup, args.uncertainty_init)
    if strategy == "dwa":
        return DynamicWeightAverage(task_names, warmup, args.dwa_temperature)
    if strategy == "gradnorm":
        return GradNormWeighting(task_names, warmup, args.gradnorm_alpha, args.gradnorm_learning_rate)
    if strategy == "pcgrad":
        return PCGradWeighting(task_names, warmup, static_weights, seed=args.seed)
    raise ValueError(f"unknown --loss_weighting {strategy!r}")


def save_weighting_state(weighting: TaskWeighting, path: str) -> None:
    """Write `weighting`'s state dict (tensors and plain containers only, so `load_weighting_state` can read it
    with ``weights_only=True``) atomically: a crash never leaves a half-written file at `path`."""
    temporary = path + ".tmp"
    torch.save(weighting.state_dict(), temporary)
    os.replace(temporary, path)


def load_weighting_state(path: str, device=None) -> dict:
    """A state dict written by `save_weighting_state` into a checkpoint, loaded with ``weights_only=True``: a file
    carrying anything but tensors and plain types (e.g. a planted pickle payload) is refused, never executed. A
    state of an earlier version whose checkpoint cannot be resumed (`legacy_weighting_state`) is refused too."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
        raise ValueError(
            f"{path}: cannot restore the loss-weighting state: not a plain tensor state dict loadable with "
            f"torch.load(weights_only=True) (corrupt, or written by something else; refusing to unpickle it): {err}"
        ) from err
    if legacy_weighting_state(state):  # else torch fails on optimizer.pt: "parameter group doesn't match"
        raise ValueError(f"{path}: saved by an earlier version (one log-variance vector for all tasks): the optimizer "
                         "state beside it does not fit the per-task log-variances; resume from a newer checkpoint or "
                         "train again")
    return state


# ---------------------------------------------------------------------------------------------------------------
# class imbalance
# ---------------------------------------------------------------------------------------------------------------
def _flatten_labels(values, problem_type: str) -> np.ndarray:
    """Labelled rows of an encoded ``labels.<task>`` column: int ids ``[n]`` or multi-hot ``[n, C]``."""
    rows = []
    for value in values:
        if value is None:
            continue
        if problem_type == SINGLE_LABEL:
            items = value if isinstance(value, (list, tuple)) else [value]  # span tasks: one id per mention
            rows.extend(int(item) for item in items if item is not None and int(item) != -100)
        else:
            array = np.asarray(value, dtype=np.float64)
            if array.ndim == 1:
                array = array[None, :]  # document task: one multi-hot row
            if array.size:
                rows.extend(row for row in array if not np.all(row == -100))
    if problem_type == SINGLE_LABEL:
        return np.asarray(rows, dtype=np.int64)
    return np.stack(rows) if rows else np.zeros((0, 0))


def balanced_loss_options(dataset, task: Mapping, max_weight: float = 50.0) -> dict[str, torch.Tensor]:
    """Class weights (single-label) or ``pos_weight`` (multi-label) from the training label frequencies.

    Single-label: ``n / (C * n_c)`` over the C classes present (scikit-learn's "balanced",
    ``compute_class_weight``); classes absent from the training set get 1.0 (they occur in no loss term).
    Multi-label: ``negatives / positives`` per label; labels never positive get 1.0. Both are capped at
    `max_weight` so that a label seen once does not dominate the loss.
    """
    column = label_column(task["name"])
    column_names = getattr(dataset, "column_names", None)
    if column_names is not None:
        if column not in column_names:
            return {}
        values = dataset[column]
    else:
        values = [example.get(column) for example in (dataset[i] for i in range(len(dataset)))]
    num_labels = len(task["labels"])
    labels = _flatten_labels(values, task["problem_type"])
    if len(labels) == 0:
        return {}
    if task["problem_type"] == SINGLE_LABEL:
        counts = np.bincount(labels, minlength=num_labels).astype(np.float64)
        if len(counts) > num_labels:
            raise ValueError(f"column {column!r}: label id {labels.max()} outside the task's {num_labels} labels")
        present = int((counts > 0).sum())
        weights = np.where(counts > 0, len(labels) / (present * np.maximum(counts, 1)), 1.0)
        return {"class_weights": torch.tensor(np.minimum(weights, max_weight), dtype=torch.float32)}
    if labels.shape[1] != num_labels:
        raise ValueError(f"column {column!r}: rows of {labels.shape[1]} labels, the task has {num_labels}")
    positives = (labels == 1).sum(axis=0).astype(np.float64)
    negatives = (labels == 0).sum(axis=0).astype(np.float64)  # known negatives: an unknown (-100) entry is neither
    pos_weight = np.where(positives > 0, negatives / np.maximum(positives, 1), 1.0)
    return {"pos_weight": torch.tensor(np.clip(pos_weight, 1e-3, max_weight), dtype=torch.float32)}
