"""How the runs of a grid are executed: one after another in this process group (``sequential``) or as Ray
tasks on a local or existing Ray cluster (``ray``).

A launcher only executes runs; :class:`~mtl_study.runner.ExperimentRunner` (the *driver*) decides what to run,
retries failures, and is the only writer of ``results.jsonl`` and ``best/``. A run executed by a Ray worker
writes its checkpoints and its trained model under its run folder, ``<output_dir>/runs/<run_id>``: **the output
folder must therefore be reachable under the same path from every worker** — a local cluster shares the
driver's disk; on a multi-machine cluster use a shared file system (NFS, a mounted bucket, cluster storage).

The run function is shipped to the workers with cloudpickle (Ray's serialiser): a closure over a recipe's
``Study`` carries its datasets and tokenizer. Modules it references by name (``mtl_study``, ``modeling``, ...)
must be importable on the workers, i.e. the project installed in the workers' environment.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import sys
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Mapping, Sequence

if TYPE_CHECKING:  # the runner imports this module: a runtime import would be circular
    from .runner import RunFunction, RunOutcome, RunSpec

logger = logging.getLogger(__name__)

LAUNCHERS = ("sequential", "ray")
RAY_EXTRA_HINT = 'install it with `pip install -e ".[ray]"` (the project\'s `ray` extra)'


@dataclass
class LauncherArguments:
    """How the runs of a grid are executed (``--launcher`` and the ``--ray_*`` options)."""

    launcher: str = field(default="sequential", metadata={"help": (
        "'sequential': the pending runs one after another in this process (group); a failing run stops the launch "
        "(relaunch to resume). 'ray': every pending run is a Ray task; a failing run is retried --ray_max_retries "
        "times, then reported as failed while the other runs go on. The output folder must be reachable from "
        "every Ray worker (shared file system).")})
    ray_address: str | None = field(default=None, metadata={"help": (
        "Address of an existing Ray cluster ('auto' on a cluster node, 'ray://head:10001' from outside, which needs "
        "`pip install \"ray[client]\"`). Default: the RAY_ADDRESS environment variable, else a local Ray started "
        "for this launch (and stopped at its end).")})
    ray_cpus_per_run: float = field(default=1, metadata={"help": (
        "CPUs reserved by each run (Ray num_cpus); the run's torch uses that many threads (at least 1).")})
    ray_gpus_per_run: float = field(default=0, metadata={"help": "GPUs reserved by each run (Ray num_gpus; 0.5 shares a GPU between two runs)."})
    ray_max_retries: int = field(default=1, metadata={"help": (
        "How many times a failed run (exception or dead worker) is resubmitted, resuming from its last valid "
        "checkpoint, before it is reported as failed.")})
    ray_num_workers: int | None = field(default=None, metadata={"help": (
        "At most this many runs at a time (default: as many as the cluster's resources allow when the launch "
        "starts). A local Ray started for this launch gets ray_num_workers x ray_cpus_per_run CPUs.")})

    def __post_init__(self):
        if self.launcher not in LAUNCHERS:
            raise ValueError(f"--launcher {self.launcher!r}: choose one of {list(LAUNCHERS)}")
        if self.ray_cpus_per_run <= 0 or self.ray_gpus_per_run < 0:
            raise ValueError(f"--ray_cpus_per_run must be > 0 and --ray_gpus_per_run >= 0, got "
                             f"{self.ray_cpus_per_run} and {self.ray_gpus_per_run}")
        if self.ray_max_retries < 0:
            raise ValueError(f"--ray_max_retries must be >= 0, got {self.ray_max_retries}")
        if self.ray_num_workers is not None and self.ray_num_workers < 1:
            raise ValueError(f"--ray_num_workers must be >= 1, got {self.ray_num_workers}")


@dataclass
class RunTask:
    """One attempt at one run: what the launcher executes."""

    spec: "RunSpec"
    run_dir: Path
    resume: str | None
    attempt: int = 1
    started: float = 0.0  # when the driver handed it to the launcher (time.time())


class SequentialLauncher:
    """Runs the tasks one after another in this process; an exception propagates (the launch stops, every
    process of an ``accelerate launch`` group takes the same path, and a relaunch resumes)."""

    max_retries = 0

    def __init__(self):
        self._queue: deque[RunTask] = deque()

    def start(self) -> None:
        """Nothing to start: the runs execute in this process."""

    def open(self, run_function: RunFunction, on_start: Callable[[RunTask], None]) -> None:
        self._run_function, self._on_start = run_function, on_start

    def submit(self, *tasks: RunTask) -> None:
        self._queue.extend(tasks)

    def __len__(self) -> int:
        return len(self._queue)

    def next_done(self) -> tuple[RunTask, "RunOutcome | BaseException"]:
        task = self._queue.popleft()
        self._on_start(task)
        try:
            return task, self._run_function(task.spec, task.run_dir, task.resume)
        finally:
            release_run_memory()

    def close(self) -> None:
        self._queue.clear()


def import_ray():
    """``ray``, or an ImportError naming the extra that installs it."""
    try:
        import ray
    except ImportError as error:
        raise ImportError(f"--launcher ray needs the `ray` package, which is not installed: {RAY_EXTRA_HINT}") from error
    return ray


def console_settings() -> dict:
    """The driver's transformers / datasets verbosity and progress bars (a recipe quiets them), to apply in workers."""
    settings = {}
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        settings["transformers"] = (hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled())
    if "datasets" in sys.modules:
        import datasets

        settings["datasets"] = (datasets.logging.get_verbosity(), datasets.is_progress_bar_enabled())
    return settings


def apply_console_settings(settings: dict) -> None:
    if "transformers" in settings:
        from transformers.utils import logging as hf_logging

        verbosity, bars = settings["transformers"]
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar() if bars else hf_logging.disable_progress_bar()
    if "datasets" in settings:
        import datasets

        verbosity, bars = settings["datasets"]
        datasets.logging.set_verbosity(verbosity)
        datasets.enable_progress_bars() if bars else datasets.disable_progress_bars()


def execute_run(run_function: RunFunction, task: RunTask, cpus_per_run: float) -> "RunOutcome":
    """Body of a run's Ray task (in a worker process): torch gets the run's CPUs as threads, then the run."""
    import torch

    # Without this a worker's torch uses every core of the machine, and N concurrent runs oversubscribe it.
    torch.set_num_threads(max(1, int(cpus_per_run)))
    output_dir = task.run_dir.parent.parent
    if not output_dir.is_dir():
        raise FileNotFoundError(f"the output folder {output_dir} is not visible on Ray worker {socket.gethostname()}: "
                                "it must be on a file system shared by the driver and every worker")
    try:
        return run_function(task.spec, task.run_dir, task.resume)
    finally:
        release_run_memory()  # Ray re-uses worker processes for later runs


def release_run_memory() -> None:
    """Free a finished run's model, optimizer and caches before the next run starts in this process: a trainer
    lives in reference cycles (its callbacks point back at it), so without a collection each run's weights and
    optimizer state stay on the device until the collector happens to run."""
    from accelerate.utils.memory import clear_device_cache

    clear_device_cache(garbage_collection=True)


def ray_task_options(args: LauncherArguments) -> dict:
    """``ray.remote`` options of a run's task.

    - GPU runs get ``max_calls=1`` (a fresh worker per run): a reused worker keeps its CUDA context on the GPU of its
      first run whatever Ray assigns next. Given at ``ray.remote`` time, as ``.options()`` drops ``max_calls``.
    - CPU runs see no GPU (``CUDA_VISIBLE_DEVICES=""`` in their worker's environment): Ray no longer hides the GPUs
      from tasks that reserve none, so on a GPU machine every CPU run would otherwise train on cuda:0, unreserved.
    - Ray's own retries are off: the driver resubmits a failed run so that it resumes from its last checkpoint.
    """
    options = {"num_cpus": args.ray_cpus_per_run, "num_gpus": args.ray_gpus_per_run, "max_retries": 0}
    if args.ray_gpus_per_run:
        options["max_calls"] = 1
    else:
        options["runtime_env"] = {"env_vars": {"CUDA_VISIBLE_DEVICES": ""}}
    return options


class RayLauncher:
    """Submits every task as a Ray task (``num_cpus`` / ``num_gpus`` per run) and returns them as they finish.

    Failures come back as exceptions (the driver retries them): the run function raising, or the worker process
    dying (``ray.exceptions.WorkerCrashedError``). Ray's own task retries are off so that a retry resumes from
    the checkpoint the failed attempt left, which the driver picks.
    """

    def __init__(self, args: LauncherArguments):
        self.args = args
        self.max_retries = args.ray_max_retries
        self._ray = import_ray()
        self._started_ray = False
        self._waiting: deque[RunTask] = deque()
        self._in_flight: dict = {}  # ObjectRef -> RunTask
        self._seconds_by_arm: dict[str, list[float]] = {}  # durations of finished runs (for the submission order)
        self._remote = None  # the run's Ray task, once start() has joined a cluster

    def start(self) -> None:
        """Start (or join) the Ray cluster and warm one worker per slot, without waiting for the workers: their
        imports (torch, transformers, this project: several seconds) overlap with the driver's data preparation."""
        ray = self._ray
        address = self.args.ray_address or os.environ.get("RAY_ADDRESS")
        if not ray.is_initialized():
            local_cpus = None
            if address is None and self.args.ray_num_workers:
                local_cpus = math.ceil(self.args.ray_num_workers * self.args.ray_cpus_per_run)
            # "local": a Ray of this launch's own, even where `ray start` left a cluster that address=None would join
            # (and then refuse num_cpus).
            try:
                ray.init(address=address or "local", num_cpus=local_cpus, include_dashboard=False,
                         logging_level=logging.WARNING)
            except ConnectionError as error:
                raise ConnectionError(
                    f"--ray_address {address}: cannot join that Ray cluster ({error}). Check the address (`ray status` "
                    "on the head node) and, where the cluster uses token authentication (Ray >= 2.52), that this "
                    "driver runs with the same RAY_AUTH_MODE and token (RAY_AUTH_TOKEN or ~/.ray/auth_token)") from error
            self._started_ray = True
        resources = ray.cluster_resources()
        if resources.get("CPU", 0) < self.args.ray_cpus_per_run or resources.get("GPU", 0) < self.args.ray_gpus_per_run:
            message = (f"a run asks for {self.args.ray_cpus_per_run} CPU / {self.args.ray_gpus_per_run} GPU but the "
                       f"Ray cluster has {resources.get('CPU', 0)} CPU / {resources.get('GPU', 0)} GPU in all")
            if address is None:
                raise ValueError(message + ": no run could ever be scheduled")
            # An existing cluster may scale up on demand (KubeRay heads have 0 CPUs; GPU workers may be at zero).
            logger.warning("%s now: runs wait until the cluster scales up, %s", message,
                           "then run --ray_num_workers at a time" if self.args.ray_num_workers else
                           "one at a time (the limit comes from the resources at the start: pass --ray_num_workers)")
        logger.info("Ray cluster: %s", resources)
        # Submitted only as slots free up, so that a run's start line and its time mean it started (not queued).
        fits = resources.get("CPU", 0) // self.args.ray_cpus_per_run
        if self.args.ray_gpus_per_run:
            fits = min(fits, resources.get("GPU", 0) // self.args.ray_gpus_per_run)
        self._limit = self.args.ray_num_workers or max(1, int(fits))
        options = ray_task_options(self.args)
        self._remote = ray.remote(**options)(mtl_run)
        if not self.args.ray_gpus_per_run:
            # Ray hands later tasks of the same shape to these (now idle, imported) worker processes; nothing waits
            # for them (a task runs whether or not its result is kept). GPU workers serve one run each: no warm-up.
            warm = ray.remote(**options)(warm_worker)
            for _ in range(self._limit):
                warm.remote()

    def open(self, run_function: RunFunction, on_start: Callable[[RunTask], None]) -> None:
        """Ship the run function (pickled now, after the driver's preparation, so that what it prepared travels
        with it) to the cluster, once for all runs."""
        if self._remote is None:
            self.start()
        try:  # fail before the first run, with the culprit named, rather than at the first submission
            self._function_ref = self._ray.put(run_function)  # shipped once, not once per run
        except Exception as error:
            raise TypeError(f"the run function {run_function!r} cannot be shipped to Ray workers (cloudpickle): "
                            f"{type(error).__name__}: {error}") from error
        self._function_key = uuid.uuid4().hex
        self._console = console_settings()
        self._on_start = on_start

    def submit(self, *tasks: RunTask) -> None:
        """Queue `tasks` and start what free slots allow. Given together, they start longest expected first; given
        one by one, the first ones would take the free slots before the longer ones arrive."""
        self._waiting.extend(tasks)
        self._fill()

    def _expected_seconds(self, task: RunTask) -> float:
        """How long `task` should take: the mean of its arm's finished runs, else a prior (adapters train about
        twice as slowly per step as hard sharing) scaled by the runs seen so far."""
        arm = task.spec.arm
        if self._seconds_by_arm.get(arm):
            return sum(self._seconds_by_arm[arm]) / len(self._seconds_by_arm[arm])
        prior = 2.0 if task.spec.sharing == "adapters" else 1.0
        seen = [s for times in self._seconds_by_arm.values() for s in times]
        return prior * (sum(seen) / len(seen) if seen else 1.0)

    def _fill(self) -> None:
        # Longest expected run first: with N slots the grid then ends with short runs on every worker, not with
        # one long run while the other workers sit idle.
        while self._waiting and len(self._in_flight) < self._limit:
            task = max(self._waiting, key=self._expected_seconds)  # the first of equals: grid order otherwise
            self._waiting.remove(task)
            self._on_start(task)
            # The reference goes in a list so that Ray passes it unresolved: a worker fetches the function only
            # at its first run of this launch (see mtl_run).
            ref = self._remote.remote(self._function_key, [self._function_ref], task, self.args.ray_cpus_per_run,
                                      self._console)
            self._in_flight[ref] = task

    def __len__(self) -> int:
        return len(self._waiting) + len(self._in_flight)

    def next_done(self) -> tuple[RunTask, "RunOutcome | BaseException"]:
        ray = self._ray
        (ref,), _ = ray.wait(list(self._in_flight), num_returns=1)
        task = self._in_flight.pop(ref)
        try:
            result = ray.get(ref)
        except ray.exceptions.RayError as error:
            result = error
        else:
            self._seconds_by_arm.setdefault(task.spec.arm, []).append(time.time() - task.started)
        self._fill()
        return task, result

    def close(self) -> None:
        for ref in self._in_flight:  # an interrupted driver: stop its runs (their checkpoints stay for a relaunch)
            self._ray.cancel(ref, force=True)
        self._in_flight.clear()
        self._waiting.clear()
        if self._started_ray:
            self._ray.shutdown()
            self._started_ray = False


def warm_worker() -> int:
    """A Ray task that imports what every run needs, so that the first run in this worker does not pay for it."""
    import datasets  # noqa: F401
    import peft  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401

    import data_prep  # noqa: F401
    import modeling  # noqa: F401
    from mtl_study import study  # noqa: F401

    return os.getpid()


#: Run functions already unpickled in this worker process, by launch: a worker that executes several runs of
#: a launch unpickles the Study once and keeps its per-process memos (encoded validation sets, ...).
_WORKER_FUNCTIONS: dict[str, RunFunction] = {}


def mtl_run(key: str, function_ref: list, task: RunTask, cpus_per_run: float, console: dict) -> "RunOutcome":
    """The Ray task of one run (Ray prefixes the worker's console lines with this name). ``function_ref`` holds
    the ObjectRef of the run function the driver put in the object store."""
    if key not in _WORKER_FUNCTIONS:
        import ray

        _WORKER_FUNCTIONS.clear()  # a new launch: drop the previous one's Study
        apply_console_settings(console)
        _WORKER_FUNCTIONS[key] = ray.get(function_ref[0])
    return execute_run(_WORKER_FUNCTIONS[key], task, cpus_per_run)


def make_launcher(args: LauncherArguments | None):
    """The launcher ``args`` ask for (sequential when None)."""
    if args is None or args.launcher == "sequential":
        return SequentialLauncher()
    return RayLauncher(args)


def iterate(launcher) -> Iterator[tuple[RunTask, "RunOutcome | BaseException"]]:
    """Every finished task (and its outcome or error) until the launcher has nothing left."""
    while len(launcher):
        yield launcher.next_done()


def measure_grid_speedup(run_grid: Callable[..., Sequence[Mapping]], workdir: str | Path, num_workers: int = 2,
                         atol: float = 0.0) -> dict:
    """Wall time of one grid run with the Ray launcher and ``num_workers`` single-threaded workers vs sequentially,
    the sequential launch once with one torch thread per run (the resources each Ray run gets: the speedup of
    running runs side by side) and once with every core (the study's default ``--cpu_threads``: what Ray adds
    on top of intra-op threads on this machine).

    Args:
        run_grid: ``run_grid(output_dir, launcher_args, cpu_threads=None) -> rows`` runs the grid into a fresh
            ``output_dir`` with that launcher and that many torch threads per sequential process (None: the
            study's default) and returns its results rows.
        workdir: parent of the output folders (``sequential/``, ``sequential_1_thread/``, ``ray/``).
        num_workers: concurrent runs under Ray, one CPU (and one torch thread) each; a local Ray started for the
            measurement gets that many CPUs, and its start-up counts in the Ray time (a user pays it too).
        atol: largest accepted difference between two launches' values of a row (0: identical).

    Returns ``{"grid_speedup_ray_<n>_workers" (vs one thread per run), "grid_speedup_ray_<n>_workers_vs_all_cores",
    "sequential_seconds", "sequential_1_thread_seconds", "ray_seconds", "runs", "rows", "max_abs_difference",
    "num_workers"}``; raises AssertionError when the launches' rows differ (which rows).
    """
    workdir = Path(workdir)
    timings, results, run_counts = {}, {}, {}
    launches = (("sequential_1_thread", LauncherArguments(), 1), ("sequential", LauncherArguments(), None),
                ("ray", LauncherArguments(launcher="ray", ray_cpus_per_run=1, ray_num_workers=num_workers), None))
    for name, args, threads in launches:
        started = time.perf_counter()
        rows = run_grid(workdir / name, args, cpu_threads=threads)
        timings[name] = time.perf_counter() - started
        if getattr(rows, "failed", None):
            raise AssertionError(f"the {name} launch had failed runs: {sorted(rows.failed)}")
        results[name] = {(r["arm"], r["seed"], r["task"], r["eval_set"], r["metric"]): float(r["value"]) for r in rows}
        run_counts[name] = len({r.get("run_id") for r in rows})
    reference = results["sequential"]
    worst_difference = 0.0
    for name in ("sequential_1_thread", "ray"):
        other = results[name]
        if reference.keys() != other.keys():
            raise AssertionError(f"the sequential and {name} launches' rows differ: only sequential "
                                 f"{sorted(reference.keys() - other.keys())[:5]}, only {name} {sorted(other.keys() - reference.keys())[:5]}")
        differences = {key: abs(reference[key] - other[key]) for key in reference}
        worst = max(differences, key=differences.get, default=None)
        if worst is not None and differences[worst] > atol:
            raise AssertionError(f"the sequential and {name} launches' values differ by up to {differences[worst]:.3g} "
                                 f"(> atol {atol}), e.g. {worst}: {reference[worst]} vs {other[worst]}")
        if worst is not None:
            worst_difference = max(worst_difference, differences[worst])
    return {f"grid_speedup_ray_{num_workers}_workers": timings["sequential_1_thread"] / timings["ray"],
            f"grid_speedup_ray_{num_workers}_workers_vs_all_cores": timings["sequential"] / timings["ray"],
            "sequential_seconds": timings["sequential"], "sequential_1_thread_seconds": timings["sequential_1_thread"],
            "ray_seconds": timings["ray"], "runs": run_counts["sequential"], "rows": len(reference),
            "max_abs_difference": worst_difference, "num_workers": num_workers}
