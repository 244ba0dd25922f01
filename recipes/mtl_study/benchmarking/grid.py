"""Benchmark section "grid": wall time of the main job's grid (architecture comparison: stl, mtl and mtl_adapters
runs for each seed, on the synthetic corpus and the benchmark's backbone) as Ray tasks on a local 2-worker Ray
(``--launcher ray``, one CPU and one torch thread per worker) vs run sequentially in this process, twice: with one
torch thread (``--cpu_threads 1``: each run gets what a Ray worker gets, so the figure is what running runs side
by side buys; figure ``grid_speedup_ray_2_workers``) and with every core (the study's default: what Ray adds on top
of intra-op threads on this machine; figure ``grid_speedup_ray_2_workers_vs_all_cores``). On 2 cores the second
cannot go far above 1: a run with one thread takes about 1.6 times as long as with two.

All launches must write the same results rows (:func:`mtl_study.launchers.measure_grid_speedup` raises when
they differ). The runs are capped at ``grid_max_steps`` steps (validation every 8 steps, early stopping as in the
main job) so that the section fits a benchmark; the Ray time includes starting Ray and its workers, as a user
pays them.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from ..config import parse_recipe_args
from ..launchers import LauncherArguments, measure_grid_speedup
from ..study import Study
from .core import Benchmark
from .figures import Figure


def _grid_runner(bench: Benchmark):
    from transformers import AutoConfig

    from ..config import ModelArguments

    args = bench.args
    # the main job's frozen layers, or all but the top one on a shallower backbone (the tests' tiny one)
    layers = AutoConfig.from_pretrained(args.backbone).num_hidden_layers
    frozen = min(ModelArguments.__dataclass_fields__["num_frozen_layers"].default, layers - 1)

    def run_grid(output_dir: Path, launcher: LauncherArguments, cpu_threads: int | None = None):
        argv = ["--model_name_or_path", args.backbone, "--output_dir", str(output_dir),
                "--seeds", *[str(seed) for seed in range(args.grid_seeds)], "--max_steps", str(args.grid_max_steps),
                "--save_best_model", "false", "--num_frozen_layers", str(frozen), "--launcher", launcher.launcher,
                "--ray_cpus_per_run", str(launcher.ray_cpus_per_run)]
        if launcher.ray_num_workers:
            argv += ["--ray_num_workers", str(launcher.ray_num_workers)]
        if cpu_threads is not None:
            argv += ["--cpu_threads", str(cpu_threads)]
        experiment, training, model = parse_recipe_args("architecture_comparison", argv)
        study = Study(experiment, training, model, "architecture_comparison", "grid benchmark", "grid benchmark")
        return study.run(study.architecture_specs(study.task_names()))

    return run_grid


def run_grid(bench: Benchmark) -> None:
    import torch

    threads = torch.get_num_threads()  # the sequential study uses every core (--cpu_threads): restore for later sections
    try:
        with tempfile.TemporaryDirectory(prefix="grid_benchmark_") as workdir:
            result = measure_grid_speedup(_grid_runner(bench), workdir, num_workers=2)
    finally:
        torch.set_num_threads(threads)
    runs = (f"Main job's grid ({result['runs']} runs: stl, mtl, mtl_adapters x {bench.args.grid_seeds} seeds, "
            f"<= {bench.args.grid_max_steps} steps each), wall time")
    detail = {**result, "same_rows": result["max_abs_difference"] == 0.0}
    bench.figures.append(Figure(
        "grid_speedup_ray_2_workers", f"{runs}: sequential vs Ray, one torch thread per run in both",
        result["ray_seconds"], result["sequential_1_thread_seconds"], "s", result["grid_speedup_ray_2_workers"],
        "x faster", detail=detail))
    bench.figures.append(Figure(
        "grid_speedup_ray_2_workers_vs_all_cores", f"{runs}: sequential with every core vs Ray, 2 x 1 thread",
        result["ray_seconds"], result["sequential_seconds"], "s", result["grid_speedup_ray_2_workers_vs_all_cores"],
        "x faster", detail=detail))
