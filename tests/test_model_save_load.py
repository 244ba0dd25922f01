"""save_pretrained / from_pretrained round trips, AutoModel loading, remote-code loading, clear load errors."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from modeling import MultiTaskConfig, MultiTaskModel

TASKS = [
    {
        "name": "frames",
        "level": "document",
        "problem_type": "multi_label_classification",
        "labels": ["x", "y", "z"],
        "thresholds": [0.2, 0.5, 0.9],
    },
    {
        "name": "role",
        "level": "span",
        "problem_type": "single_label_classification",
        "labels": ["hero", "villain", "victim", "other"],
        "parents": {"hero": "protagonist", "villain": "antagonist"},
    },
]


def _inputs(tiny_backbone_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_backbone_dir)
    batch = tokenizer(["the hero saves the town", "a villain"], padding=True, return_tensors="pt")
    batch["mention_spans"] = torch.tensor([[0, 2, 3], [1, 2, 3]])
    return batch


def _trained_like(model):
    """Perturb every parameter so a round trip cannot pass by re-initialising to the same values."""
    torch.manual_seed(123)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.01)
    return model


@pytest.mark.parametrize("sharing", ["hard", "adapters"])
def test_round_trip_is_exact(tiny_backbone_dir, tmp_path, sharing):
    model = _trained_like(
        MultiTaskModel.from_backbone(tiny_backbone_dir, TASKS, sharing=sharing, head_hidden_size=16, span_pooling="max")
    ).eval()
    model.save_pretrained(tmp_path)
    for loader in (MultiTaskModel, AutoModel):
        loaded = loader.from_pretrained(tmp_path).eval()
        assert isinstance(loaded, MultiTaskModel)
        assert loaded.config.tasks == model.config.tasks
        assert loaded.config.sharing == sharing and loaded.config.span_pooling == "max"
        assert loaded.config.thresholds_of("frames") == [0.2, 0.5, 0.9]
        assert loaded.config.get_task("role")["parents"] == {"hero": "protagonist", "villain": "antagonist"}
        original_state, loaded_state = model.state_dict(), loaded.state_dict()
        assert original_state.keys() == loaded_state.keys()
        for key, value in original_state.items():
            assert torch.equal(value, loaded_state[key]), key
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        assert trainable == {n for n, p in loaded.named_parameters() if p.requires_grad}
        with torch.no_grad():
            before, after = model(**_inputs(tiny_backbone_dir)), loaded(**_inputs(tiny_backbone_dir))
        for task in ("frames", "role"):
            assert torch.equal(before.logits[task], after.logits[task])
    if sharing == "adapters":
        assert any(".lora_A.role." in key for key in loaded_state)
        assert any(".lora_B.frames." in key for key in loaded_state)
        assert loaded.config.adapter_config["r"] == 8


def test_saved_folder_carries_code_and_auto_map(tiny_backbone_dir, tmp_path):
    MultiTaskModel.from_backbone(tiny_backbone_dir, TASKS).save_pretrained(tmp_path)
    for name in ("configuration_multitask.py", "modeling_multitask.py", "windowing.py", "vocabulary.py", "heads.py",
                 "backbone.py", "predict.py", "loading.py"):
        assert (tmp_path / name).is_file(), name
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "multi_task"
    assert saved["auto_map"] == {
        "AutoConfig": "configuration_multitask.MultiTaskConfig",
        "AutoModel": "modeling_multitask.MultiTaskModel",
    }
    assert saved["backbone_config"]["model_type"] == "bert"
    assert saved["tasks"][0]["labels"] == ["x", "y", "z"]
    config = MultiTaskConfig.from_pretrained(tmp_path)
    assert config.to_dict()["tasks"] == saved["tasks"]


REMOTE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    sys.modules["modeling"] = None  # `import modeling` now raises ImportError: the package is not available
    import torch
    from transformers import AutoModel, AutoTokenizer
    try:
        import modeling  # noqa: F401
        raise SystemExit("modeling is importable: the test would prove nothing")
    except ImportError:
        pass
    folder = sys.argv[1]
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    assert "modeling" not in type(model).__module__.split(".")[0], type(model).__module__
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    batch = tokenizer(["the hero saves the town", "a villain"], padding=True, return_tensors="pt")
    batch["mention_spans"] = torch.tensor([[0, 2, 3], [1, 2, 3]])
    with torch.no_grad():
        logits = model(**batch).logits
    print(json.dumps({"module": type(model).__module__, "sharing": model.config.sharing,
                      "logits": {k: v.tolist() for k, v in logits.items()},
                      "predict": model.predict(["the hero saves the town"], mentions=[[(4, 8)]], return_scores=True)}))
    """
)


def run_without_package(script: str, folder, tmp_path) -> dict:
    """Run `script` in a fresh interpreter where `modeling` cannot be imported; returns its JSON output."""
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "hf_modules"), "HF_HUB_OFFLINE": "1"}
    env.pop("PYTHONPATH", None)
    result = subprocess.run(
        [sys.executable, "-c", script, str(folder)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("sharing", ["hard", "adapters"])
def test_remote_code_loading_without_the_package(tiny_backbone_dir, tmp_path, sharing):
    folder = tmp_path / "model"
    model = _trained_like(MultiTaskModel.from_backbone(tiny_backbone_dir, TASKS, sharing=sharing)).eval()
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_backbone_dir).save_pretrained(folder)
    remote = run_without_package(REMOTE_SCRIPT, folder, tmp_path)
    assert remote["module"].startswith("transformers_modules")
    assert remote["sharing"] == sharing
    with torch.no_grad():
        logits = model(**_inputs(tiny_backbone_dir)).logits
    for task, values in remote["logits"].items():
        torch.testing.assert_close(torch.tensor(values), logits[task], rtol=0, atol=1e-6)
    local = MultiTaskModel.from_pretrained(folder).predict(
        ["the hero saves the town"], mentions=[[(4, 8)]], return_scores=True
    )
    assert remote["predict"] == local


def test_missing_or_corrupt_files_name_the_folder_and_file(tiny_backbone_dir, tmp_path):
    folder = tmp_path / "model"
    MultiTaskModel.from_backbone(tiny_backbone_dir, TASKS).save_pretrained(folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated download
    with pytest.raises(OSError, match="model.safetensors") as error:
        MultiTaskModel.from_pretrained(folder)
    assert str(folder) in str(error.value)
    weights.unlink()
    with pytest.raises(OSError, match=str(folder)):
        MultiTaskModel.from_pretrained(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(Exception, match="config.json"):
        AutoModel.from_pretrained(folder)
    with pytest.raises(OSError, match="config.json"):
        MultiTaskModel.from_pretrained(folder)


def _add_task_to_saved_config(folder, name="stance"):
    config_path = folder / "config.json"
    saved = json.loads(config_path.read_text())
    saved["tasks"].append({"name": name, "level": "document", "problem_type": "single_label_classification",
                           "labels": ["favor", "against"], "parents": None, "thresholds": None})
    config_path.write_text(json.dumps(saved))


def test_missing_head_raises_naming_the_task_unless_allowed(tiny_backbone_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    from modeling.loading import MissingWeightsError

    folder = tmp_path / "model"
    model = _trained_like(MultiTaskModel.from_backbone(tiny_backbone_dir, TASKS)).eval()
    model.save_pretrained(folder)
    # A weights file that lost one configured head.
    weights = load_file(folder / "model.safetensors")
    save_file({k: v for k, v in weights.items() if not k.startswith("heads.role.")}, folder / "model.safetensors",
              metadata={"format": "pt"})
    for loader in (MultiTaskModel, AutoModel):
        with pytest.raises(MissingWeightsError, match=r"no head for task\(s\) \['role'\]"):
            loader.from_pretrained(folder)
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})

    # A task added to the saved config: refused, then accepted on purpose with a fresh head.
    _add_task_to_saved_config(folder)
    with pytest.raises(MissingWeightsError, match=r"\['stance'\].*allow_new_heads"):
        MultiTaskModel.from_pretrained(folder)
    with pytest.raises(ValueError, match="allow_new_heads: unknown task"):
        MultiTaskModel.from_pretrained(folder, allow_new_heads=["stanse"])
    for allow in (["stance"], "stance", True):
        loaded, info = MultiTaskModel.from_pretrained(folder, allow_new_heads=allow, output_loading_info=True)
        assert {k for k in info["missing_keys"]} == {"heads.stance.classifier.weight", "heads.stance.classifier.bias"}
        state = loaded.state_dict()
        for key, value in model.state_dict().items():
            assert torch.equal(state[key], value), key
        assert loaded.heads["stance"].classifier.weight.std() > 0  # initialised, not left empty
    # A missing backbone weight has no opt-in.
    save_file({k: v for k, v in weights.items() if "layer.1.output.dense" not in k}, folder / "model.safetensors",
              metadata={"format": "pt"})
    with pytest.raises(MissingWeightsError, match=r"backbone weight\(s\): backbone.encoder.layer.1.output.dense"):
        MultiTaskModel.from_pretrained(folder, allow_new_heads=True)


def test_tasks_given_at_load_time_keep_the_saved_labels_and_are_checked(tiny_backbone_dir, tmp_path):
    from modeling.configuration_multitask import TaskConfigError

    folder = tmp_path / "saved"
    MultiTaskModel.from_backbone(tiny_backbone_dir, TASKS).save_pretrained(folder)
    # Same number of labels, another order: the head's outputs would silently mean other classes.
    reordered = [{**TASKS[0], "labels": ["z", "y", "x"]}, TASKS[1]]
    with pytest.raises(ValueError, match=r"other labels for task 'frames': saved \['x', 'y', 'z'\], given \['z', 'y', 'x'\]"):
        MultiTaskModel.from_pretrained(folder, tasks=reordered)
    with pytest.raises(ValueError, match="other labels for task 'frames'"):
        MultiTaskModel.from_pretrained(folder, config=MultiTaskConfig.from_pretrained(folder, tasks=reordered))
    # Overrides are validated as a constructed config is (transformers sets them after construction).
    with pytest.raises(TaskConfigError, match="one value per label"):
        MultiTaskModel.from_pretrained(folder, tasks=[{**TASKS[0], "thresholds": [0.9, 7.0]}, TASKS[1]])
    with pytest.raises(TaskConfigError, match="relative_threshold"):
        MultiTaskConfig.from_pretrained(folder, relative_threshold=5.0)
    same = MultiTaskModel.from_pretrained(folder, tasks=[{**TASKS[0], "thresholds": [0.3, 0.3, 0.3]}, TASKS[1]])
    assert same.config.thresholds_of("frames") == [0.3, 0.3, 0.3]  # other thresholds, same labels: fine

