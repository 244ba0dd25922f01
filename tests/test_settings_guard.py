"""A study folder keeps one set of settings: a relaunch with others is refused before any data is loaded."""

import json

import pytest
from conftest import load_recipe

from mtl_study.config import parse_recipe_args
from mtl_study.settings_guard import SETTINGS_FILE, check_study_settings, study_settings


def settings_of(tmp_path, *extra, recipe="architecture_comparison"):
    return study_settings(recipe, parse_recipe_args(recipe, ["--output_dir", str(tmp_path / "study"), *extra]))


def finished_a_run(folder):
    (folder / "results.jsonl").write_text(json.dumps({"run_id": "mtl__seed0", "value": 0.5}) + "\n", encoding="utf-8")


def test_a_changed_setting_is_refused_once_the_folder_holds_runs(tmp_path):
    folder = tmp_path / "study"
    check_study_settings(folder, settings_of(tmp_path, "--learning_rate", "0.002"))
    assert (folder / SETTINGS_FILE).is_file()
    # No run yet: new settings simply replace the recorded ones.
    check_study_settings(folder, settings_of(tmp_path, "--learning_rate", "0.001"))
    finished_a_run(folder)
    check_study_settings(folder, settings_of(tmp_path, "--learning_rate", "0.001"))  # same settings: fine
    with pytest.raises(ValueError, match=r"holds runs made with other settings \(learning_rate: 0\.001 -> 0\.002\).*"
                                         r"use a new --output_dir"):
        check_study_settings(folder, settings_of(tmp_path, "--learning_rate", "0.002"))
    with pytest.raises(ValueError, match="num_frozen_layers: 4 -> 5"):
        check_study_settings(folder, settings_of(tmp_path, "--learning_rate", "0.001", "--num_frozen_layers", "5"))


def test_the_grid_the_statistics_and_the_launch_may_change(tmp_path):
    folder = tmp_path / "study"
    check_study_settings(folder, settings_of(tmp_path))
    finished_a_run(folder)
    check_study_settings(folder, settings_of(tmp_path, "--seeds", "0", "1", "2", "3", "4", "5", "6", "7", "--arms", "mtl",
                                             "--p_adjust", "bh", "--alpha", "0.01", "--cpu_threads", "1",
                                             "--cache_frozen_layers", "false", "--logging_steps", "3",
                                             "--save_total_limit", "2", "--report_to", "tensorboard"))


def test_one_data_folder_named_two_ways_is_the_same_setting(tmp_path, monkeypatch):
    data = tmp_path / "release"
    data.mkdir()
    monkeypatch.chdir(tmp_path)
    assert settings_of(tmp_path, "--data_dir", "release") == settings_of(tmp_path, "--data_dir", str(data))
    assert settings_of(tmp_path, "--data_dir", "release") != settings_of(tmp_path)


def test_a_recipes_own_arguments_count(tmp_path):
    from cross_domain_training import CrossDomainTrainingArguments

    def of(domain):
        parsed = parse_recipe_args("cross_domain_training", ["--output_dir", str(tmp_path), "--primary_domain", domain],
                                   extra=[CrossDomainTrainingArguments])
        return study_settings("cross_domain_training", parsed)

    assert of("URW")["CrossDomainTrainingArguments.primary_domain"] == "URW" and of("URW") != of("CC")


def test_a_relaunch_with_other_settings_stops_before_loading_data(tiny_backbone_dir, tmp_path, monkeypatch):
    from mtl_study import study as study_module

    folder = tmp_path / "study"
    check_study_settings(folder, settings_of(tmp_path, "--model_name_or_path", str(tiny_backbone_dir)))
    finished_a_run(folder)

    def must_not_load(*args, **kwargs):
        raise AssertionError("data loaded before the settings were checked")

    monkeypatch.setattr(study_module, "load_experiment_data", must_not_load)
    with pytest.raises(ValueError, match="max_steps: -1 -> 3"):
        load_recipe("architecture_comparison").main(["--output_dir", str(folder), "--model_name_or_path",
                                                     str(tiny_backbone_dir), "--max_steps", "3"])


def test_runs_split_under_older_rules_are_not_reused(tmp_path):
    """A folder whose runs were split before repeated texts were kept together (no split_version recorded) is
    refused: its test set may hold copies of training articles."""
    folder = tmp_path / "study"
    (folder / "runs" / "stl__seed0").mkdir(parents=True)
    old = {k: v for k, v in settings_of(tmp_path).items() if k != "split_version"}
    (folder / SETTINGS_FILE).write_text(json.dumps(old))
    with pytest.raises(ValueError, match=r"split_version: None -> 2"):
        check_study_settings(folder, settings_of(tmp_path))


def test_every_training_flag_counts_but_the_known_harmless_ones(tmp_path):
    folder = tmp_path / "study"
    check_study_settings(folder, settings_of(tmp_path))
    finished_a_run(folder)
    for flag, value in (("--ignore_data_skip", "true"), ("--dataloader_drop_last", "true"),
                        ("--eval_delay", "3")):
        with pytest.raises(ValueError, match=flag.lstrip("-")):
            check_study_settings(folder, settings_of(tmp_path, flag, value))
    check_study_settings(folder, settings_of(tmp_path, "--card_license", "mit", "--dataloader_num_workers", "2",
                                             "--per_device_eval_batch_size", "3"))


def test_a_folder_recorded_before_a_setting_counted_is_checked_on_what_it_recorded(tmp_path):
    folder = tmp_path / "study"
    settings = settings_of(tmp_path)
    older = {k: v for k, v in settings.items() if not k.endswith(".train_sampling_strategy")}
    folder.mkdir()
    (folder / SETTINGS_FILE).write_text(json.dumps(older), encoding="utf-8")
    finished_a_run(folder)
    check_study_settings(folder, settings)  # the unrecorded setting cannot be checked: not a reason to refuse
    with pytest.raises(ValueError, match="learning_rate"):
        check_study_settings(folder, settings_of(tmp_path, "--learning_rate", "0.1"))


def test_a_ticket_table_is_known_by_its_content_not_its_name(tmp_path, monkeypatch):
    from ticket_router import TicketArguments

    def of(folder):
        monkeypatch.chdir(folder)
        parsed = parse_recipe_args("ticket_router", ["--output_dir", str(tmp_path / "study"), "--data_file", "t.csv"],
                                   extra=[TicketArguments])
        return study_settings("ticket_router", parsed)

    for name, rows in (("a", "text,y\nx,1\n"), ("b", "text,y\nx,2\n")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "t.csv").write_text(rows, encoding="utf-8")
    assert of(tmp_path / "a") != of(tmp_path / "b")
    (tmp_path / "b" / "t.csv").write_text("text,y\nx,1\n", encoding="utf-8")
    a, b = of(tmp_path / "a"), of(tmp_path / "b")
    assert a["TicketArguments.data_file_sha256"] == b["TicketArguments.data_file_sha256"]


def test_flags_the_study_sets_per_run_are_refused(tmp_path):
    for given, named, where in (("--seed", "--seed", "--seeds"),
                                ("--metric-for-best-model", "--metric_for_best_model", "--primary_metric"),
                                ("--resume_from_checkpoint", "--resume_from_checkpoint", "relaunch")):
        with pytest.raises(ValueError, match=f"{named} has no effect in a study: it is set per run from.*{where}"):
            parse_recipe_args("architecture_comparison", ["--output_dir", str(tmp_path), given, "x"])
    config = tmp_path / "c.yaml"
    config.write_text("seed: 3\n", encoding="utf-8")
    with pytest.raises(ValueError, match="--seed has no effect"):
        parse_recipe_args("architecture_comparison", ["--config", str(config)])


def test_yaml_numbers_in_exponent_form_are_numbers(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("learning_rate: 5e-5\nhead_learning_rate: 1e-3\n", encoding="utf-8")
    _, training, _ = parse_recipe_args("architecture_comparison", ["--config", str(config)])
    assert training.learning_rate == 5e-5 and training.head_learning_rate == 1e-3
    config.write_text("learning_rate: fast\n", encoding="utf-8")
    with pytest.raises(ValueError, match="option 'learning_rate' expects float"):
        parse_recipe_args("architecture_comparison", ["--config", str(config)])
