"""Reliability of a recipe run as users launch it (issue 6), on tiny settings (tiny random backbone, synthetic
corpus, arm mtl):

* two CPU processes with the shipped accelerate config: trains with batches that lack a task, no
  unused-parameter error, no hang, one results block; the gathered evaluation equals a one-process evaluation
  of the same saved model (slow);
* the same seed and settings twice give identical results rows (slow);
* a real process kill (SIGKILL once a checkpoint exists) then a relaunch resumes from that checkpoint, skips
  nothing it should not and loses or duplicates no results row (slow);
* fast checks that the accelerate config really starts two processes and that the CPU process group is chosen
  when asked.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO_ROOT

RECIPE = REPO_ROOT / "recipes" / "architecture_comparison.py"
ACCELERATE_CONFIG = REPO_ROOT / "recipes" / "accelerate_configs" / "cpu_2_processes.yaml"
TIMING_KEYS = ("train_steps", "train_examples")


def recipe_args(backbone, output_dir, *extra):
    return ["--model_name_or_path", str(backbone), "--output_dir", str(output_dir), "--seeds", "0", "--arms", "mtl",
            "--synthetic_num_documents", "24", "--max_length", "64", "--num_frozen_layers", "1", "--logging_steps", "1",
            "--per_device_eval_batch_size", "8", "--learning_rate", "0.01", *extra, *cpu_option()]


def cpu_option():
    """``--use_cpu`` only where an accelerator exists: a CPU-only machine must pick CPU processes by itself."""
    from mtl_study.runner import wants_cpu

    return [] if wants_cpu() else ["--use_cpu"]


def subprocess_env():
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
            "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def results(output_dir):
    path = Path(output_dir) / "results.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def metric_values(rows, run_id=None):
    return {(r["run_id"], r["task"], r["eval_set"], r["metric"]): r["value"] for r in rows
            if run_id is None or r["run_id"] == run_id}


def assert_no_duplicated_rows(rows):
    keys = [(r["run_id"], r["task"], r["eval_set"], r["metric"]) for r in rows]
    assert len(keys) == len(set(keys)), "a results row is duplicated"
    for run_id in {r["run_id"] for r in rows}:
        block = [r for r in rows if r["run_id"] == run_id]
        assert len(block) == block[0]["rows_in_run"], f"run {run_id}: incomplete block"


# ---------------------------------------------------------------------------------------------- fast checks
def test_shipped_accelerate_config_starts_two_processes_not_the_single_process_launcher():
    """accelerate 1.15 sends MULTI_CPU (and ``--cpu``) to its one-process launcher: the config must use torchrun."""
    from accelerate.commands.config.config_args import load_config_from_file

    try:  # private helper of `accelerate launch`: the same resolution the command does
        from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    except ImportError:  # pragma: no cover - another accelerate version; the slow test still launches it
        pytest.skip("this accelerate version has no accelerate.commands.launch._validate_launch_command")

    config = load_config_from_file(str(ACCELERATE_CONFIG))
    assert config.num_processes == 2 and config.use_cpu
    args = launch_command_parser().parse_args(["--config_file", str(ACCELERATE_CONFIG), str(RECIPE)])
    args, _, _ = _validate_launch_command(args)
    assert args.multi_gpu and not args.cpu, "this config would start ONE process (simple launcher)"
    assert args.num_processes == 2


def test_cpu_process_group_when_asked_or_without_accelerator(monkeypatch, tmp_path):
    """A bare ``PartialState()`` ignores torchrun's WORLD_SIZE on a machine without an accelerator (each process
    would train alone and write the results): the runner and the trainer arguments must both ask for CPU."""
    import torch

    from mtl_study import runner
    from mtl_study.config import parse_recipe_args
    from mtl_study.study import Study

    seen = {}

    class Recorder:
        def __init__(self, cpu=False, **kwargs):
            seen["cpu"] = cpu

    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    monkeypatch.setattr("accelerate.PartialState", Recorder)
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: True)
    assert runner.wants_cpu() is False
    runner.distributed_state(use_cpu=True)
    assert seen["cpu"] is True
    runner.distributed_state()
    assert seen["cpu"] is False
    monkeypatch.setenv("ACCELERATE_USE_CPU", "true")
    assert runner.wants_cpu() is True
    monkeypatch.delenv("ACCELERATE_USE_CPU")
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: False)
    runner.distributed_state()
    assert seen["cpu"] is True
    monkeypatch.undo()

    # the trainer's arguments (which re-create accelerate's state) take the same decision
    study = Study.__new__(Study)
    study.args, study.training, study.model_args = parse_recipe_args("t", ["--model_name_or_path", "unused"])
    spec = runner.RunSpec("mtl", 0, ["a", "b"])
    assert study.training_arguments(spec, tmp_path / "run").use_cpu == runner.wants_cpu(False)


# ---------------------------------------------------------------------------------------------- two processes
@pytest.mark.slow
def test_recipe_on_two_cpu_processes_with_the_shipped_config(tiny_backbone_dir, tmp_path):
    out = tmp_path / "two"
    # batch 1 per process, one full epoch: every training row is a batch of its own, and some lack a task
    run_args = recipe_args(tiny_backbone_dir, out, "--num_train_epochs", "1", "--per_device_train_batch_size", "1",
                           "--save_steps", "4", "--early_stopping_patience", "0")  # the full epoch: steps checked below
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ACCELERATE_CONFIG),
               "--main_process_port", str(free_port()), str(RECIPE), *run_args]
    result = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=420, cwd=REPO_ROOT)  # a hang fails
    console = result.stdout + result.stderr
    assert result.returncode == 0, f"2-process recipe failed:\n{console[-6000:]}"
    assert "unused parameters" not in console.lower() and "find_unused_parameters" not in console
    assert console.count("[runner] 1 run in the grid") == 2, "expected two processes, each taking the same decisions"
    rows = results(out)
    assert_no_duplicated_rows(rows)
    assert {r["run_id"] for r in rows} == {"mtl__seed0"}
    history = json.loads((out / "runs" / "mtl__seed0" / "log_history.json").read_text())
    losses = [entry["loss"] for entry in history if "loss" in entry]
    assert losses and all(loss == loss and abs(loss) != float("inf") for loss in losses)

    from modeling import MultiTaskModel, MultiTaskTrainer
    from mtl_study.config import parse_recipe_args
    from mtl_study.study import Study

    # the run's own settings: the folder holds its run, and a study there with others would be refused
    parsed = parse_recipe_args("architecture_comparison", run_args)
    study = Study(*parsed, "architecture_comparison", "check", "check")
    tasks = study.task_names()
    train = study.encode(study.data.train, tasks)
    lacking = {task: sum(1 for row in train if _unlabelled(row[f"labels.{task}"])) for task in tasks}
    assert any(0 < n < len(train) for n in lacking.values()), f"no training batch lacks a task: {lacking}"
    # 2 processes x batch 1: the trainer ran ceil(rows / 2) steps, i.e. both processes trained
    steps = next(r["train_steps"] for r in rows)
    assert steps == -(-len(train) // 2), (steps, len(train))

    # The evaluation gathered over two processes equals one process evaluating the saved model.
    model = MultiTaskModel.from_pretrained(out / "best" / "mtl")
    import dataclasses

    # the saved model carries the thresholds tuned during the run; no training here, so no validation either
    trainer_args = dataclasses.replace(study.training_arguments(study.architecture_specs(tasks)[0], tmp_path / "single"),
                                       tune_thresholds=False, eval_strategy="no", load_best_model_at_end=False)
    trainer = MultiTaskTrainer(model=model, args=trainer_args, processing_class=study.tokenizer)
    test = study.encode(study.data.test, tasks, key="single-test")
    metrics = trainer.evaluate({"test": test})
    two = {(r["task"], r["metric"]): r["value"] for r in rows if r["eval_set"] == "test"}
    assert two
    from mtl_study.official import OFFICIAL_PREFIX, official_task_metrics

    official = official_task_metrics(model, study.tokenizer, study.data.test)  # predict, in this one process
    assert official
    for (task, metric), value in two.items():
        expected = official[task][metric] if metric.startswith(OFFICIAL_PREFIX) else metrics[f"eval_test_{task}_{metric}"]
        assert expected == pytest.approx(value, abs=1e-6), (task, metric)


def _unlabelled(value) -> bool:
    """A document label of -100 / a row of -100, or a span column without any labelled mention."""
    if isinstance(value, (int, float)):
        return value == -100
    if not value:
        return True
    flat = [v for item in value for v in (item if isinstance(item, list) else [item])]
    return all(v == -100 for v in flat)


# ---------------------------------------------------------------------------------------------- determinism
@pytest.mark.slow
def test_same_seed_and_settings_give_identical_results(tiny_backbone_dir, tmp_path):
    runs = []
    for name in ("first", "second"):
        result = subprocess.run([sys.executable, str(RECIPE), *recipe_args(tiny_backbone_dir, tmp_path / name,
                                 "--max_steps", "6", "--save_steps", "3", "--per_device_train_batch_size", "4")],
                                env=subprocess_env(), capture_output=True, text=True, timeout=600, cwd=REPO_ROOT)
        assert result.returncode == 0, result.stderr[-4000:]
        runs.append(results(tmp_path / name))
    first, second = (metric_values(rows) for rows in runs)
    assert first and first == second  # exact equality, not approx: CPU training is deterministic
    histories = [json.loads((tmp_path / n / "runs" / "mtl__seed0" / "log_history.json").read_text()) for n in ("first", "second")]
    assert [e["loss"] for e in histories[0] if "loss" in e] == [e["loss"] for e in histories[1] if "loss" in e]


# ---------------------------------------------------------------------------------------------- a real kill
@pytest.mark.slow
def test_sigkilled_recipe_resumes_from_its_checkpoint_without_lost_or_duplicated_rows(tiny_backbone_dir, tmp_path):
    out = tmp_path / "killed"
    argv = [sys.executable, str(RECIPE), *recipe_args(tiny_backbone_dir, out, "--max_steps", "60", "--save_steps", "3", "--early_stopping_patience", "0",
                                                      "--per_device_train_batch_size", "4")]
    argv[argv.index("--seeds") + 1:argv.index("--seeds") + 2] = ["0", "1"]
    checkpoints = out / "runs" / "mtl__seed0" / "checkpoints"
    log = (tmp_path / "first.log").open("w")
    process = subprocess.Popen(argv, env=subprocess_env(), stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
    deadline = time.time() + 300
    try:
        while time.time() < deadline and process.poll() is None:
            if any((c / "trainer_state.json").is_file() for c in checkpoints.glob("checkpoint-*")):
                break
            time.sleep(0.05)
        assert process.poll() is None, f"the run ended before it could be killed:\n{(tmp_path / 'first.log').read_text()[-3000:]}"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
        log.close()
    assert process.returncode == -signal.SIGKILL
    assert results(out) == [], "the killed run must not have recorded results"

    result = subprocess.run(argv, env=subprocess_env(), capture_output=True, text=True, timeout=600, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "run 1/2: mtl__seed0" in result.stdout and "resuming from checkpoint-" in result.stdout
    rows = results(out)
    assert_no_duplicated_rows(rows)
    assert sorted({r["run_id"] for r in rows}) == ["mtl__seed0", "mtl__seed1"]
    assert all(r["train_steps"] == 60 for r in rows)
    summary = json.loads((out / "runs" / "mtl__seed0" / "run_summary.json").read_text())
    assert summary["resumed_from"] and "checkpoint-" in summary["resumed_from"]

    # The resumed run ends where an uninterrupted run with the same seed ends.
    clean_argv = [a if a != str(out) else str(tmp_path / "clean") for a in argv]
    clean_argv[clean_argv.index("--seeds") + 1:clean_argv.index("--seeds") + 3] = ["0"]
    clean = subprocess.run(clean_argv, env=subprocess_env(), capture_output=True, text=True, timeout=600, cwd=REPO_ROOT)
    assert clean.returncode == 0, clean.stderr[-4000:]
    resumed = {k[1:]: v for k, v in metric_values(rows, "mtl__seed0").items()}
    expected = {k[1:]: v for k, v in metric_values(results(tmp_path / "clean")).items()}
    assert resumed == pytest.approx(expected, abs=1e-6)

    # A third launch trains nothing and leaves the file byte-identical.
    before = (out / "results.jsonl").read_bytes()
    again = subprocess.run(argv, env=subprocess_env(), capture_output=True, text=True, timeout=600, cwd=REPO_ROOT)
    assert again.returncode == 0 and "0 to run" in again.stdout
    assert (out / "results.jsonl").read_bytes() == before
