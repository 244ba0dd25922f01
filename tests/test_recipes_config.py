"""Recipe option parsing: defaults that keep recipes apart, YAML defaults under command-line overrides."""

from mtl_study.config import ExperimentArguments, parse_recipe_args
from mtl_study.report import arm_colours


def test_each_recipe_writes_to_its_own_default_folder():
    (first,) = parse_recipe_args([ExperimentArguments], [], recipe="architecture_comparison")
    (second,) = parse_recipe_args([ExperimentArguments], [], recipe="label_granularity")
    assert first.output_dir == "outputs/architecture_comparison"
    assert second.output_dir == "outputs/label_granularity"
    (explicit,) = parse_recipe_args([ExperimentArguments], ["--output_dir", "elsewhere"], recipe="label_granularity")
    assert explicit.output_dir == "elsewhere"


def test_yaml_gives_defaults_and_the_command_line_wins(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("seeds: [3, 4]\nlearning_rate: 0.01\noutput_dir: from_yaml\n")
    (args,) = parse_recipe_args([ExperimentArguments], ["--config", str(config), "--seeds", "7"], recipe="r")
    assert args.seeds == [7] and args.learning_rate == 0.01 and args.output_dir == "from_yaml"


def test_an_arm_has_one_colour_in_every_figure():
    both = arm_colours(["stl", "mtl"])
    three = arm_colours(["mtl_adapters", "stl", "mtl", "mtl@CC"])
    assert both["mtl"] == three["mtl"] and both["stl"] == three["stl"]
    assert len(set(three.values())) == 4
