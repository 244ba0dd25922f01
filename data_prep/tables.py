"""Tables of labelled texts (e.g. helpdesk tickets) as multi-task examples.

A table is a CSV/TSV, JSON lines, Parquet file, a ``pandas.DataFrame`` or a ``datasets.Dataset``. The text
is built from one or more columns (``title`` + ``body``, joined by ``text_separator``, empty parts left
out); each label column is one document-level task. A missing or empty label means "no label for this
task" (``None``), so one table can train several heads with partial labels.

Label values are normalised to strings: integer codes become ``"3"`` (floats that pandas made out of
integer columns with gaps, ``3.0``, too). A column mixing numeric codes and text labels (``3`` and
``"high"``) is almost always a data error and raises :class:`TableFormatError` naming the file, column and
the first row of each kind. Label names come from the data (sorted, numerically for codes) or are given per
task; a value outside the given names is an error naming file, row and column.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Mapping, Sequence

import datasets

from modeling.vocabulary import MULTI_LABEL as MULTI, SINGLE_LABEL as SINGLE  # noqa: F401


class TableFormatError(ValueError):
    """Bad input in a table; the message names the file, the row (1-based, as in an editor) and the column."""


@dataclass
class LabelledTable:
    """The result of :func:`load_table`."""

    examples: datasets.Dataset
    """Multi-task examples: ``doc_id``, ``text``, ``mentions`` (empty), one column per task."""
    tasks: list[dict]
    """Task dicts (document level; the task specification of :mod:`modeling.vocabulary`)."""
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    """Per task: ``labelled`` and ``missing`` rows; plus ``rows`` / ``skipped`` under key ``"_table"``."""


def _read_source(source, file_format: str | None):
    """Return (list of row dicts, column names, description for messages, first data line number)."""
    import pandas as pd

    if isinstance(source, datasets.Dataset):
        return source.to_list(), source.column_names, "dataset", 1
    if isinstance(source, pd.DataFrame):
        return source.to_dict(orient="records"), list(source.columns), "dataframe", 1
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: table not found")
    kind = file_format or path.suffix.lower().lstrip(".")
    if kind in ("csv", "tsv"):
        # Read everything as text: the type check below then sees codes and names as the file has them.
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, sep="\t" if kind == "tsv" else ",")
        return frame.to_dict(orient="records"), list(frame.columns), str(path), 2
    if kind in ("jsonl", "json"):
        try:
            frame = pd.read_json(path, lines=kind == "jsonl", dtype=False)
        except ValueError as error:
            raise TableFormatError(f"{path}: not valid JSON{' lines' if kind == 'jsonl' else ''} ({error})") from error
        return frame.to_dict(orient="records"), list(frame.columns), str(path), 1
    if kind == "parquet":
        frame = pd.read_parquet(path)
        return frame.to_dict(orient="records"), list(frame.columns), str(path), 1
    raise TableFormatError(f"{path}: unsupported table format {kind!r} (csv, tsv, jsonl, json, parquet)")


def _is_missing(value) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


def _kind_of(value, from_text_file: bool) -> str:
    """``"number"`` or ``"text"`` (what mixing is checked on)."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, numbers.Number):
        return "number"
    if isinstance(value, str):
        if from_text_file:
            try:
                float(value)
                return "number"
            except ValueError:
                return "text"
        return "text"
    return type(value).__name__


def _normalise(value, where: str) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        if float(value).is_integer():
            return str(int(value))
        raise TableFormatError(f"{where}: label {value!r} is a non-integral number; label codes must be integers or names")
    text = str(value).strip()
    try:  # "3.0" in a CSV written from a float column -> "3"
        number = float(text)
        if number.is_integer() and text.lower() not in ("nan", "inf", "-inf"):
            return str(int(number))
    except ValueError:
        pass
    return text


def _sort_key(label: str):
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)


def load_table(
    source,
    text_columns: Sequence[str] = ("text",),
    label_columns: Sequence[str] | Mapping[str, str] = (),
    label_names: Mapping[str, Sequence[str]] | None = None,
    id_column: str | None = None,
    text_separator: str = "\n",
    multi_label_columns: Sequence[str] = (),
    multi_label_separator: str = ";",
    file_format: str | None = None,
    on_error: Literal["raise", "skip"] = "raise",
) -> LabelledTable:
    """Load a table of labelled texts as multi-task examples plus task specs.

    Args:
        source: path (``.csv``, ``.tsv``, ``.jsonl``, ``.json``, ``.parquet``), ``pandas.DataFrame`` or
            ``datasets.Dataset``.
        text_columns: columns joined (non-empty parts, in order) into the text.
        label_columns: label columns, one task each; a mapping renames them (column -> task name).
        label_names: per task, the ordered label names; by default the sorted values found in the data.
        id_column: column of unique ids (``doc_id``); by default the row number.
        multi_label_columns: label columns holding several labels separated by ``multi_label_separator``.
        on_error: ``"skip"`` drops rows whose text is empty instead of raising (counted in ``counts``).
            Type and label-name errors always raise: they concern the whole column.
    """
    rows, columns, origin, first_line = _read_source(source, file_format)
    from_text_file = origin.endswith((".csv", ".tsv"))
    label_map = dict(label_columns) if isinstance(label_columns, Mapping) else {c: c for c in label_columns}
    if not label_map:
        raise ValueError("give at least one label column")
    needed = [*text_columns, *label_map, *([id_column] if id_column else [])]
    missing = [c for c in needed if c not in columns]
    if missing:
        raise TableFormatError(f"{origin}: columns {missing} not found (columns: {list(columns)})")
    label_names = {k: [str(v) for v in vs] for k, vs in (label_names or {}).items()}
    unknown_tasks = set(label_names) - set(label_map.values())
    if unknown_tasks:
        raise ValueError(f"label_names given for unknown tasks {sorted(unknown_tasks)}")

    def where(index: int, column: str | None = None) -> str:
        text = f"{origin}, row {index + first_line}"
        return f"{text}, column {column!r}" if column else text

    # Column-wide type check first: mixed numeric codes and text names.
    for column in label_map:
        first_of_kind: dict[str, tuple[int, object]] = {}
        for index, row in enumerate(rows):
            value = row[column]
            if _is_missing(value):
                continue
            values = str(value).split(multi_label_separator) if column in multi_label_columns else [value]
            for item in values:
                if _is_missing(item):
                    continue
                first_of_kind.setdefault(_kind_of(item, from_text_file), (index, item))
        if len(first_of_kind) > 1:
            examples = "; ".join(f"{kind} {value!r} at row {index + first_line}" for kind, (index, value) in first_of_kind.items())
            raise TableFormatError(f"{origin}, column {column!r}: label column of mixed types ({examples})")

    records, skipped = [], 0
    seen_ids: dict[str, int] = {}
    for index, row in enumerate(rows):
        parts = [str(row[c]).strip() for c in text_columns if not _is_missing(row[c])]
        text = text_separator.join(p for p in parts if p)
        if not text:
            if on_error == "skip":
                skipped += 1
                continue
            raise TableFormatError(f"{where(index)}: empty text (columns {list(text_columns)} are all empty)")
        doc_id = str(row[id_column]) if id_column else str(index)
        if doc_id in seen_ids:
            raise TableFormatError(f"{where(index, id_column)}: duplicate id {doc_id!r} (first at row {seen_ids[doc_id] + first_line})")
        seen_ids[doc_id] = index
        record = {"doc_id": doc_id, "text": text, "mentions": []}
        for column, task in label_map.items():
            value = row[column]
            if _is_missing(value):
                record[task] = None
            elif column in multi_label_columns:
                labels = [_normalise(v, where(index, column)) for v in str(value).split(multi_label_separator) if v.strip()]
                record[task] = labels or None
            else:
                record[task] = _normalise(value, where(index, column))
            if task in label_names and record[task] is not None:
                for label in record[task] if isinstance(record[task], list) else [record[task]]:
                    if label not in label_names[task]:
                        raise TableFormatError(
                            f"{where(index, column)}: label {label!r} is not one of the given names {label_names[task]}"
                        )
        records.append(record)

    tasks, counts = [], {"_table": {"rows": len(records), "skipped": skipped}}
    features = {
        "doc_id": datasets.Value("string"),
        "text": datasets.Value("string"),
        "mentions": datasets.List({"start": datasets.Value("int64"), "end": datasets.Value("int64")}),
    }
    for column, task in label_map.items():
        multi = column in multi_label_columns
        values = [r[task] for r in records if r[task] is not None]
        names = label_names.get(task) or sorted({v for x in values for v in (x if multi else [x])}, key=_sort_key)
        if not names:
            raise TableFormatError(f"{origin}, column {column!r}: no labels at all")
        tasks.append(
            {
                "name": task,
                "level": "document",
                "problem_type": MULTI if multi else SINGLE,
                "labels": list(names),
                "parents": None,
                "thresholds": None,
            }
        )
        counts[task] = {"labelled": len(values), "missing": len(records) - len(values)}
        features[task] = datasets.List(datasets.Value("string")) if multi else datasets.Value("string")
    features = datasets.Features(features)
    if records:
        examples = datasets.Dataset.from_list(records, features=features)
    else:
        examples = datasets.Dataset.from_dict({k: [] for k in features}, features=features)
    return LabelledTable(examples=examples, tasks=tasks, counts=counts)
