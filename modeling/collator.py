"""`MultiTaskCollator`: encoded (windowed) dataset rows -> one padded `MultiTaskModel` batch.

Input rows follow the encoded-dataset format (see `data_prep.encode_for_model`): `input_ids`, `attention_mask`,
(`token_type_ids`), `document_index`, `example_index`, `window_index`, `mention_spans` (`[[start, end], ...]`
token offsets), `mention_index`, and per task a column `labels.<task>`. Padding is dynamic (to the longest row,
optionally rounded up to `pad_to_multiple_of`) and on the right, which keeps mention token offsets valid.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .configuration_multitask import DOCUMENT, MULTI_LABEL, MultiTaskConfig, TaskSpec, normalize_task
from .vocabulary import IGNORE_INDEX, LABEL_COLUMN_PREFIX as LABEL_PREFIX

#: Column of cached frozen-prefix states (`modeling.frozen_cache`): per row a `[length, H]` float array.
PREFIX_COLUMN = "prefix_hidden_states"


def _mention_spans(row) -> Sequence:
    """A row's mention spans (none when absent); a torch- or numpy-formatted dataset gives an array, whose truth
    value is ambiguous."""
    spans = row.get("mention_spans")
    return [] if spans is None else spans


@dataclass
class MultiTaskCollator:
    """Pad encoded rows and gather mentions and labels into the batch format `MultiTaskModel.forward` takes.

    Args:
        tasks: the model's tasks: a `MultiTaskConfig`, or a list of task dicts / `TaskSpec`s.
        tokenizer: optional; only used for its `pad_token_id`.
        pad_token_id: padding id for `input_ids` (default: the tokenizer's, else 0).
        pad_to_multiple_of: round the padded length up to a multiple of this (tensor-core friendly).

    Output (`dict` of tensors): `input_ids`, `attention_mask` `[B, L]` (long), `token_type_ids` when the rows have
    them, `mention_spans` `[M, 3]` rows `(batch_row, start, end_exclusive)`, `labels` `{task: tensor}` (a task
    whose column is absent from every row is left out; rows lacking it get -100), `document_index`,
    `example_index` `[B]` and `mention_index` `[M]` when the rows carry them, and `prefix_hidden_states`
    `[B, L, H]` (zeros on padded positions, the rows' float dtype) when they carry that column (every row must).
    """

    tasks: Any
    tokenizer: Any = None
    pad_token_id: int | None = None
    pad_to_multiple_of: int | None = None
    _tasks: list[dict] = field(init=False, repr=False)

    def __post_init__(self):
        if isinstance(self.tasks, MultiTaskConfig):
            self._tasks = [dict(task) for task in self.tasks.tasks]
        else:
            if isinstance(self.tasks, (dict, TaskSpec)) or not isinstance(self.tasks, Sequence):
                raise TypeError("MultiTaskCollator(tasks=...): pass a MultiTaskConfig or a list of task dicts")
            self._tasks = [normalize_task(task, position) for position, task in enumerate(self.tasks)]
        if self.pad_token_id is None:
            pad = getattr(self.tokenizer, "pad_token_id", None) if self.tokenizer is not None else None
            self.pad_token_id = pad if pad is not None else 0
        if self.pad_to_multiple_of is not None and self.pad_to_multiple_of < 1:
            raise ValueError(f"pad_to_multiple_of must be >= 1, got {self.pad_to_multiple_of}")

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        if not rows:
            raise ValueError("MultiTaskCollator: got an empty list of rows")
        length = max(len(row["input_ids"]) for row in rows)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of

        def pad(key: str, value: int) -> torch.Tensor:
            return torch.tensor([list(row[key]) + [value] * (length - len(row[key])) for row in rows], dtype=torch.long)

        batch: dict[str, Any] = {"input_ids": pad("input_ids", self.pad_token_id)}
        for row_number, row in enumerate(rows):
            if "attention_mask" not in row:
                row_mask = [1] * len(row["input_ids"])
                rows[row_number] = row = {**row, "attention_mask": row_mask}
            if len(row["attention_mask"]) != len(row["input_ids"]):
                raise ValueError(f"row {row_number}: attention_mask and input_ids differ in length")
        batch["attention_mask"] = pad("attention_mask", 0)
        if all("token_type_ids" in row for row in rows):
            batch["token_type_ids"] = pad("token_type_ids", 0)

        spans, mention_ids = [], []
        for row_number, row in enumerate(rows):
            row_spans = _mention_spans(row)
            for mention_number, span in enumerate(row_spans):
                start, end = int(span[0]), int(span[1])
                if not 0 <= start < end <= len(row["input_ids"]):
                    raise ValueError(
                        f"row {row_number} (example_index={row.get('example_index')}): mention_spans[{mention_number}]"
                        f" = {list(span)} is outside its {len(row['input_ids'])} tokens"
                    )
                spans.append([row_number, start, end])
            if "mention_index" in row:
                if len(row["mention_index"]) != len(row_spans):
                    raise ValueError(
                        f"row {row_number}: mention_index has {len(row['mention_index'])} entries for "
                        f"{len(row_spans)} mention_spans"
                    )
                mention_ids.extend(int(value) for value in row["mention_index"])
        batch["mention_spans"] = torch.tensor(spans, dtype=torch.long).reshape(-1, 3)
        if any("mention_index" in row for row in rows):
            batch["mention_index"] = torch.tensor(mention_ids, dtype=torch.long)
        for key in ("document_index", "example_index"):
            if all(key in row for row in rows):
                batch[key] = torch.tensor([int(row[key]) for row in rows], dtype=torch.long)

        if any(PREFIX_COLUMN in row for row in rows):
            batch[PREFIX_COLUMN] = self._prefix_states(rows, length)

        labels = {}
        for task in self._tasks:
            column = LABEL_PREFIX + task["name"]
            if not any(column in row and row[column] is not None for row in rows):
                continue
            labels[task["name"]] = self._task_labels(task, column, rows)
        batch["labels"] = labels
        return batch

    @staticmethod
    def _prefix_states(rows: Sequence[dict[str, Any]], length: int) -> torch.Tensor:
        """Right-pad each row's `[length, H]` cached states with zeros into one `[B, L, H]` tensor."""
        arrays = []
        for row_number, row in enumerate(rows):
            if row.get(PREFIX_COLUMN) is None:
                raise ValueError(f"row {row_number}: no {PREFIX_COLUMN!r} while other rows of the batch have it")
            array = np.asarray(row[PREFIX_COLUMN])
            hidden = arrays[0].shape[1] if arrays else None
            if array.ndim != 2 or array.shape[0] != len(row["input_ids"]) or hidden not in (None, array.shape[1]):
                raise ValueError(
                    f"row {row_number}: {PREFIX_COLUMN} has shape {list(array.shape)}; expected "
                    f"[{len(row['input_ids'])}, hidden] (one state per token of input_ids, same hidden size in a batch)"
                )
            arrays.append(array if array.dtype in (np.float16, np.float32) else array.astype(np.float32))
        # Rows read from Arrow are read-only arrays: copied into one writable buffer, not wrapped one by one.
        padded = np.zeros((len(rows), length, arrays[0].shape[1]), dtype=np.result_type(*arrays))
        for row_number, array in enumerate(arrays):
            padded[row_number, : array.shape[0]] = array
        return torch.from_numpy(padded)  # float16 storage stays float16: the model casts it

    @staticmethod
    def _task_labels(task: dict, column: str, rows: Sequence[dict]) -> torch.Tensor:
        num_labels = len(task["labels"])
        multi = task["problem_type"] == MULTI_LABEL
        missing_row = [float(IGNORE_INDEX)] * num_labels

        def check_vector(value, where):
            if len(value) != num_labels:
                raise ValueError(f"{where}: expected {num_labels} values (multi-hot), got {len(value)}")
            return [float(v) for v in value]

        if task["level"] == DOCUMENT:
            values = []
            for row_number, row in enumerate(rows):
                value = row.get(column)
                where = f"row {row_number} column {column!r}"
                if multi:
                    values.append(missing_row if value is None else check_vector(value, where))
                else:
                    values.append(IGNORE_INDEX if value is None else int(value))
            return torch.tensor(values, dtype=torch.float32 if multi else torch.long)

        values = []
        for row_number, row in enumerate(rows):
            num_mentions = len(_mention_spans(row))
            value = row.get(column)
            where = f"row {row_number} column {column!r}"
            if value is None:
                value = [None] * num_mentions
            if len(value) != num_mentions:
                raise ValueError(f"{where}: {len(value)} labels for {num_mentions} mention_spans")
            for item in value:
                if multi:
                    values.append(missing_row if item is None else check_vector(item, where))
                else:
                    values.append(IGNORE_INDEX if item is None else int(item))
        if multi:
            return torch.tensor(values, dtype=torch.float32).reshape(-1, num_labels)
        return torch.tensor(values, dtype=torch.long)


__all__ = ["MultiTaskCollator"]
