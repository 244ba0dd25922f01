"""The results file of an experiment: ``<output_dir>/results.jsonl``, one JSON row per run x task x
evaluation set x metric, written so that a crash never loses, duplicates or half-writes a row.

Protocol (why each step exists):

* All rows of one run are appended as **one block with a single ``write`` + ``fsync``** on a file opened
  with ``O_APPEND``; each row carries ``run_id`` and ``rows_in_run``. A run counts as finished only when
  all ``rows_in_run`` rows of its block are present, so a block cut short by a kill is recognisable.
* On opening, :meth:`ResultsStore.repair` drops a trailing partial line and the rows of incomplete
  blocks (by rewriting the file to a temporary file and ``os.replace``-ing it, which is atomic), so a
  relaunch re-runs that run and appends a fresh, complete block: nothing is lost or duplicated.
* A complete line that is not valid UTF-8 cannot come from a torn write (only the last line can be torn):
  reading fails with an error naming the file and line instead of guessing which run it belonged to.
* Every other file the experiment writes (summaries, reports) goes through :func:`atomic_write_text`.
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from data_prep.files import atomic_write_text  # noqa: F401  (re-exported: the recipes' writer of every other file)
from typing import Iterable, Mapping

REQUIRED_FIELDS = ("arm", "seed", "task", "eval_set", "metric", "value")


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


@dataclass(frozen=True)
class RepairReport:
    """What :meth:`ResultsStore.repair` dropped.

    Args:
        dropped_runs: run ids whose incomplete block was dropped (a run cut short while its block was appended).
        dropped_lines: lines removed in all (the rows of those blocks, unparsable lines, a partial last line).
        partial_last_line: the file ended in the middle of a line (its run id may not be readable).
        duplicated_runs: run ids recorded twice in full (two launches into one folder): the first block is kept.
    """

    dropped_runs: list[str] = field(default_factory=list)
    dropped_lines: int = 0
    partial_last_line: bool = False
    duplicated_runs: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.dropped_lines > 0


def _full(block: list[dict]) -> bool:
    """Whether a run's block holds every row it announced (``rows_in_run``); rows written before that field existed
    announce nothing, and are never full (a block of them ends where its run id does)."""
    announced = block[0].get("rows_in_run")
    return announced is not None and len(block) == int(announced)


class ResultsStore:
    """Append-only, crash-safe ``results.jsonl``.

    Args:
        path: the JSONL file (created on first append).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    # ------------------------------------------------------------------ reading
    def _parse(self) -> tuple[list[dict], RepairReport]:
        """(rows of complete blocks, what a repair would drop)."""
        if not self.path.exists():
            return [], RepairReport()
        lines = self.path.read_bytes().split(b"\n")
        rows, dropped_lines, partial_line = [], 0, False
        # A file that does not end with a newline ends with a partial line: a write was cut short (possibly in
        # the middle of a multi-byte character, hence the check on bytes, before decoding).
        if lines and lines[-1] != b"":
            dropped_lines, partial_line = 1, True
        for line_no, raw in enumerate(lines[:-1], start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                # Blocks are written whole, so a torn write only ever leaves the LAST line partial: invalid UTF-8
                # on a complete line is damage from elsewhere (disk, an editor), which no repair should guess at.
                raise ValueError(f"{self.path}:{line_no}: not valid UTF-8 ({error}); fix or delete that line "
                                 "(its run is then redone on the next launch)") from error
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                dropped_lines += 1
                continue
            if not isinstance(row, dict) or "run_id" not in row:
                raise ValueError(f"{self.path}:{line_no}: not a results row (a JSON object with 'run_id'): {line[:120]!r}")
            rows.append(row)
        # A run's rows are one block of consecutive lines. Keep each run's first complete block (as many rows as
        # it announced); drop incomplete blocks, and later copies of a complete one (two launches into one folder).
        blocks: list[list[dict]] = []
        for row in rows:  # a new block at a new run id, or once the current block has all the rows it announced
            current = blocks[-1] if blocks else None
            if current is None or current[0]["run_id"] != row["run_id"] or _full(current):
                blocks.append([row])
            else:
                current.append(row)
        kept: dict[str, list[dict]] = {}
        duplicated: set[str] = set()
        for block in blocks:
            run_id = block[0]["run_id"]
            if "rows_in_run" in block[0] and not _full(block):  # cut short by a crash
                continue
            if run_id in kept:
                duplicated.add(run_id)
            else:
                kept[run_id] = block
        complete = [row for block in kept.values() for row in block]
        dropped_runs = sorted({r["run_id"] for r in rows} - set(kept))
        duplicated = sorted(duplicated)
        report = RepairReport(dropped_runs=dropped_runs, dropped_lines=dropped_lines + len(rows) - len(complete),
                              partial_last_line=partial_line, duplicated_runs=duplicated)
        return complete, report

    def rows(self) -> list[dict]:
        """Every row of every finished run."""
        return self._parse()[0]

    def finished_runs(self) -> set[str]:
        return {r["run_id"] for r in self.rows()}

    def rows_by_run(self) -> dict[str, list[dict]]:
        out: dict[str, list[dict]] = defaultdict(list)
        for row in self.rows():
            out[row["run_id"]].append(row)
        return dict(out)

    # ------------------------------------------------------------------ writing
    def repair(self) -> RepairReport:
        """Drop partial lines and incomplete blocks left by a crash (the report is truthy when the file changed)."""
        rows, report = self._parse()
        if report:
            atomic_write_text(self.path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
        return report

    def append_run(self, run_id: str, rows: Iterable[Mapping]) -> int:
        """Append all rows of one finished run as one block; refuses a run that is already recorded."""
        rows = [dict(r) for r in rows]
        if not rows:
            raise ValueError(f"run {run_id!r} produced no results rows: nothing to append to {self.path}")
        for i, row in enumerate(rows):
            missing = [f for f in REQUIRED_FIELDS if f not in row]
            if missing:
                raise ValueError(f"results row {i} of run {run_id!r} lacks field(s) {missing}: {row}")
        keys = Counter((r["task"], r["eval_set"], r["metric"]) for r in rows)
        duplicated = [k for k, c in keys.items() if c > 1]
        if duplicated:
            raise ValueError(f"run {run_id!r} has duplicate (task, eval_set, metric) rows: {duplicated}")
        self.repair()
        if run_id in self.finished_runs():
            raise ValueError(f"run {run_id!r} is already recorded in {self.path}: refusing to duplicate its rows")
        for row in rows:
            row["run_id"] = run_id
            row["rows_in_run"] = len(rows)
        block = "".join(json.dumps(r, sort_keys=True, default=float) + "\n" for r in rows).encode("utf-8")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            written = 0
            while written < len(block):  # os.write may write less than asked
                written += os.write(fd, block[written:])
            os.fsync(fd)
        finally:
            os.close(fd)
        return len(rows)
