"""The Ray launcher on a 2-worker local cluster: same rows as sequential, relaunch, dead workers, failing runs,
Ray missing, and a real Study's run function shipped to a worker."""

import json
import os
import sys
from pathlib import Path

import pytest

from conftest import REPO_ROOT
from mtl_study.launchers import LauncherArguments, measure_grid_speedup
from mtl_study.results import ResultsStore
from mtl_study.runner import ExperimentRunner, RunOutcome, RunSpec, best_models, run_model_dir


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    # The workers import this checkout (not another installed copy) and this test module by value (it is not
    # importable from a worker's sys.path).
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING",
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(REPO_ROOT / "recipes")])}})
    yield ray
    ray.shutdown()
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def grid(seeds=(0, 1)):
    specs = []
    for seed in seeds:
        specs += [RunSpec("stl", seed, ["a"], sharing="stl", tag="a"), RunSpec("stl", seed, ["b"], sharing="stl", tag="b"),
                  RunSpec("mtl", seed, ["a", "b"])]
    return specs


def cheap_run(spec, run_dir, resume, die_on=(), fail_on=()):
    """A run that writes a checkpoint and a tiny "model" folder; it kills its worker process on the first attempt
    of the runs in ``die_on`` and raises on every attempt of the runs in ``fail_on``."""
    import torch

    (run_dir / "checkpoints" / "checkpoint-1").mkdir(parents=True, exist_ok=True)
    (run_dir / "checkpoints" / "checkpoint-1" / "trainer_state.json").write_text("{}")
    attempts = run_dir / "attempts.txt"
    attempts.write_text(attempts.read_text() + "x" if attempts.exists() else "x")
    if spec.run_id in die_on and len(attempts.read_text()) == 1:
        os._exit(1)  # the worker process dies mid-run, as under the OOM killer
    if spec.run_id in fail_on:
        raise RuntimeError(f"{spec.run_id} cannot converge")
    model_dir = run_model_dir(run_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "model.txt").write_text(spec.run_id)
    threads = torch.get_num_threads()
    rows = [{"task": t, "eval_set": "test", "metric": m, "value": 0.1 * spec.seed + 0.01 * len(spec.tasks), "threads": threads}
            for t in spec.tasks for m in ("macro_f1", "micro_f1")]
    return RunOutcome(rows=rows, log_history=[{"step": 1}], model_dir=model_dir, extra={"pid": os.getpid()})


def run_of(**options):
    return lambda spec, run_dir, resume: cheap_run(spec, run_dir, resume, **options)


RAY = LauncherArguments(launcher="ray", ray_max_retries=1)


def keyed(rows):
    return {(r["arm"], r["seed"], r["task"], r["eval_set"], r["metric"]): r["value"] for r in rows}


def test_ray_grid_gives_the_rows_and_best_models_of_the_sequential_grid(ray_cluster, tmp_path):
    sequential = ExperimentRunner(tmp_path / "seq", run_of()).run(grid())
    parallel = ExperimentRunner(tmp_path / "ray", run_of(), launcher_args=RAY).run(grid())
    assert keyed(parallel) == keyed(sequential) and len(parallel) == len(sequential) == 16
    assert parallel.failed == {}
    assert {r["threads"] for r in parallel} == {1}  # single-threaded workers
    pids = {json.loads((tmp_path / "ray" / "runs" / s.run_id / "run_summary.json").read_text())["extra"]["pid"] for s in grid()}
    assert os.getpid() not in pids  # the runs executed in worker processes
    assert [(p.name, i["run_id"]) for p, i in best_models(tmp_path / "ray")] == \
        [(p.name, i["run_id"]) for p, i in best_models(tmp_path / "seq")]
    for path, info in best_models(tmp_path / "ray"):
        assert (path / "model.txt").read_text() == info["run_id"]
    # the models of the runs that are not their arm's best are gone, as are finished runs' checkpoints
    assert not list((tmp_path / "ray" / "runs").glob("*/model")) and not list((tmp_path / "ray" / "runs").glob("*/checkpoints"))
    # each run's rows form one contiguous block in results.jsonl
    run_ids = [json.loads(line)["run_id"] for line in (tmp_path / "ray" / "results.jsonl").read_text().splitlines()]
    assert len(set(run_ids)) == 6 and sum(1 for a, b in zip(run_ids, run_ids[1:]) if a != b) == 5


def test_ray_relaunch_skips_finished_runs(ray_cluster, tmp_path):
    ExperimentRunner(tmp_path, run_of(), launcher_args=RAY).run(grid(seeds=(0,)))
    rows = ExperimentRunner(tmp_path, run_of(), launcher_args=RAY).run(grid(seeds=(0, 1)))
    attempts = {s.run_id: (tmp_path / "runs" / s.run_id / "attempts.txt").read_text() for s in grid(seeds=(0, 1))}
    assert set(attempts.values()) == {"x"}  # every run executed exactly once over both launches
    assert len(rows) == 16 and len(keyed(rows)) == 16


def test_a_worker_killed_mid_run_loses_no_other_rows_and_the_run_is_retried(ray_cluster, tmp_path):
    rows = ExperimentRunner(tmp_path, run_of(die_on={"mtl__seed0"}), launcher_args=RAY).run(grid())
    assert rows.failed == {} and len(keyed(rows)) == 16
    summary = json.loads((tmp_path / "runs" / "mtl__seed0" / "run_summary.json").read_text())
    assert summary["attempt"] == 2 and summary["resumed_from"].endswith("checkpoint-1")  # the retry resumed


def test_a_run_failing_every_attempt_is_reported_and_the_others_finish(ray_cluster, tmp_path, capsys):
    rows = ExperimentRunner(tmp_path, run_of(fail_on={"stl__b__seed1"}, die_on={"mtl__seed1"}),
                            launcher_args=LauncherArguments(launcher="ray", ray_max_retries=0)).run(grid())
    assert set(rows.failed) == {"stl__b__seed1", "mtl__seed1"}
    assert "cannot converge" in rows.failed["stl__b__seed1"]
    assert {r["run_id"] for r in rows} == {s.run_id for s in grid()} - set(rows.failed)
    assert "2 run(s) FAILED: mtl__seed1, stl__b__seed1" in capsys.readouterr().out
    assert ResultsStore(tmp_path / "results.jsonl").finished_runs() == {r["run_id"] for r in rows}
    # a relaunch runs exactly the failed ones
    rows = ExperimentRunner(tmp_path, run_of(), launcher_args=RAY).run(grid())
    assert rows.failed == {} and len(keyed(rows)) == 16
    assert (tmp_path / "runs" / "stl__a__seed1" / "attempts.txt").read_text() == "x"


def test_unpicklable_run_function_fails_before_any_run(ray_cluster, tmp_path):
    import threading

    lock = threading.Lock()
    with pytest.raises(TypeError, match="cannot be shipped to Ray workers"):
        ExperimentRunner(tmp_path, lambda spec, run_dir, resume: lock, launcher_args=RAY).run(grid())
    assert not (tmp_path / "results.jsonl").exists()


def test_measure_grid_speedup_compares_identical_rows(ray_cluster, tmp_path):
    threads_asked = []

    def run_grid(output_dir: Path, launcher_args: LauncherArguments, cpu_threads=None):
        threads_asked.append((launcher_args.launcher, cpu_threads))
        return ExperimentRunner(output_dir, run_of(), launcher_args=launcher_args).run(grid(seeds=(0,)))

    figures = measure_grid_speedup(run_grid, tmp_path, num_workers=2)
    assert figures["rows"] == 8 and figures["max_abs_difference"] == 0.0
    assert threads_asked == [("sequential", 1), ("sequential", None), ("ray", None)]
    assert figures["grid_speedup_ray_2_workers"] == pytest.approx(figures["sequential_1_thread_seconds"] / figures["ray_seconds"])
    assert figures["grid_speedup_ray_2_workers_vs_all_cores"] == pytest.approx(
        figures["sequential_seconds"] / figures["ray_seconds"])

    def different_grid(output_dir: Path, launcher_args: LauncherArguments, cpu_threads=None):
        seeds = (0,) if launcher_args.launcher == "sequential" else (1,)
        return ExperimentRunner(output_dir, run_of(), launcher_args=launcher_args).run(grid(seeds=seeds))

    with pytest.raises(AssertionError, match="differ"):
        measure_grid_speedup(different_grid, tmp_path / "again", num_workers=2)


def test_missing_ray_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(ImportError, match=r'pip install -e "\.\[ray\]"'):
        ExperimentRunner(tmp_path, run_of(), launcher_args=RAY).run(grid())
    with pytest.raises(ValueError, match="--launcher 'dask'"):
        LauncherArguments(launcher="dask")


def test_a_study_run_function_can_be_shipped(tiny_backbone_dir, tmp_path):
    """The run function is a closure over the Study (datasets, tokenizer): cloudpickle must carry it."""
    ray = pytest.importorskip("ray")
    from mtl_study.config import parse_recipe_args
    from mtl_study.study import Study

    parsed = parse_recipe_args("architecture_comparison", [
        "--model_name_or_path", tiny_backbone_dir, "--output_dir", str(tmp_path), "--seeds", "0", "--max_steps", "1",
        "--synthetic_num_documents", "12", "--max_length", "32"])
    study = Study(*parsed, "architecture_comparison", "title", "question")
    clone = ray.cloudpickle.loads(ray.cloudpickle.dumps(study.make_run_function()))
    spec = study.architecture_specs(study.task_names(), arms=["mtl"])[0]
    assert clone.__closure__ is not None and callable(clone)
    owner = next(c.cell_contents for c in clone.__closure__ if isinstance(c.cell_contents, Study))
    assert len(owner.data.train) == len(study.data.train) and owner.tokenizer.vocab_size == study.tokenizer.vocab_size
    assert spec.tasks == study.task_names()


@pytest.mark.slow
def test_a_real_study_grid_on_ray_workers(ray_cluster, tiny_backbone_dir, tmp_path):
    """Two real training runs (tiny backbone) as Ray tasks: rows, and the best model moved to best/mtl."""
    from mtl_study.config import parse_recipe_args
    from mtl_study.study import Study

    parsed = parse_recipe_args("architecture_comparison", [
        "--model_name_or_path", tiny_backbone_dir, "--output_dir", str(tmp_path), "--seeds", "0", "1", "--max_steps", "2",
        "--synthetic_num_documents", "24", "--max_length", "64", "--num_frozen_layers", "1", "--save_steps", "1"])
    study = Study(*parsed, "architecture_comparison", "title", "question")
    specs = study.architecture_specs(study.task_names(), arms=["mtl"])
    rows = ExperimentRunner(tmp_path, study.make_run_function(), selection_eval_set="validation",
                            launcher_args=RAY).run(specs)
    assert rows.failed == {} and {r["seed"] for r in rows} == {0, 1}
    ((folder, info),) = best_models(tmp_path)
    assert folder.name == "mtl" and (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file()


def test_the_runner_prepares_only_the_pending_runs_before_the_first_starts(tmp_path):
    calls = []

    def run(spec, run_dir, resume):
        calls.append(("run", spec.run_id))
        return cheap_run(spec, run_dir, resume)

    run.prepare = lambda specs: calls.append(("prepare", [s.run_id for s in specs]))
    ExperimentRunner(tmp_path, run).run(grid(seeds=(0,)))
    assert calls[0] == ("prepare", ["stl__a__seed0", "stl__b__seed0", "mtl__seed0"]) and len(calls) == 4
    calls.clear()
    ExperimentRunner(tmp_path, run).run(grid(seeds=(0, 1)))  # seed 0 finished: only seed 1 is prepared and run
    assert calls[0] == ("prepare", ["stl__a__seed1", "stl__b__seed1", "mtl__seed1"])
    assert [c[1] for c in calls[1:]] == ["stl__a__seed1", "stl__b__seed1", "mtl__seed1"]


def test_ray_submits_the_longest_expected_run_first(monkeypatch):
    """Adapters first before any run finished (prior), then by the observed mean duration of each arm."""
    pytest.importorskip("ray")
    from mtl_study.launchers import RayLauncher, RunTask

    launcher = RayLauncher(LauncherArguments(launcher="ray"))
    started = []
    launcher._limit, launcher._on_start = 1, lambda task: started.append(task.spec.run_id)
    launcher._function_key = launcher._function_ref = launcher._console = None

    class Remote:
        def remote(self, *args):
            return object()

    launcher._remote = Remote()
    specs = [RunSpec("stl", 0, ["a"], sharing="stl", tag="a"), RunSpec("mtl", 0, ["a", "b"]),
             RunSpec("mtl_adapters", 0, ["a", "b"], sharing="adapters"), RunSpec("stl", 1, ["a"], sharing="stl", tag="a")]
    launcher.submit(*(RunTask(spec, Path("."), None) for spec in specs))  # as the runner submits a grid: together
    assert started == ["mtl_adapters__seed0"]  # one by one, the first stl run would have taken the free slot
    launcher._in_flight.clear()
    launcher._seconds_by_arm = {"mtl_adapters": [8.0], "stl": [5.0], "mtl": [3.0]}  # stl measured slower than mtl
    launcher._fill()
    assert started[1] == "stl__a__seed0"
    launcher._in_flight.clear()
    launcher._fill()
    launcher._in_flight.clear()
    launcher._fill()
    assert started[2:] == ["stl__a__seed1", "mtl__seed0"]


def test_study_prepare_encodes_and_caches_the_frozen_prefix_once_before_the_runs(tiny_backbone_dir, tmp_path):
    """After `prepare`, the sets every run uses are memoised and their frozen-prefix cache files exist, so that
    parallel workers neither redo nor race on them."""
    from mtl_study.config import parse_recipe_args
    from mtl_study.study import Study

    parsed = parse_recipe_args("architecture_comparison", [
        "--model_name_or_path", tiny_backbone_dir, "--output_dir", str(tmp_path), "--seeds", "0", "1", "--max_steps", "1",
        "--synthetic_num_documents", "16", "--max_length", "32", "--num_frozen_layers", "1"])
    study = Study(*parsed, "architecture_comparison", "title", "question")
    specs = study.architecture_specs(study.task_names())
    run = study.make_run_function()
    assert not (tmp_path / "cache").exists() and not study._encoded
    run.prepare(specs)
    caches = sorted(p.name for p in (tmp_path / "cache").glob("frozen_prefix_*.arrow"))
    # training sets: one per single task and one multi-task set (shared by mtl and mtl_adapters), plus the
    # validation and test sets encoded for each of those task lists
    assert len(study._encoded) == 9 and len(caches) == 9
    encoded = dict(study._encoded)
    run.prepare(specs)  # nothing new the second time
    assert study._encoded == encoded and sorted(p.name for p in (tmp_path / "cache").glob("frozen_prefix_*.arrow")) == caches


def test_ray_task_options_hide_gpus_from_cpu_runs_and_give_gpu_runs_a_fresh_worker(ray_cluster):
    from mtl_study.launchers import ray_task_options

    cpu = ray_task_options(LauncherArguments(launcher="ray"))
    assert cpu["runtime_env"] == {"env_vars": {"CUDA_VISIBLE_DEVICES": ""}} and "max_calls" not in cpu
    gpu = ray_task_options(LauncherArguments(launcher="ray", ray_gpus_per_run=0.5))
    assert gpu["max_calls"] == 1 and gpu["num_gpus"] == 0.5 and "runtime_env" not in gpu
    # a CPU run's worker sees no GPU, and keeps the job's environment (the PYTHONPATH of this module's cluster)
    probe = ray_cluster.remote(**cpu)(lambda: (os.environ.get("CUDA_VISIBLE_DEVICES"), bool(os.environ.get("PYTHONPATH"))))
    assert ray_cluster.get(probe.remote()) == ("", True)


def test_a_cluster_that_cannot_be_joined_is_named_with_what_to_check(tmp_path, monkeypatch):
    """Ray >= 2.59 starts clusters with token authentication: a driver without the token fails to connect with
    Ray's bare ConnectionError, which says nothing of --ray_address or the token."""
    ray = pytest.importorskip("ray")

    def refuse(*args, **kwargs):
        raise ConnectionError("Failed to connect to Ray cluster at 192.0.2.2:6391")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", refuse)
    arguments = LauncherArguments(launcher="ray", ray_address="192.0.2.2:6391")
    with pytest.raises(ConnectionError, match=r"--ray_address 192.0.2.2:6391: cannot join that Ray cluster .*"
                                              r"RAY_AUTH_MODE"):
        ExperimentRunner(tmp_path, run_of(), launcher_args=arguments).run(grid())
    assert not (tmp_path / "runs" / "mtl__seed0").exists()
