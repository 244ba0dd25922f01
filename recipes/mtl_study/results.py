"""The results file of an experiment: ``<output_dir>/results.jsonl``, one JSON row per run x task x
evaluation set x metric, written so that a crash never loses, duplicates or half-writes a row.

Protocol (why each step exists):

* All rows of one run are appended as **one block with a single ``write`` + ``fsync``** on a file opened
  with ``O_APPEND``; each row carries ``run_id`` and ``rows_in_run``. A run counts as finished only when
  all ``rows_in_run`` rows of its block are present, so a block cut short by a kill is recognisable.
* On opening, :meth:`ResultsStore.repair` drops a trailing partial line and the rows of incomplete
  blocks (by rewriting the file to a temporary file and ``os.replace``-ing it, which is atomic), so a
  relaunch re-runs that run and appends a fresh, complete block: nothing is lost or duplicated.
* Every other file the experiment writes (summaries, reports) goes through :func:`atomic_write_text`.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter, defaultdict
from pathlib import Path
from typing import Iterable, Mapping

REQUIRED_FIELDS = ("arm", "seed", "task", "eval_set", "metric", "value")


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same folder + fsync + ``os.replace``.

    Readers see either the old content or the new one, never a half-written file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


class ResultsStore:
    """Append-only, crash-safe ``results.jsonl``.

    Args:
        path: the JSONL file (created on first append).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    # ------------------------------------------------------------------ reading
    def _parse(self) -> tuple[list[dict], bool]:
        """(rows that parse, whether anything had to be dropped)."""
        if not self.path.exists():
            return [], False
        raw = self.path.read_text(encoding="utf-8")
        rows, damaged = [], False
        lines = raw.split("\n")
        # A file that does not end with a newline ends with a partial line: a write was cut short.
        if lines and lines[-1] != "":
            damaged = True
        for line_no, line in enumerate(lines[:-1], start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                damaged = True
                continue
            if not isinstance(row, dict) or "run_id" not in row:
                raise ValueError(f"{self.path}:{line_no}: not a results row (a JSON object with 'run_id'): {line[:120]!r}")
            rows.append(row)
        # Drop the rows of blocks that are incomplete (fewer rows than the block announced).
        counts = Counter(r["run_id"] for r in rows)
        complete = [r for r in rows if counts[r["run_id"]] == int(r.get("rows_in_run", counts[r["run_id"]]))]
        if len(complete) != len(rows):
            damaged = True
        return complete, damaged

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
    def repair(self) -> bool:
        """Drop partial lines and incomplete blocks left by a crash; True when the file changed."""
        rows, damaged = self._parse()
        if damaged:
            atomic_write_text(self.path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
        return damaged

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
