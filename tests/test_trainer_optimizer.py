"""Optimizer parameter groups (--head_learning_rate) and construction-time checks of the loss weighting."""

import pytest
from test_trainer_helpers import TWO_TASKS, make_args, make_dataset, make_model

from modeling import MultiTaskTrainer


def _rates(trainer):
    return {id(p): group["lr"] for group in trainer.optimizer.param_groups for p in group["params"]}


def test_head_learning_rate_gets_its_own_groups(tiny_backbone_dir, tmp_path):
    model = make_model(tiny_backbone_dir, TWO_TASKS)
    args = make_args(tmp_path, learning_rate=1e-4, head_learning_rate=3e-3, loss_weighting="uncertainty",
                     max_steps=1)
    trainer = MultiTaskTrainer(model=model, args=args,
                               train_dataset=make_dataset(8, seed=1, tasks=TWO_TASKS, labelled=("topic", "tags")))
    trainer.create_optimizer()
    rates = _rates(trainer)
    heads = {id(p) for task in ("topic", "tags") for p in model.head_parameters(task)}
    assert heads and all(rates[i] == 3e-3 for i in heads)
    encoder = [p for p in model.backbone.parameters() if p.requires_grad]
    assert encoder and all(rates[id(p)] == 1e-4 for p in encoder)
    assert all(rates[id(p)] == 3e-3 for p in trainer.loss_weighting.task_log_variances)
    assert {group["lr"] for group in trainer.optimizer.param_groups} == {1e-4, 3e-3}
    assert len(rates) == sum(1 for p in model.parameters() if p.requires_grad) + 2  # each parameter once
    # weight decay of every head parameter is the one of the group it came from
    decays = {group["weight_decay"] for group in trainer.optimizer.param_groups if group["lr"] == 3e-3}
    assert decays == {0.0, args.weight_decay} or decays == {0.0}
    trainer.train()  # the schedule runs over the split groups
    assert trainer.state.global_step == 1


def test_without_head_learning_rate_one_rate(tiny_backbone_dir, tmp_path):
    model = make_model(tiny_backbone_dir, TWO_TASKS)
    trainer = MultiTaskTrainer(model=model, args=make_args(tmp_path, learning_rate=2e-4))
    trainer.create_optimizer()
    assert set(_rates(trainer).values()) == {2e-4}


def test_gradnorm_without_trainable_shared_parameters_fails_at_construction(tiny_backbone_dir, tmp_path):
    pytest.importorskip("peft")
    model = make_model(tiny_backbone_dir, TWO_TASKS, sharing="adapters")
    assert not any(p.requires_grad for p in model.shared_parameters())
    with pytest.raises(ValueError, match="gradnorm needs trainable shared parameters.*sharing='adapters'"):
        MultiTaskTrainer(model=model, args=make_args(tmp_path, loss_weighting="gradnorm"))
    MultiTaskTrainer(model=model, args=make_args(tmp_path, loss_weighting="uncertainty"))  # fine without GradNorm
