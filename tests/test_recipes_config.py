"""Recipe option parsing: one HfArgumentParser over (ExperimentArguments, StudyTrainingArguments, ModelArguments),
YAML defaults under command-line overrides, every value type- and range-checked before anything runs."""

import dataclasses
import time
from pathlib import Path

import pytest

from mtl_study.config import ExperimentArguments, ModelArguments, StudyTrainingArguments, parse_recipe_args
from mtl_study.report import arm_colours

REPO_ROOT = Path(__file__).resolve().parents[1]


def parse(*argv, recipe="r"):
    return parse_recipe_args(recipe, ["--model_name_or_path", "some/model", *argv])


def yaml_file(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return str(path)


def test_each_recipe_writes_to_its_own_default_folder():
    first = parse_recipe_args("architecture_comparison", [])[1]
    second = parse_recipe_args("label_granularity", [])[1]
    assert first.output_dir == "outputs/architecture_comparison"
    assert second.output_dir == "outputs/label_granularity"
    assert parse("--output_dir", "elsewhere", recipe="label_granularity")[1].output_dir == "elsewhere"


def test_yaml_gives_defaults_and_the_command_line_wins(tmp_path):
    config = yaml_file(tmp_path, "seeds: [3, 4]\nlearning_rate: 0.01\noutput_dir: from_yaml\nhead_hidden_size: 32\n")
    experiment, training, model = parse("--config", config, "--seeds", "7")
    assert experiment.seeds == [7] and training.learning_rate == 0.01 and training.output_dir == "from_yaml"
    assert model.head_hidden_size == 32


def test_every_training_arguments_flag_reaches_the_training_arguments():
    _, training, model = parse("--report_to", "tensorboard", "--gradient_accumulation_steps", "2", "--weight_decay", "0.05",
                               "--warmup_steps", "0.2", "--lr_scheduler_type", "cosine", "--log_level", "info",
                               "--eval_strategy", "epoch", "--save_strategy", "epoch", "--loss_weighting", "uncertainty",
                               "--head_hidden_size", "64", "--pooling", "mean", "--lora_r", "4", "--lora_layers", "5")
    assert training.report_to == ["tensorboard"] and training.gradient_accumulation_steps == 2
    assert training.weight_decay == 0.05 and training.warmup_steps == 0.2 and training.lr_scheduler_type == "cosine"
    assert training.log_level == "info" and training.eval_strategy == "epoch" and training.loss_weighting == "uncertainty"
    assert model.head_hidden_size == 64 and model.pooling == "mean"
    adapter = model.model_options("adapters")["adapter_config"]
    assert adapter["r"] == 4 and adapter["layers_to_transform"] == [5]
    assert "adapter_config" not in model.model_options("hard")


def test_defaults_are_the_main_job_and_equal_the_shipped_yaml():
    """No argument = the main job; the architecture-comparison YAML only writes those defaults out."""
    defaults = parse_recipe_args("architecture_comparison", [])
    from_yaml = parse_recipe_args("architecture_comparison",
                                  ["--config", str(REPO_ROOT / "recipes" / "configs" / "architecture_comparison.yaml")])
    assert [dataclasses.asdict(a) for a in defaults] == [dataclasses.asdict(a) for a in from_yaml]
    experiment, training, model = defaults
    assert training.eval_strategy == "steps" and training.load_best_model_at_end and experiment.early_stopping_patience > 0
    assert training.eval_steps == training.save_steps  # every evaluation has a checkpoint to return to


@pytest.mark.parametrize("recipe", ["architecture_comparison", "architecture_comparison_fine", "cross_domain_evaluation",
                                    "cross_domain_training", "data_duplication", "label_granularity", "ticket_router"])
def test_every_shipped_yaml_parses(recipe):
    from cross_domain_training import CrossDomainTrainingArguments
    from ticket_router import TicketArguments

    extra = {"cross_domain_training": [CrossDomainTrainingArguments], "ticket_router": [TicketArguments]}.get(recipe, [])
    parsed = parse_recipe_args(recipe, ["--config", str(REPO_ROOT / "recipes" / "configs" / f"{recipe}.yaml")], extra=extra)
    assert parsed[1].output_dir == f"outputs/{recipe}"


def test_unknown_yaml_key_names_the_file_and_the_key(tmp_path):
    with pytest.raises(ValueError, match=r"c\.yaml: unknown option\(s\) \['seedz'\]"):
        parse("--config", yaml_file(tmp_path, "seedz: [1]\n"))


def test_unknown_command_line_option_is_an_error():
    """Also an abbreviation: argparse would otherwise read --learning_rat as --learning_rate."""
    with pytest.raises(ValueError, match=r"not used by the HfArgumentParser: \['--learning_rat', '0.1'\]"):
        parse("--learning_rat", "0.1")


def test_yaml_bool_for_a_float_names_the_file_and_the_field(tmp_path):
    with pytest.raises(ValueError, match=r"c\.yaml: option 'learning_rate' expects float, got bool True"):
        parse("--config", yaml_file(tmp_path, "learning_rate: true\n"))


def test_yaml_list_for_a_scalar_is_an_error(tmp_path):
    with pytest.raises(ValueError, match=r"c\.yaml: option 'num_train_epochs' expects float, got list"):
        parse("--config", yaml_file(tmp_path, "num_train_epochs: [1, 2]\n"))


def test_yaml_float_max_steps_is_an_error(tmp_path):
    with pytest.raises(ValueError, match=r"c\.yaml: option 'max_steps' expects int, got float 2\.5"):
        parse("--config", yaml_file(tmp_path, "max_steps: 2.5\n"))


def test_string_seeds_are_an_error(tmp_path, capsys):
    with pytest.raises(ValueError, match=r"c\.yaml: option 'seeds' expects list\[int\]"):
        parse("--config", yaml_file(tmp_path, "seeds: ['a', 'b']\n"))
    with pytest.raises(SystemExit):
        parse("--seeds", "a")
    assert "--seeds: invalid int value: 'a'" in capsys.readouterr().err


def test_yaml_scalar_where_a_list_is_expected_is_not_split_into_characters(tmp_path):
    from ticket_router import TicketArguments

    with pytest.raises(ValueError, match=r"option 'label_columns' expects list\[str\], got str 'category' "
                                         r"\(write a list: label_columns: \[category\]\)"):
        parse_recipe_args("ticket_router", ["--config", yaml_file(tmp_path, "label_columns: category\n")],
                          extra=[TicketArguments])


def test_negative_max_steps_is_an_error(tmp_path):
    with pytest.raises(ValueError, match=r"--max_steps must be -1 .* or > 0, got -5"):
        parse("--max_steps", "-5")
    with pytest.raises(ValueError, match=r"--max_steps must be -1.*c\.yaml"):
        parse("--config", yaml_file(tmp_path, "max_steps: -5\n"))
    assert parse("--max_steps", "-1")[1].max_steps == -1


def test_primary_metric_must_be_one_the_tasks_report():
    with pytest.raises(ValueError, match=r"--primary_metric: unknown value\(s\) \['accuracy'\]; choose among \['macro_f1'"):
        parse("--primary_metric", "accuracy")


def test_tasks_take_kinds_or_full_task_names():
    args = parse("--tasks", "narratives", "entity_framing", "entity_framing_coarse", "--granularity", "fine")[0]
    assert args.tasks == ["narratives", "entity_framing", "entity_framing_coarse"]
    from types import SimpleNamespace

    from mtl_study.study import Study

    names = Study.task_names(SimpleNamespace(args=args))
    assert names == ["narratives_fine", "entity_framing_fine", "entity_framing_coarse"]
    assert Study.task_names(SimpleNamespace(args=args), "coarse") == ["narratives_coarse", "entity_framing_coarse"]
    with pytest.raises(ValueError, match=r"--tasks: unknown value\(s\) \['entity_framing_medium'\]"):
        parse("--tasks", "entity_framing_medium")


def test_unknown_arm_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"--arms: unknown value\(s\) \['mtlx'\]; choose among \['stl', 'mtl', 'mtl_adapters'\]"):
        parse("--arms", "stl", "mtlx")


def test_push_to_hub_needs_a_valid_repo_id_and_a_token(monkeypatch, tmp_path):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)  # no stored login, no token in the environment
    with pytest.raises(ValueError, match="--push_to_hub needs --hub_model_id"):
        parse("--push_to_hub")
    with pytest.raises(ValueError, match=r"--hub_model_id 'not a/valid//id' is not a valid Hub repo id"):
        parse("--push_to_hub", "--hub_model_id", "not a/valid//id")
    with pytest.raises(ValueError, match="--push_to_hub needs a Hub token with write access"):
        parse("--push_to_hub", "--hub_model_id", "someone/mtl-narratives")  # known before training, not after
    assert parse("--push_to_hub", "--hub_model_id", "someone/mtl-narratives",
                 "--hub_token", "hf_x")[1].hub_model_id == "someone/mtl-narratives"
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_from_a_login_or_the_environment")
    assert parse("--push_to_hub", "--hub_model_id", "someone/mtl-narratives")[1].push_to_hub


def test_range_checks_name_the_field():
    with pytest.raises(ValueError, match="--eval_fraction must be in"):
        parse("--eval_fraction", "1.5")
    with pytest.raises(ValueError, match="--early_stopping_patience"):
        parse("--early_stopping_patience", "-1")
    with pytest.raises(ValueError, match="--stride must be in"):
        parse("--max_length", "64", "--stride", "40")
    with pytest.raises(ValueError, match="--learning_rate must be > 0"):
        parse("--learning_rate", "0")


def test_each_run_derives_its_own_training_arguments(tmp_path):
    from mtl_study.runner import RunSpec, wants_cpu
    from mtl_study.study import Study

    experiment, training, model = parse("--weight_decay", "0.05", "--loss_weighting", "uncertainty",
                                        "--primary_metric", "micro_f1", "--output_dir", str(tmp_path))
    study = Study.__new__(Study)
    study.args, study.training, study.model_args = experiment, training, model
    multi = study.training_arguments(RunSpec("mtl", 3, ["a", "b"]), tmp_path / "runs" / "mtl__seed3")
    single = study.training_arguments(RunSpec("stl", 4, ["a"], sharing="stl", tag="a"), tmp_path / "runs" / "stl")
    assert multi.output_dir == str(tmp_path / "runs" / "mtl__seed3" / "checkpoints")
    assert (multi.seed, multi.data_seed, multi.run_name) == (3, 3, "mtl__seed3") and single.seed == 4
    assert multi.weight_decay == 0.05 and multi.loss_weighting == "uncertainty" and single.loss_weighting == "static"
    assert multi.metric_for_best_model == "mean_micro_f1" and not multi.push_to_hub
    assert multi.use_cpu == wants_cpu(False)
    assert training.output_dir == str(tmp_path) and training.seed == 42  # the parsed arguments are left unchanged


def test_gradnorm_on_the_architecture_comparison_fails_before_the_first_run(tiny_backbone_dir, tmp_path):
    from architecture_comparison import main

    started = time.time()
    with pytest.raises(ValueError, match=r"--loss_weighting gradnorm cannot apply to arm\(s\) \['mtl_adapters'\]: .*share none"):
        main(["--model_name_or_path", tiny_backbone_dir, "--output_dir", str(tmp_path), "--seeds", "0",
              "--synthetic_num_documents", "24", "--loss_weighting", "gradnorm"])
    assert time.time() - started < 60
    assert not (tmp_path / "runs").exists()


def test_primary_metric_a_task_does_not_report_fails_before_the_first_run(tiny_backbone_dir, tmp_path):
    from architecture_comparison import main

    with pytest.raises(ValueError, match=r"--primary_metric coarse_macro_f1: task '\w+_coarse' does not report it"):
        main(["--model_name_or_path", tiny_backbone_dir, "--output_dir", str(tmp_path), "--seeds", "0",
              "--synthetic_num_documents", "24", "--primary_metric", "coarse_macro_f1"])
    assert not (tmp_path / "runs").exists()


def test_frozen_layers_beyond_the_backbone_fail_before_the_data_is_encoded(tiny_backbone_dir, tmp_path):
    from architecture_comparison import main

    with pytest.raises(ValueError, match=r"num_frozen_layers: 3 is out of range; the backbone has 2 layers"):
        main(["--model_name_or_path", tiny_backbone_dir, "--output_dir", str(tmp_path), "--seeds", "0", "--arms", "stl",
              "--synthetic_num_documents", "24", "--num_frozen_layers", "3", "--cache_frozen_layers", "false"])
    assert not (tmp_path / "runs").exists() and not (tmp_path / "cache").exists()


@pytest.mark.parametrize("option, value, message", [
    ("--lora_target_modules", "nope", r"Target modules \{'nope'\} not found in the base model"),
    ("--lora_layers", "7", r"--lora_layers \[7\]: the backbone has 2 layers, numbered 0 to 1"),
])
def test_bad_adapter_settings_fail_before_the_data_is_encoded(tiny_backbone_dir, tmp_path, option, value, message):
    from architecture_comparison import main

    with pytest.raises(Exception, match=message):
        main(["--model_name_or_path", tiny_backbone_dir, "--output_dir", str(tmp_path), "--seeds", "0",
              "--arms", "stl", "mtl_adapters", "--synthetic_num_documents", "24", "--num_frozen_layers", "0",
              "--cache_frozen_layers", "false", option, value])
    assert not (tmp_path / "runs").exists()


def test_unknown_integration_and_non_finite_numbers_are_refused_when_parsed():
    with pytest.raises(ValueError, match=r"--report_to: tensorbord is not supported, only .*tensorboard"):
        parse("--report_to", "tensorbord")
    for option, value in (("--learning_rate", "inf"), ("--weight_decay", "nan"), ("--warmup_steps", "nan")):
        with pytest.raises(ValueError, match=rf"{option} must be a finite number"):
            parse(option, value)


def test_unknown_ticket_label_column_fails_before_the_first_run(tiny_backbone_dir, tmp_path):
    from ticket_router import main

    with pytest.raises(ValueError, match=r"columns \['nope'\] not found"):
        main(["--model_name_or_path", tiny_backbone_dir, "--output_dir", str(tmp_path), "--seeds", "0",
              "--ticket_rows", "40", "--label_columns", "category", "nope"])
    assert not (tmp_path / "runs").exists()


def test_an_arm_has_one_colour_in_every_figure():
    both = arm_colours(["stl", "mtl"])
    three = arm_colours(["mtl_adapters", "stl", "mtl", "mtl@CC"])
    assert both["mtl"] == three["mtl"] and both["stl"] == three["stl"]
    assert len(set(three.values())) == 4


def test_dataclasses_are_the_three_parsed_ones():
    parsed = parse()
    assert [type(a) for a in parsed] == [ExperimentArguments, StudyTrainingArguments, ModelArguments]


def test_cpu_threads_default_to_the_cores_split_among_processes():
    """accelerate launch exports OMP_NUM_THREADS=1; a CPU study uses its cores unless --cpu_threads says otherwise."""
    import os

    import torch

    from mtl_study.study import use_cpu_threads

    before = torch.get_num_threads()
    cores = len(os.sched_getaffinity(0))
    try:
        assert use_cpu_threads(None, 1) == cores and torch.get_num_threads() == cores
        assert use_cpu_threads(None, cores * 4) == 1
        assert use_cpu_threads(1, 1) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError, match="--cpu_threads"):
        parse_recipe_args("r", ["--cpu_threads", "0", "--model_name_or_path", "x"])


@pytest.mark.parametrize("key,value", [("pooling", "bogus"), ("span_pooling", "sum"), ("window_aggregation", "median")])
def test_a_yaml_value_outside_an_options_choices_names_the_file_and_the_option(tmp_path, key, value):
    # argparse checks `choices` on the command line only; from a YAML file the value would reach the first run.
    with pytest.raises(ValueError, match=rf"--{key}: unknown value\(s\) \['{value}'\].*c\.yaml"):
        parse("--config", yaml_file(tmp_path, f"{key}: {value}\n"))


def test_arms_are_plain_distinct_architectures_and_tasks_not_empty(tmp_path):
    with pytest.raises(ValueError, match=r"--arms: unknown value\(s\) \['mtl@URW'\]"):
        parse("--arms", "mtl@URW")  # recipes derive such names themselves; given here it could never run
    with pytest.raises(ValueError, match="duplicated arm"):
        parse("--arms", "mtl", "mtl")
    with pytest.raises(ValueError, match="--tasks: name at least one task"):
        parse("--config", yaml_file(tmp_path, "tasks: []\n"))


def test_push_to_hub_needs_the_best_models_it_pushes():
    with pytest.raises(ValueError, match="needs --save_best_model true"):
        parse("--push_to_hub", "--hub_model_id", "me/mtl", "--save_best_model", "false")


def test_a_recipe_without_config_runs_its_shipped_yaml(tmp_path, capsys):
    """The YAMLs in recipes/configs are the recipes' defaults: no argument runs the shipped settings."""
    from ticket_router import TicketArguments

    from mtl_study.config import parse_recipe_args

    shipped = Path(__file__).resolve().parents[1] / "recipes" / "configs" / "ticket_router.yaml"
    args, training, _, tickets = parse_recipe_args("ticket_router", ["--output_dir", str(tmp_path)],
                                                   extra=[TicketArguments], shipped_config=shipped)
    assert training.learning_rate == 5e-4 and training.head_learning_rate == 3e-3 and len(args.seeds) == 8
    assert f"defaults from {shipped}" in capsys.readouterr().out
    other = tmp_path / "other.yaml"
    other.write_text("learning_rate: 0.001\n", encoding="utf-8")
    _, training, _, _ = parse_recipe_args("ticket_router", ["--config", str(other)], extra=[TicketArguments],
                                          shipped_config=shipped)
    assert training.learning_rate == 1e-3 and training.head_learning_rate is None  # --config replaces it whole
