"""The experiment runner: results rows, skipping finished runs, resuming, crash safety, config parsing."""

import json
import os
from pathlib import Path

import pytest

from mtl_study.config import parse_recipe_args
from mtl_study.results import ResultsStore, atomic_write_text
from mtl_study.runner import ExperimentRunner, RunOutcome, RunSpec, best_models, last_checkpoint, run_model_dir


class Crash(RuntimeError):
    pass


def grid(seeds=(0, 1, 2)):
    specs = []
    for seed in seeds:
        specs += [RunSpec("stl", seed, ["a"], sharing="stl", tag="a"), RunSpec("stl", seed, ["b"], sharing="stl", tag="b"),
                  RunSpec("mtl", seed, ["a", "b"])]
    return specs


def fake_run_function(calls, crash_on=None, checkpoints_before_crash=0):
    def run(spec, run_dir, resume):
        calls.append((spec.run_id, resume))
        ckpt_root = Path(run_dir) / "checkpoints"
        if crash_on == spec.run_id:
            for step in range(1, checkpoints_before_crash + 1):
                folder = ckpt_root / f"checkpoint-{step * 10}"
                folder.mkdir(parents=True, exist_ok=True)
                (folder / "trainer_state.json").write_text("{}")
            raise Crash(f"killed during {spec.run_id}")

        model_dir = run_model_dir(run_dir)
        model_dir.mkdir(parents=True, exist_ok=True)
        (model_dir / "model.txt").write_text(spec.run_id)
        rows = [{"task": t, "eval_set": "test", "metric": m, "value": 0.1 * spec.seed + (0.05 if spec.arm == "mtl" else 0)}
                for t in spec.tasks for m in ("macro_f1", "micro_f1")]
        return RunOutcome(rows=rows, log_history=[{"step": 1, "loss": 1.0}], model_dir=model_dir)

    return run


def test_rows_have_required_fields_and_one_row_per_run_task_set_metric(tmp_path):
    calls = []
    rows = ExperimentRunner(tmp_path, fake_run_function(calls)).run(grid())
    assert len(calls) == 9
    keys = [(r["arm"], r["seed"], r["task"], r["eval_set"], r["metric"]) for r in rows]
    assert len(keys) == len(set(keys)) == sum(2 * len(s.tasks) for s in grid())
    for r in rows:
        assert {"arm", "seed", "task", "eval_set", "metric", "value", "run_id"} <= set(r)
    # the best model of each arm key is the highest seed (scores grow with the seed)
    best = {info["run_id"]: path for path, info in best_models(tmp_path)}
    assert set(best) == {"stl__a__seed2", "stl__b__seed2", "mtl__seed2"}
    assert (best["mtl__seed2"] / "model.txt").read_text() == "mtl__seed2"


def test_crash_then_relaunch_skips_finished_and_resumes_from_last_checkpoint(tmp_path):
    specs = grid()
    calls = []
    with pytest.raises(Crash):
        ExperimentRunner(tmp_path, fake_run_function(calls, crash_on="mtl__seed1", checkpoints_before_crash=2)).run(specs)
    before = ResultsStore(tmp_path / "results.jsonl").rows()
    assert {r["run_id"] for r in before} == {"stl__a__seed0", "stl__b__seed0", "mtl__seed0", "stl__a__seed1", "stl__b__seed1"}
    # a checkpoint the kill cut short (no trainer_state.json) must not be resumed from
    (tmp_path / "runs" / "mtl__seed1" / "checkpoints" / "checkpoint-30").mkdir()

    calls.clear()
    rows = ExperimentRunner(tmp_path, fake_run_function(calls)).run(specs)
    assert [c[0] for c in calls] == ["mtl__seed1", "stl__a__seed2", "stl__b__seed2", "mtl__seed2"]
    assert calls[0][1].endswith("checkpoint-20")
    assert all(c[1] is None for c in calls[1:])
    keys = [(r["run_id"], r["task"], r["metric"]) for r in rows]
    assert len(keys) == len(set(keys)) == sum(2 * len(s.tasks) for s in specs)
    assert all(r in rows for r in before)  # nothing written before the crash was lost

    calls.clear()
    ExperimentRunner(tmp_path, fake_run_function(calls)).run(specs)
    assert calls == []  # everything finished: a third launch trains nothing


def test_partial_block_from_a_kill_is_dropped_and_the_run_redone(tmp_path):
    specs = grid(seeds=(0,))
    ExperimentRunner(tmp_path, fake_run_function([])).run(specs)
    path = tmp_path / "results.jsonl"
    intact = path.read_text()
    # simulate a kill in the middle of appending the next run's block: one full row and half a row
    row = {"arm": "mtl", "seed": 5, "task": "a", "eval_set": "test", "metric": "macro_f1", "value": 0.3,
           "run_id": "mtl__seed5", "rows_in_run": 4}
    with open(path, "a") as handle:
        handle.write(json.dumps(row) + "\n" + json.dumps(row)[:25])
    store = ResultsStore(path)
    assert "mtl__seed5" not in store.finished_runs()
    report = store.repair()
    assert (report.dropped_runs, report.dropped_lines, report.partial_last_line) == (["mtl__seed5"], 2, True)
    assert path.read_text() == intact
    assert not store.repair()  # nothing left to repair
    calls = []
    rows = ExperimentRunner(tmp_path, fake_run_function(calls)).run(specs + [RunSpec("mtl", 5, ["a", "b"])])
    assert [c[0] for c in calls] == ["mtl__seed5"]
    assert sum(r["run_id"] == "mtl__seed5" for r in rows) == 4


def test_a_run_recorded_twice_keeps_its_first_record(tmp_path):
    # Two launches into one folder can both append a run's complete block: neither copy is partial, so neither is
    # damage to drop; the first is kept and the run is NOT redone.
    specs = grid(seeds=(0,))
    ExperimentRunner(tmp_path, fake_run_function([])).run(specs)
    path = tmp_path / "results.jsonl"
    intact = path.read_text()
    first_block = [json.loads(line) for line in intact.splitlines() if json.loads(line)["run_id"] == "mtl__seed0"]
    with open(path, "a") as handle:  # a second, complete record of the same run with other values
        handle.write("".join(json.dumps({**row, "value": row["value"] + 0.5}) + "\n" for row in first_block))
    store = ResultsStore(path)
    report = store.repair()
    assert report.duplicated_runs == ["mtl__seed0"] and report.dropped_runs == [] and report.dropped_lines == len(first_block)
    assert path.read_text() == intact and "mtl__seed0" in store.finished_runs()


def test_repair_warning_names_the_runs_and_whether_this_grid_redoes_them(tmp_path, caplog):
    specs = grid(seeds=(0,))
    ExperimentRunner(tmp_path, fake_run_function([])).run(specs)
    path = tmp_path / "results.jsonl"
    row = {"arm": "mtl", "seed": 7, "task": "a", "eval_set": "test", "metric": "macro_f1", "value": 0.3, "rows_in_run": 4}
    with open(path, "a") as handle:  # two interrupted blocks: one run in the next grid, one not
        handle.write(json.dumps({**row, "run_id": "mtl__seed7"}) + "\n" + json.dumps({**row, "run_id": "mtl__seed8"}) + "\n")
    calls = []
    with caplog.at_level("WARNING", logger="mtl_study.runner"):
        ExperimentRunner(tmp_path, fake_run_function(calls)).run(specs + [RunSpec("mtl", 7, ["a", "b"])])
    (message,) = [r.getMessage() for r in caplog.records if "interrupted write" in r.getMessage()]
    assert "['mtl__seed7'] are in this grid and will be redone in this launch" in message
    assert "['mtl__seed8'] are not in this grid and will not be redone" in message
    assert [c[0] for c in calls] == ["mtl__seed7"]


def test_invalid_utf8_line_fails_naming_file_and_line(tmp_path):
    store = ResultsStore(tmp_path / "results.jsonl")
    row = {"arm": "mtl", "seed": 0, "task": "a", "eval_set": "test", "metric": "macro_f1", "value": 0.5}
    store.append_run("r", [row])
    with open(store.path, "ab") as handle:
        handle.write(b'{"run_id": "s\xff\xfe"}\n')
    with pytest.raises(ValueError, match=r"results\.jsonl:2: not valid UTF-8"):
        store.rows()
    with pytest.raises(ValueError, match=r"results\.jsonl:2: not valid UTF-8"):
        ExperimentRunner(tmp_path, fake_run_function([])).run(grid(seeds=(0,)))
    # a torn write may end the file in the middle of a multi-byte character: that is a partial line, repaired
    store.path.write_bytes(store.path.read_bytes().split(b"\n")[0] + b"\n" + '{"task": "é'.encode()[:-1])
    assert store.repair().partial_last_line and store.finished_runs() == {"r"}


def test_append_refuses_duplicates_and_incomplete_rows(tmp_path):
    store = ResultsStore(tmp_path / "results.jsonl")
    row = {"arm": "mtl", "seed": 0, "task": "a", "eval_set": "test", "metric": "macro_f1", "value": 0.5}
    store.append_run("r", [row])
    with pytest.raises(ValueError, match="already recorded"):
        store.append_run("r", [row])
    with pytest.raises(ValueError, match="lacks field"):
        store.append_run("s", [{"arm": "x"}])
    with pytest.raises(ValueError, match="duplicate"):
        store.append_run("t", [row, row])
    assert len(store.rows()) == 1


def test_atomic_write_keeps_old_content_when_writing_fails(tmp_path):
    path = tmp_path / "report.md"
    atomic_write_text(path, "old")

    class Boom:
        def __str__(self):
            raise Crash("fail while producing the text")

    with pytest.raises(TypeError):
        atomic_write_text(path, Boom())  # not a str: the write fails before replacing
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]  # no temporary file left behind


def test_last_checkpoint_picks_highest_complete(tmp_path):
    assert last_checkpoint(tmp_path / "missing") is None
    for step, complete in [(5, True), (40, True), (100, False)]:
        (tmp_path / f"checkpoint-{step}").mkdir()
        if complete:
            (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    assert last_checkpoint(tmp_path).endswith("checkpoint-40")


def test_duplicated_run_ids_rejected(tmp_path):
    with pytest.raises(ValueError, match="duplicated run ids"):
        ExperimentRunner(tmp_path, fake_run_function([])).run([RunSpec("mtl", 0, ["a"]), RunSpec("mtl", 0, ["b"])])


def test_config_yaml_plus_command_line_overrides(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("seeds: [3, 4, 5]\nmax_steps: 7\noutput_dir: from_yaml\n")
    experiment, training, _ = parse_recipe_args("r", ["--config", str(config), "--max_steps", "9",
                                                     "--model_name_or_path", "some/model"])
    assert experiment.seeds == [3, 4, 5] and training.max_steps == 9 and training.output_dir == "from_yaml"
    config.write_text("seedz: [1]\n")
    with pytest.raises(ValueError, match=r"c\.yaml: unknown option\(s\) \['seedz'\]"):
        parse_recipe_args("r", ["--config", str(config)])
    with pytest.raises(ValueError, match="--arms"):
        parse_recipe_args("r", ["--arms", "stl", "bogus", "--model_name_or_path", "x"])
    with pytest.raises(ValueError, match="hub_model_id"):
        parse_recipe_args("r", ["--push_to_hub", "--model_name_or_path", "x"])


def _checkpoint(folder: Path, step: int, weights: bytes | None = None) -> Path:
    checkpoint = folder / f"checkpoint-{step}"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    if weights is not None:
        (checkpoint / "model.safetensors").write_bytes(weights)
    return checkpoint


def test_truncated_last_checkpoint_falls_back_to_the_previous_one_with_a_warning(tmp_path, caplog):
    import torch
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(64, 64)}, str(tmp_path / "good.safetensors"))
    weights = (tmp_path / "good.safetensors").read_bytes()
    root = tmp_path / "checkpoints"
    _checkpoint(root, 10, weights)
    truncated = _checkpoint(root, 20, weights[: len(weights) // 2])
    with caplog.at_level("WARNING", logger="mtl_study.runner"):
        assert last_checkpoint(root).endswith("checkpoint-10")
    (message,) = [r.getMessage() for r in caplog.records]
    assert str(truncated) in message and "model.safetensors is unreadable" in message and "falling back to checkpoint-10" in message

    # a trainer_state.json that does not parse, and a torch.save file cut short, are not loadable either
    (root / "checkpoint-10" / "trainer_state.json").write_text('{"global_step": 1')
    caplog.clear()
    with caplog.at_level("WARNING", logger="mtl_study.runner"):
        assert last_checkpoint(root) is None
    assert "restarts from scratch" in caplog.records[-1].getMessage()
    good = _checkpoint(root, 5, weights)
    torch.save({"step": 5}, str(good / "optimizer.pt"))
    assert last_checkpoint(root) == str(good)
    (good / "optimizer.pt").write_bytes((good / "optimizer.pt").read_bytes()[:-40])
    assert last_checkpoint(root) is None


def test_a_checkpoint_of_the_earlier_log_variance_layout_is_not_resumed(tmp_path, caplog):
    """Its optimizer state has one group entry for all tasks' log-variances: resuming would fail in torch."""
    import torch
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(4)}, str(tmp_path / "good.safetensors"))
    root = tmp_path / "checkpoints"
    older = _checkpoint(root, 10, (tmp_path / "good.safetensors").read_bytes())
    torch.save({"task_log_variances.0": torch.tensor(0.1), "task_log_variances.1": torch.tensor(0.2)},
               str(older / "loss_weighting.pt"))
    legacy = _checkpoint(root, 20, (tmp_path / "good.safetensors").read_bytes())
    torch.save({"log_variances": torch.tensor([0.1, 0.2])}, str(legacy / "loss_weighting.pt"))
    with caplog.at_level("WARNING", logger="mtl_study.runner"):
        assert last_checkpoint(root).endswith("checkpoint-10")
    assert "saved by an earlier version (one log-variance vector for all tasks)" in caplog.records[-1].getMessage()


def test_relaunch_after_a_truncated_checkpoint_resumes_from_the_previous_one(tmp_path):
    spec = RunSpec("mtl", 0, ["a", "b"])
    root = tmp_path / "runs" / spec.run_id / "checkpoints"
    _checkpoint(root, 10)
    _checkpoint(root, 20, b"\x08\x00\x00\x00\x00\x00\x00\x00{\"w\":")  # header cut short
    calls = []
    ExperimentRunner(tmp_path, fake_run_function(calls)).run([spec])
    assert calls == [(spec.run_id, str(root.absolute() / "checkpoint-10"))]


def test_unwritable_output_folder_fails_before_the_first_run(tmp_path, monkeypatch):
    import tempfile

    (tmp_path / "out").mkdir()
    (tmp_path / "out").chmod(0o500)
    if os.geteuid() == 0:  # root writes into read-only folders: refuse the probe file as the file system would
        def refuse(*args, dir=None, **kwargs):
            raise PermissionError(13, "Permission denied", str(dir))

        monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    calls = []
    try:
        with pytest.raises(PermissionError, match="out.* is not writable"):
            ExperimentRunner(tmp_path / "out", fake_run_function(calls)).run(grid(seeds=(0,)))
    finally:
        (tmp_path / "out").chmod(0o700)
    assert calls == []


def test_output_folder_that_cannot_be_created_fails_before_the_first_run(tmp_path):
    (tmp_path / "runs").write_text("a file where the runs folder goes")
    calls = []
    with pytest.raises(OSError, match="runs"):
        ExperimentRunner(tmp_path, fake_run_function(calls)).run(grid(seeds=(0,)))
    assert calls == []


def test_leaving_a_multi_process_launch_frees_the_trainers_before_destroying_the_process_group():
    """Gloo's threads may abort a process when the group outlives the interpreter's teardown: the group is destroyed
    at the end of a study, after the trainers (reference cycles holding DDP, hence the group) are collected."""
    import weakref

    from mtl_study.runner import leave_process_group

    class Cycle:  # like a trainer and its callback
        def __init__(self):
            self.me = self

    class State:
        def __init__(self, num_processes):
            self.num_processes, self.destroyed_with_trainer_alive = num_processes, []

        def destroy_process_group(self):
            self.destroyed_with_trainer_alive.append(trainer() is not None)

    import gc

    gc.disable()  # no automatic collection in between: only leave_process_group may free the cycle
    try:
        for processes, expected in ((1, []), (2, [False])):
            trainer = weakref.ref(Cycle())  # unreachable, freed only by the cycle collector
            state = State(processes)
            leave_process_group(state)
            assert state.destroyed_with_trainer_alive == expected
    finally:
        gc.enable()


def test_each_run_starts_after_the_previous_runs_trainer_is_freed(tmp_path):
    """A trainer lives in reference cycles: without a collection between runs, every earlier run's weights and
    optimizer state would stay in (device) memory while the next run trains."""
    import gc
    import weakref

    class Trainer:  # a cycle, like a trainer and its callbacks
        def __init__(self):
            self.callback = self

    previous, alive_at_start = [], []
    inner = fake_run_function([])

    def run(spec, run_dir, resume):
        alive_at_start.append(any(ref() is not None for ref in previous))
        previous.append(weakref.ref(Trainer()))
        return inner(spec, run_dir, resume)

    gc.disable()  # only the runner may collect
    try:
        ExperimentRunner(tmp_path, run).run(grid(seeds=(0,)))
    finally:
        gc.enable()
    assert alive_at_start == [False, False, False]
