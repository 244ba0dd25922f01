"""The shared vocabulary of the project, defined once, and the data contract between its layers.

Every module of ``modeling``, ``data_prep`` and the recipe layer imports these names instead of re-declaring
them. This file is copied next to every saved checkpoint (``trust_remote_code`` loading), so it imports only
the standard library, numpy and torch.

Task specification (a plain JSON dict, stored in order in ``MultiTaskConfig.tasks``)::

    {"name": "narratives",                      # letters, digits, "_" and "-" (it names modules and columns)
     "level": "document" | "span",              # one prediction per text, or one per entity mention
     "problem_type": "single_label_classification" | "multi_label_classification",
     "labels": ["Other", ...],                  # ordered: class id i is labels[i]
     "parents": {"fine label": "coarse label"}, # optional hierarchy (fine -> coarse), used by metrics
     "thresholds": [0.5, ...]}                  # optional, multi-label only: one decision threshold per label

Multi-task example (one row per text, what ``data_prep`` loaders produce; ``datasets.Dataset``)::

    doc_id: str, text: str,
    mentions: [{"start": int, "end": int}, ...]         # Python string indices, end exclusive
    <task name>: document task -> label name (single) | [label names] (multi) | None (no label for this task)
                 span task     -> one entry per mention, each as for a document task
    plus optional pass-through columns (domain, language, ...)

Encoded row (one row per token window, what ``data_prep.encode_for_model`` produces)::

    input_ids, attention_mask[, token_type_ids]: [L] ints
    document_index: int (row of the source example), window_index: int, length: int (tokens)
    mention_spans: [[start_token, end_token_exclusive], ...], mention_index: [int] (mention ids in the example)
    labels.<task> (see :func:`label_column`): document task -> class id | multi-hot [C] floats;
                  span task -> one of those per mention of the window;
                  IGNORE_INDEX (or a row of IGNORE_INDEX) = no label

Batch (what ``MultiTaskCollator`` returns and ``MultiTaskModel.forward`` takes)::

    input_ids, attention_mask[, token_type_ids]: [B, L] long, padded on the right
    mention_spans: [M, 3] long rows (batch_row, start_token, end_token_exclusive)
    labels: {task: [B] long | [B, C] float (document) ; [M] long | [M, C] float (span)}, IGNORE_INDEX = no label
    document_index, example_index: [B]; mention_index: [M] (when the rows carry them)
"""

from __future__ import annotations

import numpy as np

DOCUMENT = "document"
SPAN = "span"
TASK_LEVELS = (DOCUMENT, SPAN)

SINGLE_LABEL = "single_label_classification"
MULTI_LABEL = "multi_label_classification"
PROBLEM_TYPES = (SINGLE_LABEL, MULTI_LABEL)

#: How a multi-label document task combines the scores of a long text's windows
#: (`MultiTaskConfig.window_aggregation`, `windowing.aggregate_document_scores`).
WINDOW_AGGREGATIONS = ("mean", "max")

#: The "no label" value of encoded labels (PyTorch's cross-entropy ``ignore_index``).
IGNORE_INDEX = -100

#: Encoded label columns are named ``labels.<task>``.
LABEL_COLUMN_PREFIX = "labels."


def label_column(task_name: str) -> str:
    """Name of the encoded label column of a task (``labels.<task>``)."""
    return f"{LABEL_COLUMN_PREFIX}{task_name}"


def task_of_label_column(column: str) -> str | None:
    """The task name of an encoded label column, or None when ``column`` is not one."""
    return column[len(LABEL_COLUMN_PREFIX):] if column.startswith(LABEL_COLUMN_PREFIX) else None


def check_problem_type(problem_type: str) -> str:
    if problem_type not in PROBLEM_TYPES:
        raise ValueError(f"unknown problem_type {problem_type!r}; expected one of {list(PROBLEM_TYPES)}")
    return problem_type


def probabilities_from_logits(logits, problem_type: str):
    """Sigmoid (multi-label) or softmax over the last axis (single-label) of ``logits``.

    Takes a torch tensor (returns one, same dtype and device) or anything numpy reads (returns float64 numpy).
    """
    check_problem_type(problem_type)
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        torch = None
    if torch is not None and isinstance(logits, torch.Tensor):
        return torch.sigmoid(logits) if problem_type == MULTI_LABEL else torch.softmax(logits, dim=-1)
    logits = np.asarray(logits, dtype=np.float64)
    if problem_type == MULTI_LABEL:
        return 1.0 / (1.0 + np.exp(-logits))
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exponentials = np.exp(shifted)
    return exponentials / exponentials.sum(axis=-1, keepdims=True)
