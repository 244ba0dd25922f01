"""MultiTaskConfig: defaults, JSON round trip, nested backbone config, validation errors naming the field."""

import pytest
from transformers import AutoConfig, BertConfig, DebertaV2Config, DistilBertConfig

from modeling import MultiTaskConfig, TaskSpec

BACKBONE = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
DOC = {"name": "topic", "labels": ["a", "b"]}


def make(**overrides):
    options = {"backbone_config": BACKBONE, "tasks": [DOC]}
    options.update(overrides)
    return MultiTaskConfig(**options)


def test_defaults_and_helpers():
    config = make(tasks=[DOC, TaskSpec(name="roles", level="span", problem_type="multi_label_classification", labels=["x"])])
    assert config.model_type == "multi_task"
    assert config.sharing == "hard" and config.pooling == "cls" and config.span_pooling == "mean"
    assert config.window_aggregation == "mean"
    assert config.max_length == 512 and config.stride == 128 and config.num_frozen_layers == 0
    assert config.task_names == ["topic", "roles"]
    assert config.get_task("topic") == {
        "name": "topic",
        "level": "document",
        "problem_type": "single_label_classification",
        "labels": ["a", "b"],
        "parents": None,
        "thresholds": None,
    }
    assert isinstance(config.tasks[1], dict)  # TaskSpec objects are stored as plain dicts
    assert config.num_labels_of("roles") == 1
    assert config.thresholds_of("roles") == [0.5]
    with pytest.raises(KeyError, match="unknown task 'nope'"):
        config.get_task("nope")


def test_max_length_defaults_to_backbone_positions():
    small = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=128)
    assert make(backbone_config=small, stride=32).max_length == 128


@pytest.mark.parametrize(
    "backbone",
    [
        BACKBONE,
        DistilBertConfig(dim=32, n_layers=2, n_heads=2, hidden_dim=64),
        DebertaV2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64),
        AutoConfig.for_model("roberta", hidden_size=32, num_hidden_layers=2, num_attention_heads=2),
    ],
    ids=lambda config: config.model_type,
)
def test_json_round_trip_with_any_encoder(tmp_path, backbone):
    tasks = [
        {"name": "frames", "problem_type": "multi_label_classification", "labels": ["x", "y"], "thresholds": [0.3, 0.7]},
        {"name": "role", "level": "span", "labels": ["hero", "villain"], "parents": {"hero": "good"}},
    ]
    config = make(backbone_config=backbone, tasks=tasks, sharing="adapters", head_hidden_size=16, num_frozen_layers=1)
    config.save_pretrained(tmp_path)
    loaded = MultiTaskConfig.from_pretrained(tmp_path)
    assert type(loaded.backbone_config) is type(backbone)
    assert loaded.backbone_config.hidden_size == backbone.hidden_size
    assert loaded.tasks == config.tasks
    assert loaded.adapter_config == config.adapter_config
    assert loaded.adapter_config["target_modules"]  # default LoRA query/value targets resolved per backbone
    assert loaded.to_dict() == {**config.to_dict(), "_name_or_path": loaded.to_dict()["_name_or_path"]}
    again = MultiTaskConfig.from_dict(config.to_dict())
    assert again.tasks == config.tasks and again.backbone_config.to_dict() == config.backbone_config.to_dict()


def test_backbone_config_from_dict():
    config = MultiTaskConfig(backbone_config=BACKBONE.to_dict(), tasks=[DOC])
    assert isinstance(config.backbone_config, BertConfig) and config.backbone_config.hidden_size == 32


def test_task_spec_round_trip():
    spec = TaskSpec(name="t", labels=["a", "b"])
    assert TaskSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError, match="unknown field"):
        TaskSpec.from_dict({"name": "t", "labels": ["a", "b"], "lables": []})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"tasks": [DOC, DOC]}, r"duplicate task name\(s\) \['topic'\]"),
        ({"tasks": [{"name": "t", "labels": []}]}, r"task 't'.*'labels' must be a non-empty list"),
        ({"tasks": [{"name": "t", "labels": ["a", "a"]}]}, r"task 't'.*duplicate label"),
        ({"tasks": [{"name": "t", "level": "sentence", "labels": ["a", "b"]}]}, r"task 't'.*unknown level 'sentence'"),
        ({"tasks": [{"name": "t", "problem_type": "regression", "labels": ["a", "b"]}]}, r"unknown problem_type"),
        ({"tasks": [{"name": "t", "labels": ["a"]}]}, r"single_label_classification task needs at least 2"),
        (
            {"tasks": [{"name": "t", "problem_type": "multi_label_classification", "labels": ["a", "b"], "thresholds": [0.5]}]},
            r"task 't'.*'thresholds' must have one value per label \(2\)",
        ),
        (
            {"tasks": [{"name": "t", "problem_type": "multi_label_classification", "labels": ["a"], "thresholds": [1.5]}]},
            r"threshold for label 'a' must be in \[0, 1\]",
        ),
        ({"tasks": [{"name": "t", "labels": ["a", "b"], "thresholds": [0.5, 0.5]}]}, r"only apply to multi_label"),
        ({"tasks": [{"name": "t", "labels": ["a", "b"], "parents": {"c": "x"}}]}, r"'parents' names unknown label"),
        ({"tasks": [{"name": "bad.name", "labels": ["a", "b"]}]}, r"tasks\[0\]\.name"),
        ({"tasks": [{"labels": ["a", "b"]}]}, r"missing the required field 'name'"),
        ({"tasks": {"name": "t"}}, r"tasks: must be a list"),
        ({"sharing": "soft"}, r"sharing: unknown mode 'soft'"),
        ({"pooling": "max"}, r"pooling: unknown value 'max'"),
        ({"span_pooling": "first"}, r"span_pooling: unknown value"),
        ({"window_aggregation": "sum"}, r"window_aggregation: unknown value .sum.; expected one of \[.mean., .max.\]"),
        ({"relative_threshold": 1.0}, r"relative_threshold: must be a float in \[0, 1\)"),
        ({"head_dropout": 1.5}, r"head_dropout"),
        ({"head_hidden_size": 0}, r"head_hidden_size"),
        ({"num_frozen_layers": 3}, r"num_frozen_layers: 3 is out of range; the backbone has 2 layers"),
        ({"num_frozen_layers": -1}, r"num_frozen_layers"),
        ({"max_length": 1024}, r"max_length: 1024 exceeds"),
        ({"stride": 300}, r"stride"),
        ({"sharing": "adapters", "adapter_config": {"r": 4}}, r"adapter_config.*peft_type"),
    ],
)
def test_invalid_configs_raise_clear_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        make(**overrides)


def test_set_thresholds_validates_and_stores():
    config = make(tasks=[DOC, {"name": "frames", "problem_type": "multi_label_classification", "labels": ["x", "y"]}])
    config.set_thresholds("frames", [0.25, 0.75])
    assert config.thresholds_of("frames") == [0.25, 0.75]
    assert config.get_task("frames")["thresholds"] == [0.25, 0.75]
    with pytest.raises(ValueError, match=r"'thresholds' must have one value per label \(2\)"):
        config.set_thresholds("frames", [0.5])
    with pytest.raises(ValueError, match="only apply to multi_label"):
        config.set_thresholds("topic", [0.5, 0.5])
    config.set_thresholds("frames", None)
    assert config.thresholds_of("frames") == [0.5, 0.5]


def test_stride_defaults_to_a_quarter_of_short_windows():
    assert make(max_length=64).stride == 16 and make(max_length=256).stride == 64 and make().stride == 128
    assert make(max_length=64, stride=8).stride == 8


def test_roberta_style_positions_leave_out_the_padding_offset():
    from transformers import RobertaConfig

    roberta = RobertaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                            max_position_embeddings=130, pad_token_id=1)
    assert make(backbone_config=roberta).max_length == 128
    with pytest.raises(ValueError, match="max_length: 130 exceeds the 128 positions the backbone can use"):
        make(backbone_config=roberta, max_length=130)


def test_a_backbone_config_dict_needs_a_known_model_type():
    with pytest.raises(ValueError, match="backbone_config.model_type: None is not a transformers model type"):
        make(backbone_config={"hidden_size": 32})
    with pytest.raises(ValueError, match="backbone_config.model_type: 'nope'"):
        make(backbone_config={"model_type": "nope"})


def test_numpy_and_torch_thresholds_are_stored_as_floats():
    import numpy as np
    import torch

    spec = {"name": "tags", "problem_type": "multi_label_classification", "labels": ["x", "y"]}
    for thresholds in (np.array([0.25, 0.5]), torch.tensor([0.25, 0.5]), [np.float32(0.25), np.float64(0.5)]):
        config = make(tasks=[{**spec, "thresholds": thresholds}], relative_threshold=np.float32(0.5))
        assert config.thresholds_of("tags") == [0.25, 0.5] and config.relative_threshold == 0.5
        config.to_json_string()  # plain floats: the config saves


def test_adapter_config_may_be_a_peft_config_or_its_dict(tmp_path):
    from peft import LoraConfig

    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"])
    for given in (lora, lora.to_dict()):  # to_dict() holds an enum and a set, which JSON cannot
        config = make(sharing="adapters", adapter_config=given)
        assert config.adapter_config["peft_type"] == "LORA" and config.adapter_config["target_modules"] == ["query", "value"]
        config.save_pretrained(tmp_path)
        assert MultiTaskConfig.from_pretrained(tmp_path).adapter_config["r"] == 4
