"""Tables of labelled texts (e.g. helpdesk tickets) as multi-task examples.

A table is a CSV/TSV, JSON lines, JSON, Parquet file, a ``pandas.DataFrame`` or a ``datasets.Dataset``. The
text is built from one or more columns (``title`` + ``body``, joined by ``text_separator``, empty parts left
out); each label column is one document-level task, so one table can train several heads with partial labels.

Label values, the same rules for every format:

* **Missing** ("no label for this task", ``None``): an empty cell, JSON ``null``, a float NaN, or one of the
  standard missing markers :data:`MISSING_MARKERS` (``NaN``, ``nan``, ``NA``, ``N/A``, ``null``, ``None``, ...)
  written as text. A label literally called ``NA`` therefore cannot be used: rename it.
* **Integer codes** are normalised to strings: ``3``, ``3.0`` (pandas writes integer columns with gaps as
  floats) and ``"3"`` all become ``"3"``. Two spellings of one code in a column (``01`` and ``1``, ``3`` and
  ``3.0``) are refused, naming both lines: they would silently merge two classes.
* Non-integral numbers (``2.5``) and non-finite ones (``inf``, ``-inf``, ``Infinity``) are errors: a class
  is an integer code or a name.
* A column mixing numeric codes and text names (``3`` and ``"high"``) is almost always a data error and is
  refused, naming the first line of each kind.

Label names come from the data (sorted, numerically for codes) or are given per task; a value outside the
given names is an error naming file, line and column.

Files are read as UTF-8 (a leading BOM is ignored); CSV/TSV with the :mod:`csv` module so that every record
keeps its line number, and a record with fewer or more fields than the header is an error (a short row would
otherwise silently lose its last labels). Errors raise :class:`TableFormatError` naming the file and line
(``row N`` for in-memory tables). With ``on_error="skip"`` rows with a row-level error (empty text, wrong
number of fields, a bad label value) are dropped instead, logged, and listed in :attr:`LabelledTable.skipped`;
column-level errors (mixed types, ambiguous codes, missing columns, duplicate ids) always raise.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import numbers
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Mapping, Sequence

import datasets

from modeling.vocabulary import MULTI_LABEL as MULTI, SINGLE_LABEL as SINGLE  # noqa: F401

logger = logging.getLogger(__name__)

MISSING_MARKERS = frozenset({"NaN", "nan", "NAN", "-NaN", "-nan", "NA", "N/A", "n/a", "#N/A", "<NA>", "null", "NULL", "Null", "None"})
"""Text values that mean "no label" in every format (pandas' default missing markers, exact case)."""


class TableFormatError(ValueError):
    """Bad input in a table; the message names the file, the line (``row`` for in-memory tables) and the column."""


class _RowError(TableFormatError):
    """An error confined to one row: ``on_error="skip"`` drops the row instead of raising."""


@dataclass
class LabelledTable:
    """The result of :func:`load_table`."""

    examples: datasets.Dataset
    """Multi-task examples: ``doc_id``, ``text``, ``mentions`` (empty), one column per task."""
    tasks: list[dict]
    """Task dicts (document level; the task specification of :mod:`modeling.vocabulary`)."""
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    """Per task: ``labelled`` and ``missing`` rows; plus ``rows`` / ``skipped`` under key ``"_table"``."""
    skipped: list[tuple[int, str]] = field(default_factory=list)
    """Rows dropped by ``on_error="skip"``: (line number, or row number of an in-memory table; the error message)."""


@dataclass
class _Source:
    rows: list[dict]
    columns: list[str]
    origin: str
    lines: list[int]
    """The line (file) or 1-based row (in-memory table) of each row."""
    unit: str = "line"
    errors: dict[int, str] = field(default_factory=dict)
    """Row index -> a structural error found while reading (wrong number of fields)."""


def _decode(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise TableFormatError(f"{path}, line {line}: not valid UTF-8 ({error.reason} at byte {error.start}); save the table as UTF-8") from error


def _read_delimited(path: Path, delimiter: str) -> _Source:
    reader = csv.reader(io.StringIO(_decode(path), newline=""), delimiter=delimiter, strict=True)
    header, rows, lines, errors, previous_end = None, [], [], {}, 0
    try:
        for record in reader:
            start, previous_end = previous_end + 1, reader.line_num
            if not record or (len(record) == 1 and not record[0].strip() and header is not None):
                continue  # blank line
            if header is None:
                header = [name.strip() for name in record]
                duplicates = sorted({name for name in header if header.count(name) > 1})
                if duplicates:
                    raise TableFormatError(f"{path}, line {start}: duplicate column names {duplicates}")
                continue
            if len(record) != len(header):
                errors[len(rows)] = f"{len(record)} fields where the header has {len(header)}"
                record = (record + [""] * len(header))[: len(header)]
            rows.append(dict(zip(header, record)))
            lines.append(start)
    except csv.Error as error:
        raise TableFormatError(f"{path}, line {reader.line_num}: not valid {'TSV' if delimiter == chr(9) else 'CSV'} ({error})") from error
    if header is None:
        raise TableFormatError(f"{path}: empty table (no header line)")
    return _Source(rows, header, str(path), lines, errors=errors)


def _read_json_lines(path: Path) -> _Source:
    rows, lines, columns = [], [], {}
    # "\n" only: str.splitlines() also splits at U+2028 / U+0085, which JSON strings may hold unescaped
    for number, line in enumerate((line.rstrip("\r") for line in _decode(path).split("\n")), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise TableFormatError(f"{path}, line {number}: not valid JSON ({error.msg} at column {error.colno})") from error
        if not isinstance(row, dict):
            raise TableFormatError(f"{path}, line {number}: expected a JSON object, found {type(row).__name__}")
        columns.update(dict.fromkeys(row))
        rows.append(row)
        lines.append(number)
    return _Source([{c: r.get(c) for c in columns} for r in rows], list(columns), str(path), lines)


def _read_source(source, file_format: str | None) -> _Source:
    import pandas as pd

    if isinstance(source, (datasets.Dataset, pd.DataFrame)):
        rows = source.to_list() if isinstance(source, datasets.Dataset) else source.to_dict(orient="records")
        columns = source.column_names if isinstance(source, datasets.Dataset) else [str(c) for c in source.columns]
        kind = "dataset" if isinstance(source, datasets.Dataset) else "dataframe"
        return _Source(rows, list(columns), kind, list(range(1, len(rows) + 1)), unit="row")
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: table not found")
    kind = file_format or path.suffix.lower().lstrip(".")
    if kind in ("csv", "tsv"):
        return _read_delimited(path, "\t" if kind == "tsv" else ",")
    if kind == "jsonl":
        return _read_json_lines(path)
    if kind == "json":
        try:
            rows = json.loads(_decode(path))
        except json.JSONDecodeError as error:
            raise TableFormatError(f"{path}, line {error.lineno}: not valid JSON ({error.msg})") from error
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise TableFormatError(f"{path}: expected a JSON list of objects (one per row)")
        columns = list(dict.fromkeys(c for r in rows for c in r))
        return _Source([{c: r.get(c) for c in columns} for r in rows], columns, str(path), list(range(1, len(rows) + 1)), unit="row")
    if kind == "parquet":
        try:
            frame = pd.read_parquet(path)
        except Exception as error:  # noqa: BLE001  (pyarrow raises many types; all mean "unreadable file")
            raise TableFormatError(f"{path}: cannot read as Parquet ({type(error).__name__}: {error})") from error
        return _Source(frame.to_dict(orient="records"), [str(c) for c in frame.columns], str(path), list(range(1, len(frame) + 1)), unit="row")
    raise TableFormatError(f"{path}: unsupported table format {kind!r} (csv, tsv, jsonl, json, parquet)")


def _is_missing(value) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and (not value.strip() or value.strip() in MISSING_MARKERS)


def _kind_of(value) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, numbers.Number):
        return "number"
    if isinstance(value, str):  # "3" and "3.0" are codes in any format: a JSON string, a DataFrame cell, a CSV cell
        return "number" if _number_in(value) is not None else "text"
    return type(value).__name__


# A code written as digits: not Python's float() syntax, which also reads "4_0" as 40, "1e1" as 10 and full-width digits.
_NUMERIC_CODE = re.compile(r"[-+]?[0-9]+(?:\.[0-9]*)?")


def _number_in(text: str) -> float | None:
    """The number a label cell writes: digits (``"3"``, ``"3.0"``), or a non-finite spelling (``"inf"``, refused
    later with its line); None for any other text."""
    text = text.strip()
    if _NUMERIC_CODE.fullmatch(text):
        return float(text)
    try:
        number = float(text)
    except ValueError:
        return None
    return None if math.isfinite(number) else number


def _normalise(value, where: str) -> str:
    """The label string of one (non-missing) value; numbers must be finite integers."""
    if isinstance(value, (list, tuple, dict)):
        raise _RowError(f"{where}: {type(value).__name__} value {value!r} in a single-label column (several labels: "
                        "name the column in multi_label_columns)")
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    number = None
    if isinstance(value, numbers.Real):
        number = float(value)
    elif isinstance(value, str):
        number = _number_in(value)  # "3.0" (a CSV written from a float column, a JSON string) -> "3"
    if number is None:
        return str(value).strip()
    if not math.isfinite(number):
        raise _RowError(f"{where}: label {value!r} is not a finite number; label codes must be integers or names")
    if not number.is_integer():
        raise _RowError(f"{where}: label {value!r} is a non-integral number; label codes must be integers or names")
    return str(int(number))


def _sort_key(label: str):
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)


def _split(value, column: str, multi_label_columns, separator: str) -> list:
    if column in multi_label_columns:
        items = value if isinstance(value, (list, tuple)) else str(value).split(separator)  # a JSON array, or "a;b"
        return [v for v in items if not _is_missing(v)]
    return [value]


def _check_columns(source: _Source, label_map, multi_label_columns, separator) -> None:
    """Column-wide checks: mixed numeric codes and text names; two spellings of one integer code."""
    for column in label_map:
        first_of_kind: dict[str, tuple[int, object]] = {}
        spelling_of_code: dict[str, tuple[str, int]] = {}
        for index, row in enumerate(source.rows):
            if index in source.errors or _is_missing(row[column]):
                continue  # a malformed row (wrong field count) is reported, or skipped, for itself
            for item in _split(row[column], column, multi_label_columns, separator):
                kind = _kind_of(item)
                first_of_kind.setdefault(kind, (index, item))
                if kind != "number" or not isinstance(item, str):
                    continue  # JSON 3 and 3.0 are one number; only two written spellings of it are ambiguous
                spelling = item.strip()
                try:
                    code = _normalise(item, "")
                except _RowError:
                    continue  # reported for its row
                seen = spelling_of_code.setdefault(code, (spelling, index))
                if seen[0] != spelling:
                    raise TableFormatError(
                        f"{source.origin}, column {column!r}: ambiguous integer codes {seen[0]!r} ({source.unit} "
                        f"{source.lines[seen[1]]}) and {spelling!r} ({source.unit} {source.lines[index]}) are both "
                        f"code {code}; write each class one way"
                    )
        if len(first_of_kind) > 1:
            examples = "; ".join(f"{kind} {value!r} at {source.unit} {source.lines[index]}" for kind, (index, value) in first_of_kind.items())
            raise TableFormatError(f"{source.origin}, column {column!r}: label column of mixed types ({examples})")


SKIPPED_ROWS_LOGGED = 20  # one warning per skipped row up to this many


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
    max_skipped_fraction: float = 1.0,
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
        on_error: ``"skip"`` drops rows with a row-level error (empty text, wrong number of fields, a bad
            label value) instead of raising; they are logged and listed in ``LabelledTable.skipped``.
            Column-level errors (mixed types, ambiguous codes, duplicate ids) always raise.
        max_skipped_fraction: with ``on_error="skip"``, the largest share of rows that may be skipped (a table
            whose rows are mostly malformed is the wrong file, or read with the wrong settings); a table with
            every row skipped always raises, naming the first reasons.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if not 0.0 <= max_skipped_fraction <= 1.0:
        raise ValueError(f"max_skipped_fraction must be in [0, 1], got {max_skipped_fraction!r}")
    source = _read_source(source, file_format)
    label_map = dict(label_columns) if isinstance(label_columns, Mapping) else {c: c for c in label_columns}
    if not label_map:
        raise ValueError("give at least one label column")
    needed = [*text_columns, *label_map, *([id_column] if id_column else [])]
    missing = [c for c in needed if c not in source.columns]
    if missing:
        raise TableFormatError(f"{source.origin}: columns {missing} not found (columns: {list(source.columns)})")
    label_names = {k: [str(v) for v in vs] for k, vs in (label_names or {}).items()}
    unknown_tasks = set(label_names) - set(label_map.values())
    if unknown_tasks:
        raise ValueError(f"label_names given for unknown tasks {sorted(unknown_tasks)}")
    _check_columns(source, label_map, multi_label_columns, multi_label_separator)

    def where(index: int, column: str | None = None) -> str:
        text = f"{source.origin}, {source.unit} {source.lines[index]}"
        return f"{text}, column {column!r}" if column else text

    def record_of(index: int, row: dict) -> dict:
        if index in source.errors:
            raise _RowError(f"{where(index)}: {source.errors[index]}")
        parts = [str(row[c]).strip() for c in text_columns if not _is_missing(row[c])]
        text = text_separator.join(p for p in parts if p)
        if not text:
            raise _RowError(f"{where(index)}: empty text (columns {list(text_columns)} are all empty)")
        if id_column and (_is_missing(row[id_column]) or not str(row[id_column]).strip()):
            raise _RowError(f"{where(index, id_column)}: empty id")
        record = {"doc_id": str(row[id_column]).strip() if id_column else str(index), "text": text, "mentions": []}
        for column, task in label_map.items():
            value = row[column]
            labels = [] if _is_missing(value) else [
                _normalise(v, where(index, column))
                for v in _split(value, column, multi_label_columns, multi_label_separator)
            ]
            for label in labels:
                if task in label_names and label not in label_names[task]:
                    raise _RowError(f"{where(index, column)}: label {label!r} is not one of the given names {label_names[task]}")
            record[task] = (labels or None) if column in multi_label_columns else (labels[0] if labels else None)
        return record

    records, skipped = [], []
    seen_ids: dict[str, int] = {}
    for index, row in enumerate(source.rows):
        try:
            record = record_of(index, row)
        except _RowError as error:
            if on_error == "raise":
                raise TableFormatError(str(error)) from None
            skipped.append((source.lines[index], str(error)))
            if len(skipped) <= SKIPPED_ROWS_LOGGED:  # the rest are in LabelledTable.skipped (and the recipes' reports)
                logger.warning("skipped: %s", error)
            continue
        if record["doc_id"] in seen_ids:
            raise TableFormatError(
                f"{where(index, id_column)}: duplicate id {record['doc_id']!r} (first at {source.unit} {source.lines[seen_ids[record['doc_id']]]})"
            )
        seen_ids[record["doc_id"]] = index
        records.append(record)
    if skipped:
        total = len(source.rows)
        if not records or len(skipped) > max_skipped_fraction * total:
            share = "all" if not records else f"more than {max_skipped_fraction:.0%}"
            raise TableFormatError(f"{source.origin}: {len(skipped)} of {total} rows are malformed ({share}); the first: "
                                   + " | ".join(reason for _, reason in skipped[:3]))
        logger.warning("%s: skipped %d of %d rows (on_error='skip')%s", source.origin, len(skipped), total,
                       f"; the first {SKIPPED_ROWS_LOGGED} are logged above" if len(skipped) > SKIPPED_ROWS_LOGGED else "")
    return _assemble(records, skipped, source.origin, label_map, label_names, multi_label_columns)


def _assemble(records, skipped, origin, label_map, label_names, multi_label_columns) -> LabelledTable:
    tasks, counts = [], {"_table": {"rows": len(records), "skipped": len(skipped)}}
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
    return LabelledTable(examples=examples, tasks=tasks, counts=counts, skipped=skipped)
