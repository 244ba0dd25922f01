"""The benchmark's sections, in the order they run, and :func:`run_benchmark`, which runs the selected ones.

Adding a section (``grid`` below is one: :mod:`.grid`):

1. write ``run_grid(bench: Benchmark) -> None`` in a new module of this package (:mod:`.frozen_cache` is a
   short example); it measures with the helpers of :mod:`.probes` (``interleaved_timings``, ``median``,
   ``time_call``, ``peak_memory_bytes``, ``count_calls``) on inputs from :mod:`.inputs` /
   ``bench.text_generator(seed_offset)`` and appends
   ``Figure(key, label, ours, baseline, unit, ratio, ratio_label, detail)`` to ``bench.figures``;
   sizes it needs become fields of :class:`.arguments.BenchmarkArguments` (with a full/quick preset);
2. register it below: ``Section("grid", run_grid)`` (``all_processes=True`` when every process must take
   part, as in distributed training);
3. give its figure a target in :data:`.figures.TARGETS` (``"grid_speedup_ray_2_workers": (">=", 1.3)``). A
   target whose figure is not measured (its section not run or not written yet) is simply not checked.

``--sections`` then accepts its name, it runs by default, and the table and JSON show its figures.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from .core import Benchmark
from .entity import run_entity
from .export import run_export
from .figures import Figure
from .frozen_cache import run_frozen_cache
from .grid import run_grid
from .inference import run_inference
from .probes import describe_machine
from .training import run_training

if TYPE_CHECKING:
    from .arguments import BenchmarkArguments

logger = logging.getLogger("benchmark")


@dataclass(frozen=True)
class Section:
    name: str
    run: Callable[[Benchmark], None]
    all_processes: bool = False
    """True: every process runs it (the Trainer is distributed); False: a per-process measurement that only
    the main process makes and reports."""


SECTIONS: dict[str, Section] = {
    section.name: section
    for section in (
        Section("inference", run_inference),
        Section("training", run_training, all_processes=True),
        Section("entity", run_entity),
        Section("export", run_export),
        Section("frozen_cache", run_frozen_cache),
        Section("grid", run_grid),
    )
}


@dataclass
class BenchmarkRun:
    """What :func:`run_benchmark` measured (figures on the main process only; empty elsewhere)."""

    figures: list[Figure]
    machine: dict[str, Any]
    runtime_s: float
    section_seconds: dict[str, float] = field(default_factory=dict)


def run_benchmark(args: "BenchmarkArguments", state=None) -> BenchmarkRun:
    """Run the sections named in ``args.sections`` on ``state``'s device (an ``accelerate.PartialState``;
    created when ``None``), processes kept in step between sections."""
    from accelerate import PartialState

    state = state or PartialState()
    start = time.perf_counter()
    bench = Benchmark(args, state.device, state.is_main_process)
    seconds = {}
    for name in args.section_list:
        section = SECTIONS[name]
        if name == "grid" and state.num_processes > 1:
            # The grid launches studies of its own (their runs use the processes' barriers): under a multi-process
            # launch the other processes would wait at another barrier, and the main one hang.
            bench.log("grid: skipped under a multi-process launch (run it with one process)")
            continue
        if section.all_processes or state.is_main_process:
            section_start = time.perf_counter()
            section.run(bench)
            seconds[name] = time.perf_counter() - section_start
            bench.log(f"{name}: done in {seconds[name]:.0f} s")
        state.wait_for_everyone()  # every process enters a distributed section together
    machine = describe_machine(state.device, state.num_processes, bench.bf16)
    return BenchmarkRun(bench.figures, machine, time.perf_counter() - start, seconds)
