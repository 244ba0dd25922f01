"""The experiment runner: a grid of runs (arms x seeds x the recipe's conditions) executed one after
another inside one process group (``accelerate launch``), resumable and crash-safe.

* A run is identified by its ``run_id``; it is *finished* when its complete block of rows is in
  ``<output_dir>/results.jsonl`` (see :mod:`.results`). Relaunching skips finished runs.
* An unfinished run resumes from the last checkpoint in ``<output_dir>/runs/<run_id>/checkpoints``.
* Only the main process writes; every process takes the same skip decisions (they read the results
  file after a barrier, before any run of this launch is appended).
* The best run of each arm (by mean primary metric) is kept under ``<output_dir>/best/<arm>`` — the
  folder is swapped in atomically so a crash never leaves a half-saved "best" model.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

from .results import ResultsStore, atomic_write_json

logger = logging.getLogger(__name__)


@dataclass
class RunSpec:
    """One training run of the grid.

    Args:
        arm: the arm's name in the results (``stl``, ``mtl``, ``mtl_adapters`` or a recipe's own arm).
        seed: the run's seed.
        tasks: the tasks this run trains (one for a single-task run).
        sharing: ``"stl"`` (no sharing), ``"hard"`` or ``"adapters"``.
        condition: extra fields copied into every results row (``train_domain``, granularities, ...).
        tag: distinguishes runs of the same arm and seed (e.g. the task of a single-task run).
        best_key: runs with the same key compete for the "best model" slot (default: arm[/tag]).
    """

    arm: str
    seed: int
    tasks: list[str]
    sharing: str = "hard"
    condition: dict = field(default_factory=dict)
    tag: str = ""
    best_key: str | None = None

    @property
    def run_id(self) -> str:
        return "__".join(p for p in (self.arm, self.tag, f"seed{self.seed}") if p)

    @property
    def model_key(self) -> str:
        return self.best_key or "/".join(p for p in (self.arm, self.tag) if p)


@dataclass
class RunOutcome:
    """What a run function returns.

    Args:
        rows: metric rows ``{task, eval_set, metric, value, ...}`` (arm, seed and condition are added).
        log_history: the trainer's log history (for learning curves).
        save_model: called with a folder to save the trained model (+ tokenizer) there, when this run
            becomes its arm's best; None when the run has nothing to save.
        extra: anything else the recipe wants to keep (written to the run's summary JSON).
    """

    rows: list[dict]
    log_history: list[dict] = field(default_factory=list)
    save_model: Callable[[Path], None] | None = None
    extra: dict = field(default_factory=dict)


RunFunction = Callable[[RunSpec, Path, "str | None"], RunOutcome]


def wants_cpu(use_cpu: bool = False) -> bool:
    """Whether the processes of this launch train on CPU: asked for (``--use_cpu``, ``ACCELERATE_USE_CPU``) or
    no accelerator is available."""
    import torch
    from accelerate.utils import parse_flag_from_env

    accelerator = getattr(torch, "accelerator", None)
    has_accelerator = accelerator.is_available() if accelerator is not None else torch.cuda.is_available()
    return bool(use_cpu or parse_flag_from_env("ACCELERATE_USE_CPU") or not has_accelerator)


def distributed_state(use_cpu: bool = False):
    """accelerate's process state (a singleton), initialised for CPU processes when that is what runs.

    The first ``PartialState(...)`` of a process fixes the process group. A bare ``PartialState()`` on a machine
    without an accelerator ignores ``torchrun``'s ``LOCAL_RANK`` / ``WORLD_SIZE`` and reports a single process,
    so each of the processes of ``accelerate launch --num_processes 2`` would train alone and all would write
    the results. Hence ``cpu=True`` (gloo, ``MULTI_CPU``) whenever :func:`wants_cpu`. (The trainer's
    ``TrainingArguments`` re-create this state: they must get ``use_cpu=wants_cpu(...)`` too.)
    """
    from accelerate import PartialState

    return PartialState(cpu=wants_cpu(use_cpu))


def last_checkpoint(folder: Path) -> str | None:
    """The newest complete ``checkpoint-<step>`` folder under ``folder`` (None when there is none).

    A checkpoint counts as complete when its ``trainer_state.json`` exists: the trainer writes that last,
    so a checkpoint cut short by a kill is ignored rather than resumed from.
    """
    if not folder.is_dir():
        return None
    candidates = []
    for child in folder.iterdir():
        if child.is_dir() and child.name.startswith("checkpoint-") and child.name.split("-")[-1].isdigit():
            if (child / "trainer_state.json").is_file():
                candidates.append((int(child.name.split("-")[-1]), child))
    return str(max(candidates)[1]) if candidates else None


def _run_score(rows: Sequence[Mapping], metric: str, eval_set: str | None) -> float:
    values = [float(r["value"]) for r in rows if r["metric"] == metric and (eval_set is None or r["eval_set"] == eval_set)]
    return sum(values) / len(values) if values else float("-inf")


class ExperimentRunner:
    """Runs a grid of :class:`RunSpec` with a run function, skipping finished runs.

    Args:
        output_dir: experiment folder (``results.jsonl``, ``runs/``, ``best/``).
        run_function: ``fn(spec, run_dir, resume_from_checkpoint) -> RunOutcome``; it must save resumable
            checkpoints under ``run_dir / "checkpoints"``.
        primary_metric: metric whose mean over tasks picks each arm's best run.
        selection_eval_set: evaluation set used for that choice (None: all).
        keep_checkpoints: keep a finished run's checkpoints (they are only needed to resume).
    """

    def __init__(self, output_dir: str | Path, run_function: RunFunction, primary_metric: str = "macro_f1",
                 selection_eval_set: str | None = None, save_best: bool = True, keep_checkpoints: bool = False):
        self.output_dir = Path(output_dir)
        self.run_function = run_function
        self.primary_metric = primary_metric
        self.selection_eval_set = selection_eval_set
        self.save_best = save_best
        self.keep_checkpoints = keep_checkpoints
        self.store = ResultsStore(self.output_dir / "results.jsonl")

    # -------------------------------------------------------------- distributed helpers
    @staticmethod
    def _state():
        try:
            return distributed_state()
        except Exception:  # pragma: no cover - accelerate is a dependency; this only guards odd setups
            return None

    def _is_main(self) -> bool:
        state = self._state()
        return state is None or state.is_main_process

    def _barrier(self) -> None:
        state = self._state()
        if state is not None and state.num_processes > 1:
            state.wait_for_everyone()

    # -------------------------------------------------------------- paths
    def run_dir(self, spec: RunSpec) -> Path:
        return self.output_dir / "runs" / spec.run_id

    def best_dir(self, spec: RunSpec) -> Path:
        return self.output_dir / "best" / spec.model_key

    def history_of(self, spec: RunSpec) -> list[dict]:
        path = self.run_dir(spec) / "log_history.json"
        return json.loads(path.read_text()) if path.is_file() else []

    # -------------------------------------------------------------- the loop
    def run(self, specs: Sequence[RunSpec]) -> list[dict]:
        """Run every unfinished spec in order; returns all rows of the given specs (old and new)."""
        ids = [s.run_id for s in specs]
        duplicated = sorted({i for i in ids if ids.count(i) > 1})
        if duplicated:
            raise ValueError(f"the grid has duplicated run ids {duplicated}: give those runs distinct tags")
        if self._is_main():
            self.output_dir.mkdir(parents=True, exist_ok=True)
            if self.store.repair():
                logger.warning("%s: dropped a partial block left by an interrupted run; that run will be redone", self.store.path)
        self._barrier()
        finished = self.store.finished_runs()
        todo = [s for s in specs if s.run_id not in finished]
        total = len(specs)
        print(f"[runner] {total} runs in the grid: {total - len(todo)} already finished (skipped), {len(todo)} to run "
              f"-> {self.output_dir}", flush=True)
        started = time.time()
        for index, spec in enumerate(todo, start=1):
            run_dir = self.run_dir(spec)
            resume = last_checkpoint(run_dir / "checkpoints")
            elapsed = time.time() - started
            eta = f", ~{elapsed / (index - 1) * (len(todo) - index + 1):.0f}s left" if index > 1 else ""
            print(f"[runner] run {index}/{len(todo)}: {spec.run_id} (tasks: {', '.join(spec.tasks)})"
                  f"{' resuming from ' + Path(resume).name if resume else ''}{eta}", flush=True)
            t0 = time.time()
            outcome = self.run_function(spec, run_dir, resume)
            rows = [self._complete_row(spec, row) for row in outcome.rows]
            if self._is_main():
                atomic_write_json(run_dir / "log_history.json", outcome.log_history)
                if self.save_best and outcome.save_model is not None:
                    self._maybe_save_best(spec, rows, outcome)
                # The results block goes last: once it is written the run counts as finished.
                self.store.append_run(spec.run_id, rows)
                atomic_write_json(run_dir / "run_summary.json", {
                    "run_id": spec.run_id, "arm": spec.arm, "seed": spec.seed, "tasks": spec.tasks,
                    "condition": spec.condition, "seconds": round(time.time() - t0, 2), "resumed_from": resume,
                    "extra": outcome.extra,
                })
                if not self.keep_checkpoints:
                    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
            self._barrier()
            score = _run_score(rows, self.primary_metric, self.selection_eval_set)
            print(f"[runner]   done in {time.time() - t0:.1f}s: mean {self.primary_metric} = {score:.3f}", flush=True)
        wanted = set(ids)
        return [r for r in self.store.rows() if r["run_id"] in wanted]

    @staticmethod
    def _complete_row(spec: RunSpec, row: Mapping) -> dict:
        out = {**spec.condition, **row, "arm": spec.arm, "seed": spec.seed}
        missing = [k for k in ("task", "eval_set", "metric", "value") if k not in out]
        if missing:
            raise ValueError(f"run {spec.run_id!r} returned a row without {missing}: {dict(row)}")
        out["value"] = float(out["value"])
        return out

    def _maybe_save_best(self, spec: RunSpec, rows: Sequence[Mapping], outcome: RunOutcome) -> None:
        """Save this run's model as its arm's best when it beats the current best (atomic folder swap)."""
        target = self.best_dir(spec)
        old = target.with_name(f".{target.name}.old")
        if not target.exists() and old.exists():  # a crash mid-swap: the previous best is intact in .old
            os.replace(old, target)
        score = _run_score(rows, self.primary_metric, self.selection_eval_set)
        info_path = target / "best_run.json"
        if info_path.is_file():
            current = json.loads(info_path.read_text())
            if current.get("score", float("-inf")) >= score:
                return
        staging = target.with_name(f".{target.name}.staging")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        outcome.save_model(staging)
        atomic_write_json(staging / "best_run.json", {
            "run_id": spec.run_id, "arm": spec.arm, "seed": spec.seed, "tasks": spec.tasks,
            "score": score, "metric": self.primary_metric, "condition": spec.condition,
        })
        shutil.rmtree(old, ignore_errors=True)
        if target.exists():
            os.replace(target, old)
        os.replace(staging, target)
        shutil.rmtree(old, ignore_errors=True)


def best_models(output_dir: str | Path) -> list[tuple[Path, dict]]:
    """Every saved best model under ``<output_dir>/best`` with its ``best_run.json`` info."""
    root = Path(output_dir) / "best"
    return sorted(((p.parent, json.loads(p.read_text())) for p in root.rglob("best_run.json")
                   if not any(part.startswith(".") for part in p.relative_to(root).parts)), key=lambda x: str(x[0]))
