"""MultiTaskTrainer loss: masked per-task means, exact gradient accumulation, absent tasks, non-finite losses."""

import math

import pytest
import torch
import torch.nn.functional as F
from test_trainer_helpers import TASKS, make_args, make_dataset, make_model, make_rows

from modeling import MultiTaskCollator, MultiTaskTrainer
from modeling.trainer import NonFiniteLossError

NO_DROPOUT = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}


def _trainer(tiny_backbone_dir, tmp_path, tasks=TASKS, train_rows=None, **overrides):
    model = make_model(tiny_backbone_dir, tasks, backbone_kwargs=NO_DROPOUT)
    train = None
    if train_rows is not None:
        from datasets import Dataset

        train = Dataset.from_list(train_rows)
    return MultiTaskTrainer(model=model, args=make_args(tmp_path, **overrides), train_dataset=train)


def _mixed_rows():
    """8 rows; the first 4 and last 4 carry different numbers of labels for every task."""
    rows = make_rows(8, seed=3)
    for row in rows[:4]:
        row["labels.tags"] = [-100.0] * 4  # tags only labelled in the second half
    rows[0]["labels.topic"] = -100
    rows[5]["labels.topic"] = -100
    rows[6]["labels.topic"] = -100
    for row in rows[4:]:  # roles labelled only on the first mention of each row of the second half
        row["labels.roles"] = [labels if i == 0 else [-100.0] * 4 for i, labels in enumerate(row["labels.roles"])]
    return rows


def _hand_loss(model, batch):
    """Equal-weight sum over tasks of each task's mean loss over its labelled rows, computed independently."""
    model.eval()
    with torch.no_grad():
        outputs = model(**{k: v for k, v in batch.items() if k != "labels"})
    total = 0.0
    for task in TASKS:
        logits, target = outputs.logits[task["name"]].double(), batch["labels"][task["name"]]
        if task["problem_type"] == "single_label_classification":
            keep = target != -100
            losses = [F.cross_entropy(logits[i : i + 1], target[i : i + 1]).item() for i in range(len(target)) if keep[i]]
        else:
            losses = []
            for i in range(target.shape[0]):
                if (target[i] == -100).all():
                    continue
                p = torch.sigmoid(logits[i])
                y = target[i].double()
                losses.append(float(-(y * torch.log(p) + (1 - y) * torch.log(1 - p)).mean()))
        if losses:
            total += sum(losses) / len(losses)
    return total


def test_masked_loss_matches_hand_computed_value(tiny_backbone_dir, tmp_path):
    trainer = _trainer(tiny_backbone_dir, tmp_path)
    model = trainer.model
    batch = MultiTaskCollator(tasks=model.config)(_mixed_rows())
    expected = _hand_loss(model, batch)
    # Outside a training window: the per-batch masked mean.
    with torch.no_grad():
        loss = trainer.compute_loss(model, batch)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    # Inside a window of one micro-batch: the same value, now normalised by the window's counts.
    model.train()
    trainer.get_batch_samples(iter([batch]), 1, torch.device("cpu"))
    assert trainer._window_counts == {"topic": 5.0, "tags": 4.0, "roles": float(sum(
        1 for row in _mixed_rows() for labels in row["labels.roles"] if labels[0] != -100))}
    with torch.no_grad():
        windowed = trainer.compute_loss(model, batch)
    assert windowed.item() == pytest.approx(expected, rel=1e-5)


def _accumulated_gradients(trainer, micro_batches):
    """Run the Trainer's own step path (get_batch_samples + training_step per micro-batch); return the grads."""
    model = trainer.model
    model.zero_grad(set_to_none=True)
    trainer.create_optimizer()
    samples, _ = trainer.get_batch_samples(iter(micro_batches), len(micro_batches), torch.device("cpu"))
    for number, inputs in enumerate(samples):
        trainer.accelerator.gradient_state._set_sync_gradients(number == len(samples) - 1)
        trainer.training_step(model, inputs)
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("strategy", ["static", "uncertainty", "pcgrad"])
def test_gradient_accumulation_equals_one_big_batch(tiny_backbone_dir, tmp_path, strategy):
    rows = _mixed_rows()
    grads = {}
    for accumulation, chunks in ((1, [rows]), (2, [rows[:4], rows[4:]])):
        trainer = _trainer(tiny_backbone_dir, tmp_path / str(accumulation), loss_weighting=strategy,
                           gradient_accumulation_steps=accumulation)
        collate = MultiTaskCollator(tasks=trainer.model.config)
        grads[accumulation] = _accumulated_gradients(trainer, [collate(chunk) for chunk in chunks])
    assert grads[1].keys() == grads[2].keys() and len(grads[1]) > 10
    for name, gradient in grads[1].items():
        torch.testing.assert_close(grads[2][name], gradient, rtol=1e-4, atol=1e-6, msg=f"gradient of {name}")


def test_task_absent_from_every_batch_leaves_its_head_unchanged(tiny_backbone_dir, tmp_path):
    rows = make_rows(24, seed=1, labelled=("topic", "tags"))  # 'roles' never labelled (mentions exist)
    trainer = _trainer(tiny_backbone_dir, tmp_path, train_rows=rows, weight_decay=0.1, num_train_epochs=2)
    before = {name: p.detach().clone() for name, p in trainer.model.heads["roles"].named_parameters()}
    topic_before = trainer.model.heads["topic"].classifier.weight.detach().clone()
    trainer.train()
    for name, parameter in trainer.model.heads["roles"].named_parameters():
        assert torch.equal(parameter, before[name]), f"heads.roles.{name} changed although 'roles' had no labels"
    topic_after = trainer.model.heads["topic"].classifier.weight
    assert not torch.equal(topic_after, topic_before), "a labelled task's head must train"
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert logs and all(math.isfinite(entry["loss"]) for entry in logs)
    assert all("loss_roles" not in entry for entry in logs)  # no labelled item -> no (0/0) per-task loss logged
    assert all(math.isfinite(entry["loss_topic"]) for entry in logs)


def test_non_finite_loss_names_step_and_task(tiny_backbone_dir, tmp_path):
    trainer = _trainer(tiny_backbone_dir, tmp_path, train_rows=make_rows(16, seed=2), num_train_epochs=1)
    with torch.no_grad():
        for parameter in trainer.model.heads["tags"].parameters():
            parameter.fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match=r"task 'tags' at step 1\b"):
        trainer.train()


def test_per_task_losses_and_weights_are_logged(tiny_backbone_dir, tmp_path):
    trainer = _trainer(tiny_backbone_dir, tmp_path, train_rows=make_rows(16, seed=2), num_train_epochs=1,
                       logging_steps=1, task_weights=["topic=2"])
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 2
    for entry in logs:
        assert entry["task_weight_topic"] == 2.0 and entry["task_weight_tags"] == 1.0
        assert {"loss_topic", "loss_tags", "loss_roles"} <= entry.keys()
        # The logged total is the weighted sum of the logged per-task means (same items, same step).
        expected = 2 * entry["loss_topic"] + entry["loss_tags"] + entry["loss_roles"]
        assert entry["loss"] == pytest.approx(expected, rel=1e-4)


def test_unknown_task_in_weights_or_datasets_is_rejected(tiny_backbone_dir, tmp_path):
    with pytest.raises(ValueError, match=r"--task_weights names unknown tasks \['nope'\]"):
        _trainer(tiny_backbone_dir, tmp_path, task_weights=["nope=2"])
    rows = make_rows(4, seed=0)
    for row in rows:
        row["labels.sentiment"] = 1
    with pytest.raises(ValueError, match=r"train_dataset has label column\(s\) \['labels.sentiment'\]"):
        _trainer(tiny_backbone_dir, tmp_path, train_rows=rows)
    trainer = _trainer(tiny_backbone_dir, tmp_path)
    from datasets import Dataset

    with pytest.raises(ValueError, match=r"eval_dataset\['CC'\] has label column"):
        trainer.evaluate({"URW": make_dataset(4), "CC": Dataset.from_list(rows)})
