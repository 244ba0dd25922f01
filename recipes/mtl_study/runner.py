"""The experiment runner: a grid of runs (arms x seeds x the recipe's conditions), resumable and crash-safe,
executed by a launcher (:mod:`.launchers`): one after another inside one process group (``accelerate
launch``), or as Ray tasks on a local or existing Ray cluster.

* A run is identified by its ``run_id``; it is *finished* when its complete block of rows is in
  ``<output_dir>/results.jsonl`` (see :mod:`.results`). Relaunching skips finished runs.
* An unfinished run resumes from the last *loadable* checkpoint in ``<output_dir>/runs/<run_id>/checkpoints``
  (see :func:`last_checkpoint`).
* Only the driver (the main process) writes ``results.jsonl`` and ``best/``, each run's rows as one block;
  every process takes the same skip decisions (they read the results file after a barrier, before any run
  of this launch is appended).
* A run function saves its trained model under its run folder (:func:`run_model_dir`) and says so in
  :attr:`RunOutcome.model_dir`; the driver moves the best run of each arm (by mean primary metric, ties to
  the smaller run id, so the choice does not depend on the order runs finish in) to
  ``<output_dir>/best/<arm>`` with an atomic folder swap, so a crash never leaves a half-saved "best" model.
  Under Ray the output folder must be on storage every worker can reach under the same path.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

from .launchers import LauncherArguments, RunTask, iterate, make_launcher
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
        model_dir: the folder where the run saved its trained model (+ tokenizer), normally
            :func:`run_model_dir` of its run folder; the driver moves it to ``best/<arm>`` when the run is its
            arm's best and deletes it otherwise. None when the run saved nothing (``--save_best_model false``).
        extra: anything else the recipe wants to keep (written to the run's summary JSON).

    Everything here crosses processes under Ray (it is pickled): plain data and paths, no trainer or closure.
    """

    rows: list[dict]
    log_history: list[dict] = field(default_factory=list)
    model_dir: str | Path | None = None
    extra: dict = field(default_factory=dict)


def run_model_dir(run_dir: str | Path) -> Path:
    """Where a run function saves its trained model: ``<run_dir>/model``."""
    return Path(run_dir) / "model"


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


def leave_process_group(state=None) -> None:
    """End this process's part in a multi-process launch (no-op for one process): free the finished runs'
    trainers, whose DDP wrappers hold the process group in reference cycles, and destroy the group while the
    interpreter is whole. Left to interpreter exit, gloo's worker threads may need the GIL during finalisation
    and abort the process ("terminate called without an active exception"); torchrun then kills the processes
    still writing the report. Call it after the last collective (the runner's last barrier)."""
    import gc

    state = state if state is not None else distributed_state()
    if state.num_processes > 1:
        gc.collect()
        state.destroy_process_group()


def checkpoint_problem(checkpoint: Path) -> str | None:
    """Why ``checkpoint`` cannot be resumed from (None when it looks loadable), without loading any tensor.

    ``trainer_state.json`` must parse (the trainer writes it last, so a checkpoint cut short by a kill lacks
    it); every ``*.safetensors`` must have a readable header that covers the file (a truncated file fails
    here); every ``torch.save`` file (``*.pt``, ``*.pth``, ``*.bin``) is a zip whose directory sits at its end,
    so a truncated one fails to open as a zip. The loss-weighting state (a few numbers) is read: one written by an
    earlier version cannot be resumed.
    """
    state = checkpoint / "trainer_state.json"
    if not state.is_file():
        return "no trainer_state.json (the save was cut short)"
    try:
        if not isinstance(json.loads(state.read_text(encoding="utf-8")), dict):
            return f"{state.name} is not a JSON object"
    except (ValueError, UnicodeDecodeError) as error:
        return f"{state.name} does not parse: {error}"
    for path in sorted(checkpoint.iterdir()):
        try:
            if path.suffix == ".safetensors":
                from safetensors import safe_open

                with safe_open(str(path), framework="pt") as handle:
                    handle.keys()
            elif path.suffix in (".pt", ".pth", ".bin"):
                zipfile.ZipFile(path).close()
        except Exception as error:  # safetensors raises its own error type; any failure means "not loadable"
            return f"{path.name} is unreadable: {type(error).__name__}: {error}"
    from modeling.loss_weighting import load_weighting_state
    from modeling.trainer import LOSS_WEIGHTING_FILE

    if (checkpoint / LOSS_WEIGHTING_FILE).is_file():
        try:
            load_weighting_state(str(checkpoint / LOSS_WEIGHTING_FILE), "cpu")
        except ValueError as error:
            return str(error)
    return None


def last_checkpoint(folder: Path) -> str | None:
    """The newest loadable ``checkpoint-<step>`` folder under ``folder`` (None when there is none).

    A newer checkpoint that cannot be loaded (:func:`checkpoint_problem`: cut short by a kill, a truncated
    weights file) is skipped with a warning naming it, so the run resumes from the previous complete
    checkpoint, or restarts from scratch, instead of failing on every relaunch.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return None
    candidates = sorted(((int(child.name.split("-")[-1]), child) for child in folder.iterdir()
                         if child.is_dir() and child.name.startswith("checkpoint-") and child.name.split("-")[-1].isdigit()),
                        reverse=True)
    for position, (_, checkpoint) in enumerate(candidates):
        problem = checkpoint_problem(checkpoint)
        if problem is None:
            return str(checkpoint)
        fallback = f"falling back to {candidates[position + 1][1].name}" if position + 1 < len(candidates) else \
            "no older checkpoint: the run restarts from scratch"
        logger.warning("cannot resume from checkpoint %s: %s; %s", checkpoint, problem, fallback)
    return None


def _run_score(rows: Sequence[Mapping], metric: str, eval_set: str | None) -> float:
    values = [float(r["value"]) for r in rows if r["metric"] == metric and (eval_set is None or r["eval_set"] == eval_set)]
    return sum(values) / len(values) if values else float("-inf")


class GridRows(list):
    """The rows :meth:`ExperimentRunner.run` returns (a list), with the runs that failed in this launch.

    Attributes:
        failed: ``{run_id: error}`` of the runs that failed after their retries (only the Ray launcher goes on
            after a failure); their rows are absent, a relaunch runs them again.
    """

    def __init__(self, rows=(), failed: Mapping[str, str] | None = None):
        super().__init__(rows)
        self.failed = dict(failed or {})


class ExperimentRunner:
    """Runs a grid of :class:`RunSpec` with a run function, skipping finished runs.

    Args:
        output_dir: experiment folder (``results.jsonl``, ``runs/``, ``best/``). With the Ray launcher it must be
            reachable under the same path from every worker (a shared file system or cluster storage).
        run_function: ``fn(spec, run_dir, resume_from_checkpoint) -> RunOutcome``; it must save resumable
            checkpoints under ``run_dir / "checkpoints"`` and its trained model under :func:`run_model_dir`.
            With the Ray launcher it is pickled (cloudpickle) and executed in worker processes. When it has a
            ``prepare(specs)`` attribute, the driver calls it with the pending runs before launching them (after
            the launcher started, before the function is pickled): work shared by runs belongs there.
        primary_metric: metric whose mean over tasks picks each arm's best run.
        selection_eval_set: evaluation set used for that choice (None: all).
        save_best: keep each arm's best model under ``best/``.
        keep_checkpoints: keep a finished run's checkpoints (they are only needed to resume).
        launcher_args: how runs are executed (default: sequentially in this process group).
    """

    def __init__(self, output_dir: str | Path, run_function: RunFunction, primary_metric: str = "macro_f1",
                 selection_eval_set: str | None = None, save_best: bool = True, keep_checkpoints: bool = False,
                 launcher_args: LauncherArguments | None = None):
        self.output_dir = Path(output_dir)
        self.run_function = run_function
        self.primary_metric = primary_metric
        self.selection_eval_set = selection_eval_set
        self.save_best = save_best
        self.keep_checkpoints = keep_checkpoints
        self.launcher_args = launcher_args or LauncherArguments()
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

    # -------------------------------------------------------------- before the first run
    def _prepare(self, specs: Sequence[RunSpec]) -> None:
        """Checks that would otherwise fail only after training: distinct run ids, a writable output folder,
        a readable results file (repaired after a crash), a launcher that fits this launch."""
        ids = [s.run_id for s in specs]
        duplicated = sorted({i for i in ids if ids.count(i) > 1})
        if duplicated:
            raise ValueError(f"the grid has duplicated run ids {duplicated}: give those runs distinct tags")
        state = self._state()
        if self.launcher_args.launcher != "sequential" and state is not None and state.num_processes > 1:
            raise ValueError(f"--launcher {self.launcher_args.launcher} runs each run in its own worker: start the "
                             f"driver as ONE process (python recipe.py ...), not with accelerate launch "
                             f"({state.num_processes} processes)")
        if not self._is_main():
            return
        for folder in (self.output_dir, self.output_dir / "runs", self.output_dir / "best"):
            folder.mkdir(parents=True, exist_ok=True)
            try:
                with tempfile.TemporaryFile(dir=folder):
                    pass
            except OSError as error:
                raise PermissionError(f"the output folder {folder} is not writable ({error}): choose another "
                                      "--output_dir before any training starts") from error
        if self.store.path.exists() and not os.access(self.store.path, os.R_OK | os.W_OK):
            raise PermissionError(f"{self.store.path} exists but is not readable and writable")
        repaired = self.store.repair()
        if repaired:
            grid = set(ids)
            redone = [r for r in repaired.dropped_runs if r in grid]
            elsewhere = [r for r in repaired.dropped_runs if r not in grid]
            logger.warning(
                "%s: dropped %d line(s) left by an interrupted write%s: partial block(s) of run(s) %s%s%s", self.store.path,
                repaired.dropped_lines, " (the last line was cut short, its run id unreadable)" if repaired.partial_last_line else "",
                repaired.dropped_runs or "(none whose id was readable)",
                f"; {redone} are in this grid and will be redone in this launch" if redone else "",
                f"; {elsewhere} are not in this grid and will not be redone by it" if elsewhere else "")
            if repaired.duplicated_runs:
                logger.warning("%s: run(s) %s were recorded twice in full (two launches into one folder?): the first "
                               "record of each is kept", self.store.path, repaired.duplicated_runs)

    # -------------------------------------------------------------- the loop
    def run(self, specs: Sequence[RunSpec]) -> GridRows:
        """Run every unfinished spec; returns all rows of the given specs (old and new), with ``.failed``."""
        self._prepare(specs)
        launcher = make_launcher(self.launcher_args)  # before the barrier: a missing `ray` fails every process
        self._barrier()
        finished = self.store.finished_runs()
        todo = [s for s in specs if s.run_id not in finished]
        total = len(specs)
        print(f"[runner] {total} run{'s' if total != 1 else ''} in the grid: {total - len(todo)} already finished (skipped), {len(todo)} to run "
              f"-> {self.output_dir}", flush=True)
        progress = {"started": 0, "done": 0, "t0": time.time()}
        failed: dict[str, str] = {}

        def on_start(task: RunTask) -> None:
            if task.attempt == 1:
                progress["started"] += 1
            elapsed, done = time.time() - progress["t0"], progress["done"]
            eta = f", ~{elapsed / done * (len(todo) - done):.0f}s left" if done else ""
            retry = f" (retry {task.attempt - 1}/{launcher.max_retries})" if task.attempt > 1 else ""
            print(f"[runner] run {progress['started']}/{len(todo)}: {task.spec.run_id}{retry} (tasks: {', '.join(task.spec.tasks)})"
                  f"{' resuming from ' + Path(task.resume).name if task.resume else ''}{eta}", flush=True)
            task.started = time.time()

        try:
            if todo:
                launcher.start()  # Ray: the cluster and its workers come up while the driver prepares the data
                prepare = getattr(self.run_function, "prepare", None)
                if prepare is not None:
                    began = time.time()
                    print(f"[runner] preparing the data of {len(todo)} run(s): encoding, frozen-layer caches "
                          f"(built once, re-used by every run) ...", flush=True)
                    prepare(todo)
                    print(f"[runner] data ready in {time.time() - began:.0f}s", flush=True)
                launcher.open(self.run_function, on_start)
            launcher.submit(*(self._task(spec, attempt=1) for spec in todo))  # together: longest expected first
            for task, outcome in iterate(launcher):
                seconds = time.time() - task.started
                if isinstance(outcome, BaseException):
                    self._failed(task, outcome, launcher, failed)
                    continue
                rows = [self._complete_row(task.spec, row) for row in outcome.rows]
                if self._is_main():
                    self._record(task, rows, outcome, seconds)
                self._barrier()
                progress["done"] += 1
                score = _run_score(rows, self.primary_metric, self.selection_eval_set)
                print(f"[runner]   done {task.spec.run_id} in {seconds:.1f}s: mean {self.primary_metric} = {score:.3f}", flush=True)
        finally:
            launcher.close()
        if failed:
            logger.error("%d run(s) failed after their retries and have no rows: %s; relaunch to run them again",
                         len(failed), sorted(failed))
            print(f"[runner] {len(failed)} run(s) FAILED: {', '.join(sorted(failed))} (relaunch to retry them)", flush=True)
        wanted = {s.run_id for s in specs}
        return GridRows((r for r in self.store.rows() if r["run_id"] in wanted), failed)

    def _task(self, spec: RunSpec, attempt: int) -> RunTask:
        # Absolute: a Ray worker does not share the driver's working directory.
        run_dir = self.run_dir(spec).absolute()
        return RunTask(spec, run_dir, last_checkpoint(run_dir / "checkpoints"), attempt)

    def _failed(self, task: RunTask, error: BaseException, launcher, failed: dict) -> None:
        """A run that raised or whose worker died: resubmit it (resuming) or, out of retries, report it."""
        run_id = task.spec.run_id
        message = f"{type(error).__name__}: {error}".strip()
        if task.attempt <= launcher.max_retries:
            logger.warning("run %s failed (attempt %d), retrying: %s", run_id, task.attempt, message)
            launcher.submit(self._task(task.spec, task.attempt + 1))
            return
        logger.error("run %s failed after %d attempt(s): %s", run_id, task.attempt, message)
        print(f"[runner]   FAILED {run_id} after {task.attempt} attempt(s): {message.splitlines()[0][:300]}", flush=True)
        failed[run_id] = message

    def _record(self, task: RunTask, rows: list[dict], outcome: RunOutcome, seconds: float) -> None:
        """Driver only: log history, summary, best model, then the results block (last: it marks the run finished)."""
        spec, run_dir = task.spec, self.run_dir(task.spec)
        atomic_write_json(run_dir / "log_history.json", outcome.log_history)
        model_dir = Path(outcome.model_dir) if outcome.model_dir is not None else None
        if model_dir is not None and not model_dir.is_dir():
            raise FileNotFoundError(f"run {spec.run_id} reports its model in {model_dir}, which the driver cannot see: "
                                    "the output folder must be shared by the driver and every worker")
        # The summary before the results block: a kill between the two re-runs the run (rewriting its summary),
        # where the other order would leave a finished run without the summary the convergence table reads.
        atomic_write_json(run_dir / "run_summary.json", {
            "run_id": spec.run_id, "arm": spec.arm, "seed": spec.seed, "tasks": spec.tasks,
            "condition": spec.condition, "seconds": round(seconds, 2), "resumed_from": task.resume,
            "attempt": task.attempt, "extra": outcome.extra,
        })
        if self.save_best and model_dir is not None:
            self._maybe_save_best(spec, rows, model_dir)
        self.store.append_run(spec.run_id, rows)
        if model_dir is not None:  # not its arm's best (the best was moved away): one model per run adds up
            shutil.rmtree(model_dir, ignore_errors=True)
        if not self.keep_checkpoints:
            shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)

    @staticmethod
    def _complete_row(spec: RunSpec, row: Mapping) -> dict:
        out = {**spec.condition, **row, "arm": spec.arm, "seed": spec.seed}
        missing = [k for k in ("task", "eval_set", "metric", "value") if k not in out]
        if missing:
            raise ValueError(f"run {spec.run_id!r} returned a row without {missing}: {dict(row)}")
        out["value"] = float(out["value"])
        return out

    def _maybe_save_best(self, spec: RunSpec, rows: Sequence[Mapping], model_dir: Path) -> None:
        """Move this run's model to its arm's best folder when it beats the current best (atomic folder swap).

        Ties go to the smaller run id, so the choice is the same whatever order the runs finish in.
        """
        target = self.best_dir(spec)
        old = target.with_name(f".{target.name}.old")
        if not target.exists() and old.exists():  # a crash mid-swap: the previous best is intact in .old
            os.replace(old, target)
        score = _run_score(rows, self.primary_metric, self.selection_eval_set)
        info_path = target / "best_run.json"
        if info_path.is_file():
            current = json.loads(info_path.read_text())
            current_score = current.get("score", float("-inf"))
            if current_score > score or (current_score == score and current.get("run_id", "") <= spec.run_id):
                return
        staging = target.with_name(f".{target.name}.staging")
        shutil.rmtree(staging, ignore_errors=True)
        staging.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(model_dir), str(staging))  # a rename on one file system; a copy across file systems
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
