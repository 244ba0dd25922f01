"""Tokenisation and label encoding of multi-task examples for ``MultiTaskModel``, with long texts windowed.

Each example (article) is cut by :func:`modeling.windowing.window_text` into overlapping windows of
``max_length`` tokens with ``stride`` tokens of overlap (the same function ``MultiTaskModel.predict``
uses, so training and inference cut texts identically). Every mention goes to exactly one window that
contains it whole; document labels are repeated on every window; ``document_index`` keeps the source
article so evaluation can aggregate windows per document (:func:`windows_by_document`).

Nothing is truncated away. On the shared English sample of SemEval-2025 Task 10 (24 articles, 63 mentions),
with the MiniLM tokenizer: 18 of 24 articles exceed 512 tokens (median 618 tokens incl. special tokens), and
3 of the 63 mentions (4.8%; about 14% on the full English release) start at token position 512 or later, so
truncation to 512 tokens would lose them. With ``max_length=512, stride=128`` the sample gives 43 windows and
every one of the 63 mentions is assigned to a window whose tokens decode to the mention
(``tests/test_data_encoding.py``).

The result is cached by ``datasets.map`` (fingerprints of the inputs, tokenizer and settings) when the
examples live in cache files (e.g. loaded from disk); for in-memory examples pass ``cache_file_name``.
"""

from __future__ import annotations

from typing import Sequence

import datasets
import numpy as np

from modeling.vocabulary import DOCUMENT, IGNORE_INDEX, MULTI_LABEL as MULTI, SINGLE_LABEL as SINGLE, SPAN, label_column  # noqa: F401


def _as_task_dicts(tasks) -> list[dict]:
    specs = []
    for task in tasks:
        if isinstance(task, dict):
            specs.append(dict(task))
        elif hasattr(task, "spec"):
            specs.append(task.spec)
        elif hasattr(task, "to_dict"):
            specs.append(task.to_dict())
        else:
            raise TypeError(f"a task must be a dict, a TaskSpec or a SemEvalTask, got {type(task).__name__}")
    names = [s.get("name") for s in specs]
    for spec in specs:
        for key in ("name", "level", "problem_type", "labels"):
            if key not in spec:
                raise ValueError(f"task {spec.get('name')!r}: field {key!r} missing")
        if not spec["labels"]:
            raise ValueError(f"task {spec['name']!r}: field 'labels' is empty")
        if spec["level"] not in ("document", "span"):
            raise ValueError(f"task {spec['name']!r}: field 'level' must be 'document' or 'span', got {spec['level']!r}")
        if spec["problem_type"] not in (SINGLE, MULTI):
            raise ValueError(f"task {spec['name']!r}: field 'problem_type' is {spec['problem_type']!r}")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"duplicate task names {duplicates}")
    return specs


def encoded_features(tasks, with_token_type_ids: bool) -> datasets.Features:
    """Schema of the encoded (windowed) rows (the data contract in :mod:`modeling.vocabulary`)."""
    ints = datasets.List(datasets.Value("int32"))
    features = {"input_ids": ints, "attention_mask": datasets.List(datasets.Value("int8"))}
    if with_token_type_ids:
        features["token_type_ids"] = datasets.List(datasets.Value("int8"))
    features.update(
        {
            "document_index": datasets.Value("int64"),
            "window_index": datasets.Value("int32"),
            "mention_spans": datasets.List(datasets.List(datasets.Value("int32"))),
            "mention_index": datasets.List(datasets.Value("int64")),
            "length": datasets.Value("int32"),
        }
    )
    for spec in _as_task_dicts(tasks):
        multi = spec["problem_type"] == MULTI
        if spec["level"] == "document":
            feature = datasets.List(datasets.Value("float32")) if multi else datasets.Value("int64")
        else:
            feature = datasets.List(datasets.List(datasets.Value("float32"))) if multi else datasets.List(datasets.Value("int64"))
        features[label_column(spec["name"])] = feature
    return datasets.Features(features)


def _encode_value(value, spec: dict, index: dict[str, int], where: str):
    """Label name(s) -> class id or multi-hot; ``None`` -> the "no label" value."""
    multi = spec["problem_type"] == MULTI
    if value is None:
        return [float(IGNORE_INDEX)] * len(spec["labels"]) if multi else IGNORE_INDEX
    names = value if isinstance(value, (list, tuple)) else [value]
    if not multi and len(names) != 1:
        raise ValueError(f"{where}: single-label task {spec['name']!r} got {len(names)} labels {list(names)}")
    for name in names:
        if name not in index:
            raise ValueError(f"{where}: label {name!r} is not one of the {len(index)} labels of task {spec['name']!r}")
    if not multi:
        return index[names[0]]
    hot = [0.0] * len(spec["labels"])
    for name in names:
        hot[index[name]] = 1.0
    return hot


def _encode_batch(batch, indices, *, tokenizer, specs, max_length, stride, mention_offsets, text_column, id_column):
    from modeling.windowing import window_text  # imported here: data_prep must import without the model package

    label_index = {s["name"]: {label: i for i, label in enumerate(s["labels"])} for s in specs}
    out: dict[str, list] = {name: [] for name in ("input_ids", "attention_mask", "document_index", "window_index", "mention_spans", "mention_index", "length")}
    out.update({label_column(s["name"]): [] for s in specs})
    with_types = None
    for row, document_index in enumerate(indices):
        text = batch[text_column][row]
        doc_id = batch[id_column][row] if id_column else document_index
        where = f"document {doc_id!r} (row {document_index})"
        mentions = (batch["mentions"][row] or []) if "mentions" in batch else []
        spans = [(m["start"], m["end"]) for m in mentions]
        try:
            windows = window_text(tokenizer, text, spans, max_length=max_length, stride=stride)
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from error
        assigned = sorted(m for w in windows for m in w["mention_ids"])
        if assigned != list(range(len(spans))):  # the contract of window_text; checked because losing one is silent
            raise RuntimeError(f"{where}: windowing assigned mentions {assigned}, expected each of {len(spans)} once")
        labels = {}
        for spec in specs:
            value = batch[spec["name"]][row] if spec["name"] in batch else None
            if spec["level"] == "document":
                labels[spec["name"]] = _encode_value(value, spec, label_index[spec["name"]], f"{where}, task {spec['name']!r}")
            else:
                if value is not None and len(value) != len(spans):
                    raise ValueError(
                        f"{where}, task {spec['name']!r}: {len(value)} span labels for {len(spans)} mentions"
                    )
                per_mention = value if value is not None else [None] * len(spans)
                labels[spec["name"]] = [
                    _encode_value(v, spec, label_index[spec["name"]], f"{where}, mention {m}, task {spec['name']!r}")
                    for m, v in enumerate(per_mention)
                ]
        for window in windows:
            if with_types is None:
                with_types = "token_type_ids" in window
                if with_types:
                    out["token_type_ids"] = []
            out["input_ids"].append(window["input_ids"])
            out["attention_mask"].append(window["attention_mask"])
            if with_types:
                out["token_type_ids"].append(window["token_type_ids"])
            out["document_index"].append(int(document_index))
            out["window_index"].append(window["window_index"])
            out["mention_spans"].append(window["mention_spans"])
            out["mention_index"].append([int(mention_offsets[document_index]) + m for m in window["mention_ids"]])
            out["length"].append(len(window["input_ids"]))
            for spec in specs:
                column = label_column(spec["name"])
                if spec["level"] == "document":
                    out[column].append(labels[spec["name"]])
                else:
                    out[column].append([labels[spec["name"]][m] for m in window["mention_ids"]])
    return out


def encode_for_model(
    examples: datasets.Dataset,
    tokenizer,
    tasks: Sequence,
    max_length: int = 512,
    stride: int = 128,
    text_column: str = "text",
    id_column: str | None = "doc_id",
    batch_size: int = 64,
    num_proc: int | None = None,
    load_from_cache_file: bool | None = None,
    cache_file_name: str | None = None,
) -> datasets.Dataset:
    """Encode multi-task examples into windowed model rows (the "Encoded (windowed) dataset row" format).

    Args:
        examples: multi-task examples (``text``, ``mentions``, one column per task; a task column that is
            absent means "no label" for every row).
        tokenizer: a fast tokenizer of the backbone.
        tasks: task dicts, ``TaskSpec`` or :class:`~data_prep.tasks.SemEvalTask` objects.
        max_length: tokens per window, special tokens included (at most the backbone's positions).
        stride: tokens shared by consecutive windows.
        id_column: column naming documents in error messages (``None``: row numbers).

    Rows: ``input_ids``, ``attention_mask`` (``token_type_ids`` when the tokenizer makes them),
    ``document_index`` (row of ``examples``), ``example_index`` (row of the result), ``window_index``,
    ``mention_spans``, ``mention_index`` (global mention id: mentions numbered over all documents in order),
    ``length`` and ``labels.<task>`` per task (-100 = no label). Cached by ``datasets.map``.
    """
    specs = _as_task_dicts(tasks)
    if text_column not in examples.column_names:
        raise ValueError(f"column {text_column!r} not in the examples ({examples.column_names})")
    if id_column is not None and id_column not in examples.column_names:
        id_column = None
    counts = [len(m or []) for m in examples["mentions"]] if "mentions" in examples.column_names else [0] * len(examples)
    mention_offsets = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]).tolist()
    with_types = "token_type_ids" in tokenizer.model_input_names
    features = encoded_features(specs, with_types)
    encoded = examples.map(
        _encode_batch,
        with_indices=True,
        batched=True,
        batch_size=batch_size,
        remove_columns=examples.column_names,
        features=features,
        num_proc=num_proc,
        load_from_cache_file=load_from_cache_file,
        cache_file_name=cache_file_name,
        fn_kwargs={
            "tokenizer": tokenizer,
            "specs": specs,
            "max_length": max_length,
            "stride": stride,
            "mention_offsets": mention_offsets,
            "text_column": text_column,
            "id_column": id_column,
        },
        desc="windowing and encoding",
    )
    encoded = encoded.map(
        lambda batch, idx: {"example_index": list(idx)},
        with_indices=True,
        batched=True,
        batch_size=1000,
        load_from_cache_file=load_from_cache_file,
        desc="numbering windows",
    )
    return encoded


def windows_by_document(encoded: datasets.Dataset) -> dict[int, list[int]]:
    """Document index -> rows of its windows (in window order): how evaluation regroups windows."""
    groups: dict[int, list[tuple[int, int]]] = {}
    for row, (document, window) in enumerate(zip(encoded["document_index"], encoded["window_index"])):
        groups.setdefault(int(document), []).append((int(window), row))
    return {document: [row for _, row in sorted(rows)] for document, rows in sorted(groups.items())}
