"""The performance benchmark of ``recipes/benchmark.py``: what one shared encoder with K heads saves against
the usual single-task recipes, measured side by side on the same backbone and inputs.

Modules: :mod:`.arguments` (options), :mod:`.sections` (the registry of sections and :func:`run_benchmark`;
its docstring says how to add a section), :mod:`.core` (the :class:`Benchmark` context), one module per
section (:mod:`.inference`, :mod:`.training`, :mod:`.entity`, :mod:`.export`, :mod:`.frozen_cache`),
:mod:`.probes` (timing, memory, machine), :mod:`.inputs` (synthetic inputs) and :mod:`.figures` (targets, table, JSON).
"""

import os

# Idle OpenMP threads spin by default. On a machine shared with other jobs (or with more runnable threads
# than cores) that spinning steals the cores the working threads need: on 2 shared cores it inflated step
# times, wall-clock and CPU alike, 2-5x and at random. Waiting threads sleep instead (set before torch loads
# OpenMP; an explicit OMP_WAIT_POLICY in the environment wins).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .arguments import BenchmarkArguments  # noqa: E402
from .core import Benchmark  # noqa: E402
from .figures import TARGETS, Figure, figures_to_json, format_table  # noqa: E402
from .sections import SECTIONS, BenchmarkRun, Section, run_benchmark  # noqa: E402

__all__ = [
    "SECTIONS",
    "TARGETS",
    "Benchmark",
    "BenchmarkArguments",
    "BenchmarkRun",
    "Figure",
    "Section",
    "figures_to_json",
    "format_table",
    "run_benchmark",
]
