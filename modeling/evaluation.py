"""Evaluation of `MultiTaskModel` as plain functions, behind `MultiTaskTrainer.evaluation_loop` / `evaluate`.

The steps: `collect_predictions` (run the model, keep per task the ids, document ids, logits and labels of this
process), `gather_predictions` (all processes, de-duplicated by id so 2 processes give the numbers of 1),
`task_outputs` (windows aggregated per document for document tasks), `task_eval_loss` (the model's own masked
loss, `losses.masked_task_loss`) and `score_predictions` (metrics of `modeling.metrics` plus losses).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

from .losses import masked_task_loss
from .metrics import compute_multitask_metrics, labelled_mask
from .thresholds import select_thresholds
from .vocabulary import DOCUMENT, IGNORE_INDEX, MULTI_LABEL, SINGLE_LABEL, probabilities_from_logits
from .windowing import aggregate_document_scores

logger = logging.getLogger(__name__)
FIELDS = ("ids", "documents", "logits", "labels")


def _empty_labels(task: Mapping, logits: np.ndarray) -> np.ndarray:
    """Labels of a batch that carries none for `task` (every row unlabelled)."""
    if task["problem_type"] == SINGLE_LABEL:
        return np.full((logits.shape[0],), IGNORE_INDEX, dtype=np.int64)
    return np.full(logits.shape, IGNORE_INDEX, dtype=np.float32)


def collect_predictions(
    model,
    dataloader,
    tasks: Sequence[Mapping],
    prepare_inputs: Callable[[dict], dict],
    forward_context: Callable,
    num_processes: int = 1,
    description: str = "eval_dataset",
) -> dict:
    """Run `model` over `dataloader`; per task ``{"ids", "documents", "logits", "labels"}`` of this process.

    Document tasks are keyed by ``example_index`` (a running number when absent, single process only), span
    tasks by ``mention_index``; ``"__examples__"`` holds the example ids seen.
    """
    task_names = [task["name"] for task in tasks]
    collected = {name: {key: [] for key in FIELDS} for name in task_names}
    running_id, example_ids = 0, []
    for inputs in dataloader:
        inputs = prepare_inputs(inputs)
        labels = inputs.pop("labels", None) or {}
        unknown = sorted(set(labels) - set(task_names))
        if unknown:
            raise ValueError(f"{description}: labels for task(s) {unknown} that the model lacks; its tasks are {task_names}")
        batch_size = inputs["input_ids"].shape[0]
        example_index = inputs.get("example_index")
        if example_index is None:
            if num_processes > 1:
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
        with torch.no_grad(), forward_context():
            outputs = model(**inputs)
        spans = inputs.get("mention_spans")
        for task in tasks:
            name = task["name"]
            logits = outputs.logits[name].detach().float().cpu().numpy()
            if task["level"] == DOCUMENT:
                ids, documents = example_index.cpu().numpy(), document_index.cpu().numpy()
            else:
                mention_index = inputs.get("mention_index")
                if mention_index is None:
                    raise ValueError(f"{description}: span task {name!r} needs 'mention_index' in the batches")
                rows = spans[:, 0] if spans is not None and spans.numel() else torch.zeros(0, dtype=torch.long)
                ids = mention_index.cpu().numpy()
                documents = document_index.to(rows.device)[rows].cpu().numpy() if len(rows) else np.zeros(0, int)
            target = labels.get(name)
            target = _empty_labels(task, logits) if target is None else target.detach().cpu().numpy()
            for key, value in zip(FIELDS, (ids, documents, logits, target)):
                collected[name][key].append(value)
    local = {"__examples__": np.asarray(example_ids, dtype=np.int64)}
    for task in tasks:
        parts = collected[task["name"]]
        empty = {"ids": np.zeros(0, np.int64), "documents": np.zeros(0, np.int64),
                 "logits": np.zeros((0, len(task["labels"])), np.float32), "labels": np.zeros((0,), np.int64)}
        data = {key: np.concatenate(parts[key]) if parts[key] else empty[key] for key in FIELDS}
        data["ids"], data["documents"] = data["ids"].astype(np.int64), data["documents"].astype(np.int64)
        local[task["name"]] = data
    return local


def gather_predictions(local: dict, task_names: Sequence[str], num_processes: int = 1) -> dict:
    """Predictions of all processes, de-duplicated by id and sorted by it (accelerate repeats samples to even
    out the last batches), so the result does not depend on the process count."""
    if num_processes > 1:
        from accelerate.utils import gather_object

        parts = gather_object([local])
    else:
        parts = [local]
    merged = {"__examples__": np.unique(np.concatenate([part["__examples__"] for part in parts]))}
    for name in task_names:
        keep = np.unique(np.concatenate([part[name]["ids"] for part in parts]), return_index=True)[1]
        merged[name] = {}
        for key in FIELDS:
            pieces = [part[name][key] for part in parts if len(part[name]["ids"])]
            merged[name][key] = np.concatenate(pieces)[keep] if pieces else local[name][key]
    return merged


def task_eval_loss(task: Mapping, logits: np.ndarray, labels: np.ndarray) -> float | None:
    """Unweighted mean loss over the labelled rows (windows / mentions): the model's masked loss, in float64."""
    if not len(logits):
        return None
    loss = masked_task_loss(task, torch.as_tensor(logits, dtype=torch.float64), torch.as_tensor(labels))
    return None if loss is None else float(loss)


def per_document(task: Mapping, data: Mapping, aggregation: str = "mean") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Document ids, probabilities and labels with the windows of each document aggregated (rows sorted by id;
    `aggregation` as in `aggregate_document_scores`)."""
    documents = data["documents"]
    if len(np.unique(documents)) == len(documents):
        return documents, probabilities_from_logits(data["logits"], task["problem_type"]), data["labels"]
    unique_documents, inverse = np.unique(documents, return_inverse=True)
    mask = labelled_mask(data["labels"], task["problem_type"])
    probabilities, labels = [], []
    for position in range(len(unique_documents)):
        rows = np.flatnonzero(inverse == position)
        probabilities.append(aggregate_document_scores(data["logits"][rows], task["problem_type"], aggregation=aggregation))
        labelled_rows = rows[mask[rows]]
        labels.append(data["labels"][labelled_rows[0] if len(labelled_rows) else rows[0]])
    return unique_documents, np.stack(probabilities), np.stack(labels)


def task_outputs(task: Mapping, data: Mapping, aggregation: str = "mean") -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and labels scored for a task: per document (document tasks, windows combined by
    `aggregation`), per mention (span tasks)."""
    if task["level"] == DOCUMENT and len(data["ids"]):
        return per_document(task, data, aggregation)[1:]
    if task["level"] == DOCUMENT:
        return data["logits"], data["labels"]
    return probabilities_from_logits(data["logits"], task["problem_type"]), data["labels"]


def tune_task_thresholds(
    config, predictions: Mapping, label_ids: Mapping, strategy: str, min_support: int, top1_fallback: bool
) -> dict[str, list[float]]:
    """Choose the thresholds of every multi-label task with labelled rows and store them through the config's
    validated setter (`MultiTaskConfig.set_thresholds`); returns ``{task: thresholds}`` of the tasks tuned."""
    tuned = {}
    for task in config.tasks:
        name, labels = task["name"], label_ids.get(task["name"])
        if task["problem_type"] != MULTI_LABEL or labels is None or not len(labels):
            continue
        if not labelled_mask(labels, MULTI_LABEL).any():
            continue
        thresholds = select_thresholds(predictions[name], labels, strategy, min_support, top1_fallback,
                                       relative_threshold=config.relative_threshold)
        if thresholds is not None:
            config.set_thresholds(name, thresholds)
            tuned[name] = thresholds
    if tuned:
        logger.info("decision thresholds (%s): %s", strategy, tuned)
    return tuned


def score_predictions(
    merged: Mapping,
    config,
    args,
    tune_thresholds: bool = False,
    compute_metrics: Callable | None = None,
) -> tuple[dict, dict, dict[str, float]]:
    """Per-task outputs, optional threshold tuning, metrics and losses from gathered predictions.

    `args` is a `MultiTaskTrainingArguments` (macro average, per-label metrics, calibration bins, threshold
    options). Returns ``(predictions, label_ids, metrics)`` with unprefixed metric keys.
    """
    predictions, label_ids, losses = {}, {}, {}
    for task in config.tasks:
        name, data = task["name"], merged[task["name"]]
        loss = task_eval_loss(task, data["logits"], data["labels"])
        if loss is not None:
            losses[name] = loss
        predictions[name], label_ids[name] = task_outputs(task, data, config.window_aggregation)
    if tune_thresholds:
        tune_task_thresholds(config, predictions, label_ids, args.threshold_strategy, args.threshold_min_support,
                             args.top1_fallback)
    metrics = compute_multitask_metrics(
        predictions,
        label_ids,
        config.tasks,
        macro_average=args.macro_average,
        per_label=args.log_per_label_metrics,
        calibration_bins=args.calibration_bins,
        top1_fallback=args.top1_fallback,
        relative_threshold=config.relative_threshold,
    )
    if losses:
        metrics["loss"] = float(sum(losses.values()))
        metrics.update({f"{name}_loss": value for name, value in losses.items()})
    if compute_metrics is not None:
        from transformers.trainer_utils import EvalPrediction

        metrics.update(compute_metrics(EvalPrediction(predictions=predictions, label_ids=label_ids)))
    return predictions, label_ids, metrics


def mean_over_sets(metrics: dict[str, float], names: Sequence[str], prefix: str) -> None:
    """Add ``<prefix>_mean_macro_f1`` / ``<prefix>_loss`` averaged over the named evaluation sets (in place)."""
    for key in ("mean_macro_f1", "loss"):
        values = [metrics[f"{prefix}_{name}_{key}"] for name in names if f"{prefix}_{name}_{key}" in metrics]
        if values:
            metrics[f"{prefix}_{key}"] = float(np.mean(values))
