"""No unsafe unpickling: every torch.load in the library loads with weights_only=True, and a planted pickle
payload in a checkpoint's loss-weighting state is refused on resume instead of executed."""

import ast
from pathlib import Path

import pytest
import torch
from test_trainer_helpers import TWO_TASKS, make_args, make_dataset, make_model

from modeling import MultiTaskTrainer

REPO = Path(__file__).resolve().parents[1]
LIBRARY_FOLDERS = ("modeling", "data_prep", "recipes")


def _unsafe_torch_loads(source: str) -> list[int]:
    """Line numbers of ``torch.load(...)`` calls without the keyword ``weights_only=True``."""
    unsafe = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        function = node.func
        if not (isinstance(function, ast.Attribute) and function.attr == "load"
                and isinstance(function.value, ast.Name) and function.value.id == "torch"):
            continue
        safe = any(keyword.arg == "weights_only" and isinstance(keyword.value, ast.Constant)
                   and keyword.value.value is True for keyword in node.keywords)
        if not safe:
            unsafe.append(node.lineno)
    return unsafe


def test_the_checker_finds_unsafe_calls():
    source = "import torch\na = torch.load(p)\nb = torch.load(p, weights_only=False)\nc = torch.load(p, weights_only=True)\n"
    assert _unsafe_torch_loads(source) == [2, 3]


def test_every_torch_load_uses_weights_only():
    files = [path for folder in LIBRARY_FOLDERS for path in sorted((REPO / folder).rglob("*.py"))]
    assert len(files) > 20 and any(path.name == "trainer.py" for path in files)
    offenders = [
        f"{path.relative_to(REPO)}:{line}"
        for path in files
        for line in _unsafe_torch_loads(path.read_text(encoding="utf-8"))
    ]
    assert not offenders, f"torch.load without weights_only=True at {offenders}"


class _FileCreatingPayload:
    """Unpickling this object calls open(marker, "w"): it creates a file when it executes."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _trainer(tiny_backbone_dir, output_dir):
    model = make_model(tiny_backbone_dir, TWO_TASKS)
    args = make_args(output_dir, loss_weighting="uncertainty", max_steps=2, save_strategy="steps", save_steps=1,
                     per_device_train_batch_size=4)
    train = make_dataset(8, seed=5, tasks=TWO_TASKS, labelled=("topic", "tags"))
    return MultiTaskTrainer(model=model, args=args, train_dataset=train)


def test_planted_pickle_in_the_checkpoint_is_not_executed_on_resume(tiny_backbone_dir, tmp_path):
    _trainer(tiny_backbone_dir, tmp_path / "run").train()
    checkpoint = tmp_path / "run" / "checkpoint-1"
    state_file = checkpoint / "loss_weighting.pt"
    # the saved state is plain tensors: it loads with weights_only=True
    assert set(torch.load(state_file, weights_only=True)) == {"task_log_variances.0", "task_log_variances.1"}

    # the payload is live: an unsafe load would run it
    probe = tmp_path / "probe_marker"
    torch.save(_FileCreatingPayload(probe), tmp_path / "probe.pt")
    torch.load(tmp_path / "probe.pt", weights_only=False).close()
    assert probe.exists()

    marker = tmp_path / "pwned_marker"
    torch.save(_FileCreatingPayload(marker), state_file)
    resumed = _trainer(tiny_backbone_dir, tmp_path / "resumed")
    with pytest.raises(ValueError, match=r"loss_weighting\.pt: cannot restore the loss-weighting state"):
        resumed.train(resume_from_checkpoint=str(checkpoint))
    assert not marker.exists(), "the planted pickle payload was executed"


def test_every_weighting_state_round_trips_with_weights_only(tmp_path):
    from modeling.loss_weighting import (
        DynamicWeightAverage,
        GradNormWeighting,
        load_weighting_state,
        save_weighting_state,
    )

    dwa = DynamicWeightAverage(["a", "b"])
    dwa.after_epoch({"a": 1.0, "b": 1.0})
    dwa.after_epoch({"a": 0.5, "b": 1.0})
    gradnorm = GradNormWeighting(["a", "b"], learning_rate=0.1)
    gradnorm.update({"a": 1.0, "b": 1.0}, {"a": 1.0, "b": 1.0})
    gradnorm.update({"a": 1.0, "b": 1.0}, {"a": 0.2, "b": 0.9})
    for weighting, fresh in ((dwa, DynamicWeightAverage(["a", "b"])), (gradnorm, GradNormWeighting(["a", "b"]))):
        path = str(tmp_path / f"{weighting.name}.pt")
        save_weighting_state(weighting, path)
        fresh.load_state_dict(load_weighting_state(path))
        assert fresh.task_weights(10) == pytest.approx(weighting.task_weights(10))
        assert fresh.task_weights(10) != pytest.approx({"a": 1.0, "b": 1.0})
