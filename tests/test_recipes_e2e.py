"""Every recipe end to end on tiny settings (tiny random backbone, 2 seeds, 2 steps), resuming after a
crash with the real trainer, reloading the saved arms, and the real SemEval sample (slow)."""

import json
import sys
from pathlib import Path

import pytest

from conftest import REPO_ROOT, load_recipe, shared_data_path

RECIPES = REPO_ROOT / "recipes"


def tiny_args(backbone, output_dir, *extra, seeds=("0", "1")):
    return ["--model_name_or_path", backbone, "--output_dir", str(output_dir), "--seeds", *seeds, "--max_steps", "2",
            "--synthetic_num_documents", "24", "--max_length", "64", "--num_frozen_layers", "1", "--save_steps", "1",
            "--logging_steps", "1", "--per_device_eval_batch_size", "64", *extra]


def result_rows(output_dir):
    return [json.loads(line) for line in (Path(output_dir) / "results.jsonl").read_text().splitlines()]


def assert_complete_results(output_dir, arms):
    rows = result_rows(output_dir)
    keys = [(r["run_id"], r["task"], r["eval_set"], r["metric"]) for r in rows]
    assert len(keys) == len(set(keys)), "a results row is duplicated"
    assert {r["arm"] for r in rows} == set(arms)
    for r in rows:
        assert {"arm", "seed", "task", "eval_set", "metric", "value"} <= set(r)
        assert 0.0 <= r["value"] <= 1.0
    assert {"macro_f1", "micro_f1", "exact_match"} <= {r["metric"] for r in rows}
    report = (Path(output_dir) / "report.md").read_text()
    for arm in arms:
        assert arm in report
    assert "Wilcoxon" in report and "Shift statistics" in report
    assert (Path(output_dir) / "figures" / "per_seed_scores.png").stat().st_size > 0
    return rows, report


def test_one_run_saves_a_reloadable_model_with_a_parsable_card(tiny_backbone_dir, tmp_path):
    from huggingface_hub import ModelCard
    from transformers import AutoModel

    import modeling  # noqa: F401

    out = tmp_path / "one"
    load_recipe("architecture_comparison").main(tiny_args(tiny_backbone_dir, out, "--arms", "mtl", seeds=("0",)))
    rows = result_rows(out)
    assert {r["metric"] for r in rows} >= {"macro_f1", "micro_f1", "exact_match"}
    model = AutoModel.from_pretrained(out / "best" / "mtl")
    assert sorted(model.config.task_names) == sorted({r["task"] for r in rows})
    card = ModelCard.load(out / "best" / "mtl" / "README.md")
    assert {(e.metric_type, (e.metric_args or {}).get("average")) for e in card.data.eval_results} >= {("f1", "macro"), ("f1", "micro")}
    assert "max_steps (cap)" in card.text and "epochs (cap)" not in card.text  # the cap that applied: 2 steps
    assert (out / "report.md").is_file() and (out / "figures" / "per_seed_scores.png").is_file()


@pytest.mark.slow
def test_architecture_comparison_end_to_end_and_saved_arms_reload(tiny_backbone_dir, tmp_path, capsys):
    from huggingface_hub import ModelCard, metadata_load
    from transformers import AutoModel

    import modeling  # noqa: F401  (registers the Auto classes)

    out = tmp_path / "ac"
    load_recipe("architecture_comparison").main(tiny_args(tiny_backbone_dir, out, "--arms", "stl", "mtl", "mtl_adapters"))
    rows, report = assert_complete_results(out, ["stl", "mtl", "mtl_adapters"])
    assert {r["seed"] for r in rows} == {0, 1}
    assert "unreachable" in report  # 2 seeds: the report says a test cannot reach p < 0.05
    assert (out / "figures" / "learning_curves.png").is_file()
    console = capsys.readouterr().out
    assert "report:" in console and str(out / "report.md") in console

    for arm in ("mtl", "mtl_adapters"):
        folder = out / "best" / arm
        model = AutoModel.from_pretrained(folder)
        assert type(model).__name__ == "MultiTaskModel"
        assert model.config.sharing == ("adapters" if arm == "mtl_adapters" else "hard")
        assert (folder / "tokenizer_config.json").is_file()
        meta = metadata_load(folder / "README.md")
        (entry,) = meta["model-index"]
        info = json.loads((folder / "best_run.json").read_text())
        from mtl_study.cards import hub_metric

        run_rows = {(f"{r['task']} ({r['eval_set']})", hub_metric(r["metric"])[0], json.dumps(hub_metric(r["metric"])[1], sort_keys=True))
                    : r["value"] for r in rows if r["run_id"] == info["run_id"]}
        card = ModelCard.load(folder / "README.md")
        parsed = {(e.task_name, e.metric_type, json.dumps(e.metric_args, sort_keys=True)): e.metric_value for e in card.data.eval_results}
        assert parsed == pytest.approx(run_rows)
        assert "p vs stl" in card.text
    for task in {r["task"] for r in rows}:
        assert (out / "best" / "stl" / task / "README.md").is_file()

    # relaunching a finished experiment trains nothing and duplicates nothing
    before = (out / "results.jsonl").read_text()
    load_recipe("architecture_comparison").main(tiny_args(tiny_backbone_dir, out, "--arms", "stl", "mtl", "mtl_adapters"))
    assert "0 to run" in capsys.readouterr().out
    assert (out / "results.jsonl").read_text() == before


@pytest.mark.slow
def test_killed_run_resumes_from_its_checkpoint_with_identical_results(tiny_backbone_dir, tmp_path, monkeypatch, capsys):
    from mtl_study import study as study_module

    args = ["--arms", "mtl", "--max_steps", "4", "--save_steps", "2"]
    clean = tmp_path / "clean"
    load_recipe("architecture_comparison").main(tiny_args(tiny_backbone_dir, clean, *args, seeds=("0",)))

    class Killed(KeyboardInterrupt):
        pass

    def kill_at_step_3(self, args, state, control, **kwargs):
        if state.global_step == 3:
            raise Killed("simulated kill at step 3")

    crashed = tmp_path / "crashed"
    monkeypatch.setattr(study_module.CompactProgress, "on_step_end", kill_at_step_3, raising=False)
    with pytest.raises(Killed):
        load_recipe("architecture_comparison").main(tiny_args(tiny_backbone_dir, crashed, *args, seeds=("0", "1")))
    assert not (crashed / "results.jsonl").exists() or result_rows(crashed) == []
    assert (crashed / "runs" / "mtl__seed0" / "checkpoints" / "checkpoint-2").is_dir()
    monkeypatch.undo()
    capsys.readouterr()

    load_recipe("architecture_comparison").main(tiny_args(tiny_backbone_dir, crashed, *args, seeds=("0", "1")))
    console = capsys.readouterr().out
    assert "mtl__seed0 (tasks: " in console and "resuming from checkpoint-2" in console
    rows = result_rows(crashed)
    assert sorted({r["run_id"] for r in rows}) == ["mtl__seed0", "mtl__seed1"]
    resumed = {(r["task"], r["eval_set"], r["metric"]): r["value"] for r in rows if r["run_id"] == "mtl__seed0"}
    expected = {(r["task"], r["eval_set"], r["metric"]): r["value"] for r in result_rows(clean)}
    assert resumed == pytest.approx(expected, abs=1e-6)
    assert not (crashed / "runs" / "mtl__seed0" / "checkpoints").exists()  # cleaned once the run is recorded


def test_evaluation_set_naming_a_task_the_model_lacks_is_a_clear_error(tiny_backbone_dir, tmp_path):
    from mtl_study.config import parse_recipe_args
    from mtl_study.study import Study, check_eval_tasks

    with pytest.raises(ValueError, match=r"evaluation set 'test' names task\(s\) \['queue'\] that the model lacks"):
        check_eval_tasks("test", ["category", "queue"], ["category"])
    parsed = parse_recipe_args("t", tiny_args(tiny_backbone_dir, tmp_path, "--arms", "stl", seeds=("0",)))
    study = Study(*parsed, "t", "t", "q")
    specs = study.architecture_specs(study.task_names(), arms=["stl"])[:1]
    other = next(t for t in study.task_names() if t not in specs[0].tasks)
    with pytest.raises(ValueError, match=f"names task\\(s\\) \\['{other}'\\] that the model lacks"):
        study.run(specs, eval_tasks_for=lambda spec, name: [*spec.tasks, other])
    assert not (tmp_path / "results.jsonl").exists() or result_rows(tmp_path) == []


@pytest.mark.slow
@pytest.mark.parametrize("recipe,extra,arms", [
    # 60 documents: each domain's validation articles must carry the labels its runs stop on
    ("cross_domain_training", ["--synthetic_num_documents", "60"], ["stl", "mtl_aux_same_domain", "mtl_aux_other_domain"]),
    ("data_duplication", [], ["stl", "stl_duplicated", "mtl"]),
    ("label_granularity", [], ["stl", "mtl_narratives-fine_entity_framing-fine", "mtl_narratives-fine_entity_framing-coarse",
                               "mtl_narratives-coarse_entity_framing-fine", "mtl_narratives-coarse_entity_framing-coarse"]),
    ("cross_domain_evaluation", ["--arms", "stl", "mtl", "--synthetic_num_documents", "60"], ["stl@CC", "mtl@CC", "stl@URW", "mtl@URW", "stl@both", "mtl@both"]),
    ("ticket_router", ["--ticket_rows", "80", "--latency_repeats", "1"], ["stl", "mtl", "mtl_adapters"]),
])
def test_recipe_end_to_end_tiny(recipe, extra, arms, tiny_backbone_dir, tmp_path):
    out = tmp_path / recipe
    load_recipe(recipe).main(tiny_args(tiny_backbone_dir, out, *extra))
    rows, report = assert_complete_results(out, arms)
    assert "train half vs half (floor)" in report  # the shift table's sampling floor
    if recipe == "cross_domain_evaluation":
        assert "Cross-domain matrix" in report and "Asymmetry" in report
        assert list((out / "figures").glob("cross_domain_*.png"))
        # baselines fitted per training domain, scored on the per-domain test sets the models were scored on
        assert "*baseline_tfidf_lr@URW*" in report and "*baseline_tfidf_lr@both*" in report
        assert "## Negative transfer" in report  # mtl@d against stl@d
    if recipe.startswith("cross_domain"):
        verdicts = [line for line in report.splitlines() if line.startswith("- ") and "baseline" in line]
        assert verdicts and all("(test)" not in line for line in verdicts)
    if recipe == "cross_domain_training":  # the auxiliary task trains on another domain per arm: no baseline for it
        assert not any("narratives" in line for line in verdicts), verdicts
    if recipe == "data_duplication":
        assert "Token counts of the duplication control" in report
    if recipe == "ticket_router":
        assert "Label-leakage audit" in report and "Disagreement" in report and "Latency" in report
        assert "Train/test text overlap" in report and "test texts" in report


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["architecture_comparison", "cross_domain_training", "data_duplication",
                                    "label_granularity", "cross_domain_evaluation"])
def test_recipe_on_the_semeval_sample(recipe, tiny_backbone_dir, tmp_path):
    sample = shared_data_path("semeval2025_task10_sample")
    out = tmp_path / recipe
    extra = ["--arms", "stl", "mtl"] if recipe in ("architecture_comparison", "cross_domain_evaluation") else []
    load_recipe(recipe).main(tiny_args(tiny_backbone_dir, out, "--data_dir", str(sample), *extra))
    rows = result_rows(out)
    assert rows and "SemEval-2025 Task 10 release" in (out / "report.md").read_text()
    cards = list(out.glob("best/**/README.md"))
    assert cards
    for card in cards:  # the data's path stays on this machine (license note included)
        text = card.read_text(encoding="utf-8")
        assert str(sample) not in text and "license: other" in text


@pytest.mark.slow
def test_ticket_router_on_the_real_tickets_sample_flags_leakage(tiny_backbone_dir, tmp_path):
    table = shared_data_path("tickets_sample", "tickets_sample.csv")
    out = tmp_path / "tickets"
    load_recipe("ticket_router").main(tiny_args(tiny_backbone_dir, out, "--data_file", str(table), "--label_columns",
                                                "category", "sub_category1", "--audit_columns", "ticket_type", "urgency",
                                                "impact", "--arms", "stl", "mtl"))
    report = (out / "report.md").read_text()
    assert "Flagged:" in report and "urgency determined by ticket_type" in report
    assert "single value '1' in this table: audited, not trained" in report


@pytest.mark.slow
def test_training_arguments_flags_reach_every_run_and_tensorboard(tiny_backbone_dir, tmp_path):
    """The done-when command of the parsing work, launched with accelerate: TensorBoard event files with the
    per-task losses, and each run's training_args.json holding the values given on the command line."""
    import os
    import subprocess

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "smoke"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", str(RECIPES / "architecture_comparison.py"),
               "--seeds", "0", "--max_steps", "2", "--report_to", "tensorboard", "--gradient_accumulation_steps", "2",
               "--weight_decay", "0.05", "--head_hidden_size", "64", "--output_dir", str(out),
               "--model_name_or_path", tiny_backbone_dir, "--synthetic_num_documents", "24", "--max_length", "64",
               "--num_frozen_layers", "1"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(RECIPES), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=REPO_ROOT)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    runs = sorted((out / "runs").iterdir())
    assert [r.name for r in runs] == ["mtl__seed0", "mtl_adapters__seed0", "stl__entity_framing_coarse__seed0",
                                      "stl__narratives_coarse__seed0"]
    for run in runs:
        saved = json.loads((run / "training_args.json").read_text())
        assert saved["gradient_accumulation_steps"] == 2 and saved["weight_decay"] == 0.05 and saved["max_steps"] == 2
        assert saved["report_to"] == ["tensorboard"] and saved["seed"] == 0
        summary = json.loads((run / "run_summary.json").read_text())["extra"]
        assert summary["stopped_by"] == "max_steps" and summary["steps"] == 2 and summary["evaluations"] >= 1
        tags = set()
        for events in (run / "tensorboard").glob("events.out.tfevents.*"):
            accumulator = EventAccumulator(str(events))
            accumulator.Reload()
            tags |= set(accumulator.Tags()["scalars"])
        tasks = json.loads((run / "run_summary.json").read_text())["tasks"]
        assert {f"train/loss_{task}" for task in tasks} <= tags, tags
    config = json.loads((out / "best" / "mtl" / "config.json").read_text())
    assert config["head_hidden_size"] == 64


def test_refit_on_validation_trains_the_evaluated_model_on_both_sets(tiny_backbone_dir, tmp_path):
    from transformers import AutoModel

    import modeling  # noqa: F401

    out = tmp_path / "refit"
    load_recipe("architecture_comparison").main(tiny_args(tiny_backbone_dir, out, "--arms", "mtl", "--refit_on_validation",
                                                          "--max_steps", "4", "--save_steps", "2", seeds=("0",)))
    summary = json.loads((out / "runs" / "mtl__seed0" / "run_summary.json").read_text())["extra"]
    assert summary["refit_steps"] == summary["best_step"] and summary["refit_steps"] in (2, 4)
    rows = result_rows(out)
    validation = {r["train_examples"] for r in rows if r["eval_set"] == "validation"}
    test = {(r["train_examples"], r["train_steps"]) for r in rows if r["eval_set"] == "test"}
    (train_rows,), ((refit_rows, refit_steps),) = validation, test
    assert refit_rows > train_rows and refit_steps == summary["refit_steps"]  # validation windows joined training
    assert "refit on training + validation" in (out / "report.md").read_text()
    assert AutoModel.from_pretrained(out / "best" / "mtl").config.task_names


def test_with_validation_keeps_documents_apart():
    from datasets import Dataset

    from mtl_study.training import with_validation

    train = Dataset.from_dict({"document_index": [0, 0, 1], "x": [1, 2, 3]})
    validation = Dataset.from_dict({"document_index": [0, 1, 1], "x": [4, 5, 6]})
    both = with_validation(train, validation)
    assert both["document_index"] == [0, 0, 1, 2, 3, 3] and both["x"] == [1, 2, 3, 4, 5, 6]


def test_a_launch_cards_only_the_best_models_of_its_own_grid(tiny_backbone_dir, tmp_path):
    out = tmp_path / "grid"
    load_recipe("architecture_comparison").main(tiny_args(tiny_backbone_dir, out, "--arms", "stl", "mtl", seeds=("0",)))
    stl_cards = sorted((out / "best" / "stl").rglob("README.md"))
    assert stl_cards and (out / "best" / "mtl" / "README.md").is_file()
    for card in stl_cards:
        card.write_text("left by the first launch", encoding="utf-8")
    # Relaunched with mtl only: the stl models of the first launch are not in this grid, their cards stay as they were.
    load_recipe("architecture_comparison").main(tiny_args(tiny_backbone_dir, out, "--arms", "mtl", seeds=("0",)))
    assert all(card.read_text(encoding="utf-8") == "left by the first launch" for card in stl_cards)
    assert "left by" not in (out / "best" / "mtl" / "README.md").read_text(encoding="utf-8")


def test_a_launch_with_failed_runs_writes_everything_then_fails(tiny_backbone_dir, tmp_path):
    # The Ray launcher goes on after a run fails for good; the report covers the others, but the launch must not
    # exit 0 as if the study were complete.
    from mtl_study.config import parse_recipe_args
    from mtl_study.finishing import RunsFailedError
    from mtl_study.runner import GridRows
    from mtl_study.study import Study

    study = Study(*parse_recipe_args("architecture_comparison", tiny_args(tiny_backbone_dir, tmp_path, "--arms", "mtl",
                                                                          seeds=("0",))), "t", "t", "q")
    rows = study.run(study.architecture_specs(study.task_names()))
    study.last_rows = GridRows(rows, {"mtl__seed1": "RuntimeError: worker died"})
    with pytest.raises(RunsFailedError, match=r"1 run\(s\) failed after their retries: mtl__seed1"):
        study.finish(rows)
    report = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "Failed runs" in report and "worker died" in report


def test_a_failed_push_comes_after_everything_is_written_and_nothing_private_is_shared(tiny_backbone_dir, tmp_path,
                                                                                          monkeypatch):
    """The push runs last, with --hub_token; a refused push raises HubPushError once the report, cards and summary
    are written. The pushed folder holds no pickled training arguments (token, paths) and no local backbone path."""
    import mtl_study.finishing as finishing
    from mtl_study.finishing import HubPushError

    pushed = []

    def refused(folder, repo_id, token=None, **_):
        pushed.append((Path(folder), token))
        raise PermissionError("401 Unauthorized")

    monkeypatch.setattr(finishing, "push_to_hub", refused)
    with pytest.raises(HubPushError, match=r"1 push\(es\) to me/mtl failed: .*401 Unauthorized"):
        load_recipe("architecture_comparison").main(tiny_args(
            tiny_backbone_dir, tmp_path, "--arms", "mtl", "--push_to_hub", "--hub_model_id", "me/mtl",
            "--hub_token", "hf_SECRET", seeds=("0",)))
    assert (tmp_path / "report.md").is_file() and (tmp_path / "best" / "mtl" / "README.md").is_file()
    [(folder, token)] = pushed
    assert token == "hf_SECRET" and not (folder / "training_args.bin").exists()
    shared = "".join(p.read_text(encoding="utf-8") for p in folder.iterdir() if p.suffix in (".json", ".md"))
    assert "hf_SECRET" not in shared and str(tiny_backbone_dir) not in shared and str(tmp_path) not in shared


class _Stop(Exception):
    pass


@pytest.mark.parametrize("recipe", ["cross_domain_training", "cross_domain_evaluation"])
def test_cross_domain_runs_are_selected_without_the_labels_they_must_not_see(recipe, tiny_backbone_dir, tmp_path,
                                                                              monkeypatch):
    """A run's validation set (early stopping, best checkpoint, thresholds, a refit) is restricted as its training
    set is: the primary task's labels of the other domain (cross-domain training), the other training domain's
    articles (cross-domain evaluation), must not choose its model."""
    from mtl_study.study import Study

    captured = {}

    def capture(self, specs, **options):
        captured.update(specs=specs, **options)
        raise _Stop

    monkeypatch.setattr(Study, "run", capture)
    with pytest.raises(_Stop):
        load_recipe(recipe).main(tiny_args(tiny_backbone_dir, tmp_path, "--synthetic_num_documents", "60"))
    validation_for, examples_for = captured["validation_for"], captured["examples_for"]
    for spec in captured["specs"]:
        validation, train = validation_for(spec), examples_for(spec)
        if recipe == "cross_domain_evaluation":
            domain = spec.condition["train_domain"]
            assert set(validation["domain"]) == ({"URW", "CC"} if domain == "both" else {domain})
            continue
        primary = spec.tasks[0]
        for examples in (train, validation):  # the same restriction in both
            labelled = {d for d, labels in zip(examples["domain"], examples[primary]) if labels is not None}
            assert labelled == {spec.condition["train_domain"]}, (spec.run_id, labelled)
        for auxiliary in spec.tasks[1:]:
            labelled = {d for d, labels in zip(validation["domain"], validation[auxiliary]) if labels is not None}
            assert labelled == {spec.condition["aux_domain"]}
    assert captured["specs"][0].tasks[0].startswith("entity_framing") or recipe == "cross_domain_evaluation"
