"""Loss-weighting strategies: each trains a tiny two-task model whose task losses fall; strategy mechanics."""

import numpy as np
import pytest
import torch
from test_trainer_helpers import TWO_TASKS, make_args, make_dataset, make_model

from modeling import MultiTaskTrainer
from modeling.loss_weighting import (
    DynamicWeightAverage,
    GradNormWeighting,
    PCGradWeighting,
    StaticWeighting,
    UncertaintyWeighting,
    balanced_loss_options,
)

STRATEGIES = ["static", "uncertainty", "gradnorm", "pcgrad", "dwa"]


def _train(tiny_backbone_dir, tmp_path, strategy, **overrides):
    model = make_model(tiny_backbone_dir, TWO_TASKS)
    train = make_dataset(16, seed=5, tasks=TWO_TASKS, labelled=("topic", "tags"))
    options = dict(loss_weighting=strategy, num_train_epochs=10, learning_rate=5e-3, logging_steps=4,
                   per_device_train_batch_size=8)
    options.update(overrides)
    trainer = MultiTaskTrainer(model=model, args=make_args(tmp_path, **options), train_dataset=train)
    trainer.train()
    return trainer, [entry for entry in trainer.state.log_history if "loss" in entry]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_each_strategy_lowers_every_task_loss(tiny_backbone_dir, tmp_path, strategy):
    trainer, logs = _train(tiny_backbone_dir, tmp_path, strategy)
    assert len(logs) == 5
    for task in ("topic", "tags"):
        first, last = logs[0][f"loss_{task}"], logs[-1][f"loss_{task}"]
        assert last < first, f"{strategy}: loss of {task} did not fall ({first:.4f} -> {last:.4f})"
        assert f"task_weight_{task}" in logs[-1]
    weights = [logs[-1][f"task_weight_{task}"] for task in ("topic", "tags")]
    if strategy == "uncertainty":
        # learned log-variances moved away from their initial 0 and the weights are exp(-s) (the logged one is what
        # the last step applied, before that step's own update of s: close to, not equal to, the final exp(-s))
        assert any(abs(logs[-1][f"log_variance_{t}"]) > 1e-3 for t in ("topic", "tags"))
        final = float(torch.exp(-trainer.loss_weighting.log_variances[0].detach()))
        assert weights[0] == pytest.approx(final, rel=1e-3) and weights[0] != pytest.approx(final, rel=1e-6)
    if strategy in ("gradnorm", "dwa"):
        assert sum(weights) == pytest.approx(2.0, rel=1e-4)
        assert weights[0] != pytest.approx(1.0, abs=1e-6)  # the strategy did act
    if strategy == "pcgrad":
        assert 0.0 <= logs[-1]["pcgrad_conflict_fraction"] <= 1.0


def test_warmup_keeps_equal_weights(tiny_backbone_dir, tmp_path):
    _, logs = _train(tiny_backbone_dir, tmp_path, "gradnorm", num_train_epochs=4, weighting_warmup_steps=4,
                     logging_steps=2)
    by_step = {entry["step"]: entry for entry in logs}
    # weights logged after step 2 are those of step 2 (< 4 warm-up steps): equal
    assert by_step[2]["task_weight_topic"] == by_step[2]["task_weight_tags"] == 1.0
    assert by_step[8]["task_weight_topic"] != pytest.approx(1.0, abs=1e-6)


def test_uncertainty_parameters_are_optimised(tiny_backbone_dir, tmp_path):
    trainer, _ = _train(tiny_backbone_dir, tmp_path, "uncertainty", num_train_epochs=2)
    optimised = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert all(id(p) in optimised for p in trainer.loss_weighting.task_log_variances)
    faster, _ = _train(tiny_backbone_dir, tmp_path / "fast", "uncertainty", num_train_epochs=2,
                       uncertainty_learning_rate=5e-2)
    group = trainer.optimizer.param_groups[-1]
    assert group["weight_decay"] == 0.0
    moved = lambda t: t.loss_weighting.log_variances.detach().abs().max().item()  # noqa: E731
    assert moved(faster) > 3 * moved(trainer)


def test_a_task_absent_from_a_step_keeps_its_learned_log_variance(tiny_backbone_dir, tmp_path):
    """Partial labels: in a step without 'tags', Adam's momentum from earlier steps must not move its log-variance
    (the task gives no evidence about its noise there), while the present task's keeps learning."""
    from datasets import Dataset
    from test_trainer_helpers import make_rows
    from transformers import TrainerCallback

    rows = make_rows(4, seed=5, tasks=TWO_TASKS, labelled=("topic", "tags"))
    rows += make_rows(8, seed=6, tasks=TWO_TASKS, labelled=("topic",), start=100)  # steps 2 and 3: no 'tags'
    seen = []

    class Record(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            seen.append(trainer.loss_weighting.log_variances.detach().clone())

    args = make_args(tmp_path, loss_weighting="uncertainty", max_steps=3, per_device_train_batch_size=4,
                     learning_rate=5e-3, uncertainty_learning_rate=5e-2, train_sampling_strategy="sequential")
    trainer = MultiTaskTrainer(model=make_model(tiny_backbone_dir, TWO_TASKS), args=args,
                               train_dataset=Dataset.from_list(rows), callbacks=[Record()])
    trainer.train()
    topic, tags = zip(*(values.tolist() for values in seen))
    assert tags[0] != 0.0 and tags[2] == tags[1] == tags[0]
    assert topic[0] != topic[1] != topic[2]


def test_uncertainty_state_saved_as_one_vector_loads_but_its_checkpoint_is_not_resumed(tmp_path):
    from modeling.loss_weighting import load_weighting_state

    weighting = UncertaintyWeighting(["a", "b"])
    weighting.load_state_dict({"log_variances": torch.tensor([0.25, -0.5])})
    assert weighting.log_variances.tolist() == [0.25, -0.5]
    # the optimizer state saved beside it has the old layout: a resume is refused with a message, not torch's
    path = str(tmp_path / "loss_weighting.pt")
    torch.save({"log_variances": torch.tensor([0.25, -0.5])}, path)
    with pytest.raises(ValueError, match="saved by an earlier version .* resume from a newer checkpoint or train again"):
        load_weighting_state(path)


def test_uncertainty_objective():
    weighting = UncertaintyWeighting(["a", "b"], init_log_variance=0.5)
    losses = {"a": torch.tensor(2.0), "b": torch.tensor(3.0)}
    value = weighting.combine(losses, step=0, first_micro_batch=True, active={"a": True, "b": False})
    expected = torch.exp(torch.tensor(-0.5)) * 5.0 + 0.25  # regulariser only for the active task
    assert value.item() == pytest.approx(expected.item(), rel=1e-6)
    later = weighting.combine(losses, step=0, first_micro_batch=False, active={"a": True, "b": True})
    assert later.item() == pytest.approx((torch.exp(torch.tensor(-0.5)) * 5.0).item(), rel=1e-6)


def test_dwa_weights_follow_loss_ratios():
    weighting = DynamicWeightAverage(["a", "b"], temperature=2.0)
    assert weighting.task_weights(0) == {"a": 1.0, "b": 1.0}
    weighting.after_epoch({"a": 1.0, "b": 1.0})
    weighting.after_epoch({"a": 0.5, "b": 1.0})  # 'a' learns fast, 'b' stalls -> 'b' gets more weight
    weights = weighting.task_weights(10)
    ratio = torch.softmax(torch.tensor([0.5, 1.0]) / 2.0, 0) * 2
    assert weights["a"] == pytest.approx(ratio[0].item()) and weights["b"] == pytest.approx(ratio[1].item())
    restored = DynamicWeightAverage(["a", "b"])
    restored.load_state_dict(weighting.state_dict())
    assert restored.task_weights(10) == pytest.approx(weights)


def test_gradnorm_moves_weight_to_the_slower_task():
    weighting = GradNormWeighting(["a", "b"], alpha=1.5, learning_rate=0.1)
    weighting.update({"a": 1.0, "b": 1.0}, {"a": 1.0, "b": 1.0})  # records L(0)
    weighting.update({"a": 1.0, "b": 1.0}, {"a": 0.2, "b": 0.9})  # 'b' trains slower -> larger target norm
    weights = weighting.task_weights(5)
    assert weights["b"] > 1.0 > weights["a"]
    assert sum(weights.values()) == pytest.approx(2.0)


def test_pcgrad_projection_removes_conflicts():
    weighting = PCGradWeighting(["a", "b"])
    g_a, g_b = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])
    combined = weighting.project({"a": g_a, "b": g_b}, step=0)
    # a projected on the normal plane of b: a - (a.b/|b|^2) b = [0.5, 0.5]; b on a's: [0, 1]
    torch.testing.assert_close(combined, torch.tensor([0.5, 1.5]))
    assert weighting.conflict_fraction == 1.0
    aligned = weighting.project({"a": g_a, "b": torch.tensor([1.0, 1.0])}, step=1)
    torch.testing.assert_close(aligned, torch.tensor([2.0, 1.0]))  # no conflict: plain sum


def test_static_weights_validate_names():
    assert StaticWeighting(["a", "b"], weights={"b": 3}).task_weights(0) == {"a": 1.0, "b": 3.0}
    with pytest.raises(ValueError, match="unknown tasks"):
        StaticWeighting(["a"], weights={"c": 1})


def test_balanced_class_weights_from_label_frequencies():
    from datasets import Dataset

    rows = [{"labels.topic": label, "labels.tags": tags} for label, tags in
            [(0, [1.0, 0.0]), (0, [1.0, 0.0]), (0, [0.0, 0.0]), (1, [1.0, 1.0]), (-100, [-100.0, -100.0])]]
    dataset = Dataset.from_list(rows)
    topic = {"name": "topic", "problem_type": "single_label_classification", "labels": ["x", "y", "z"]}
    tags = {"name": "tags", "problem_type": "multi_label_classification", "labels": ["p", "q"]}
    weights = balanced_loss_options(dataset, topic)["class_weights"]
    # scikit-learn's "balanced" over the classes present (x: 3, y: 1), and 1 for the unseen 'z'
    from sklearn.utils.class_weight import compute_class_weight

    expected = compute_class_weight("balanced", classes=np.array([0, 1]), y=np.array([0, 0, 0, 1]))
    torch.testing.assert_close(weights, torch.tensor([*expected, 1.0], dtype=torch.float32))
    torch.testing.assert_close(weights, torch.tensor([4 / (2 * 3), 4 / (2 * 1), 1.0]))
    pos_weight = balanced_loss_options(dataset, tags)["pos_weight"]
    torch.testing.assert_close(pos_weight, torch.tensor([1 / 3, 3.0]))


def test_class_weighting_reaches_the_model(tiny_backbone_dir, tmp_path):
    model = make_model(tiny_backbone_dir, TWO_TASKS)
    train = make_dataset(16, seed=5, tasks=TWO_TASKS, labelled=("topic", "tags"))
    trainer = MultiTaskTrainer(model=model, args=make_args(tmp_path, class_weighting="balanced"), train_dataset=train)
    options = trainer.model._loss_options
    assert options["topic"]["class_weights"].shape == (3,) and options["tags"]["pos_weight"].shape == (4,)


def test_a_model_from_model_init_gets_class_weights_and_the_probe_fit(tiny_backbone_dir, tmp_path):
    """`Trainer.train` builds a fresh model from `model_init`: the class weights and the heads' linear-probe fit
    must reach that model, not the one built for `__init__`."""
    from transformers import TrainerCallback

    class HeadAtStart(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            self.options, self.head = dict(model._loss_options), model.heads["topic"].classifier.weight.detach().clone()

    train = make_dataset(16, seed=5, tasks=TWO_TASKS, labelled=("topic", "tags"))
    seen = HeadAtStart()
    args = make_args(tmp_path, class_weighting="balanced", linear_probe_init=True, max_steps=1, learning_rate=1e-12)
    def model_init():
        torch.manual_seed(0)  # every model starts alike: a head that differs at train begin was fitted
        return make_model(tiny_backbone_dir, TWO_TASKS)

    trainer = MultiTaskTrainer(model_init=model_init, args=args, train_dataset=train, callbacks=[seen])
    first = trainer.model
    fresh_head = first.heads["topic"].classifier.weight.detach().clone()
    trainer.train()
    assert trainer.model is not first and set(seen.options) == {"topic", "tags"}
    assert not torch.allclose(seen.head, fresh_head)  # fitted by the probe (the first model's stays as built)
    torch.testing.assert_close(first.heads["topic"].classifier.weight, fresh_head)


def test_resume_restores_the_weighting_state(tiny_backbone_dir, tmp_path):
    """A run resumed from a checkpoint ends exactly where the uninterrupted run ends, learned weights included."""
    def run(output_dir, resume=None):
        model = make_model(tiny_backbone_dir, TWO_TASKS,
                           backbone_kwargs={"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0})
        args = make_args(output_dir, loss_weighting="uncertainty", max_steps=4, save_strategy="steps", save_steps=2,
                         learning_rate=5e-3, per_device_train_batch_size=4)
        trainer = MultiTaskTrainer(model=model, args=args,
                                   train_dataset=make_dataset(16, seed=5, tasks=TWO_TASKS, labelled=("topic", "tags")))
        trainer.train(resume_from_checkpoint=resume)
        return trainer

    full = run(tmp_path / "full")
    checkpoint = tmp_path / "full" / "checkpoint-2"
    saved = torch.load(checkpoint / "loss_weighting.pt", weights_only=True)
    saved = torch.stack([saved[f"task_log_variances.{index}"] for index in range(2)])
    assert not torch.equal(saved, full.loss_weighting.log_variances.detach())
    resumed = run(tmp_path / "resumed", resume=str(checkpoint))
    torch.testing.assert_close(resumed.loss_weighting.log_variances, full.loss_weighting.log_variances)
    torch.testing.assert_close(resumed.model.heads["topic"].classifier.weight, full.model.heads["topic"].classifier.weight)


def test_dwa_resumed_from_a_step_checkpoint_at_an_epoch_end_keeps_that_epoch(tiny_backbone_dir, tmp_path):
    """The checkpoint of an epoch's last step is written before `on_epoch_end`, and a resumed run skips that epoch:
    the epoch's losses must be in the checkpoint, or the resumed run weighs epoch 3 differently."""
    def run(output_dir, resume=None):
        model = make_model(tiny_backbone_dir, TWO_TASKS,
                           backbone_kwargs={"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0})
        args = make_args(output_dir, loss_weighting="dwa", per_device_train_batch_size=4, num_train_epochs=3,
                         save_strategy="steps", save_steps=4, logging_steps=4)
        trainer = MultiTaskTrainer(model=model, args=args,  # 16 rows / batch 4: 4 steps an epoch
                                   train_dataset=make_dataset(16, seed=5, tasks=TWO_TASKS, labelled=("topic", "tags")))
        trainer.train(resume_from_checkpoint=resume)
        return trainer

    full = run(tmp_path / "full")
    saved = torch.load(tmp_path / "full" / "checkpoint-4" / "loss_weighting.pt", weights_only=True)
    assert len(saved["_extra_state"]["history"]) == 1  # epoch 1's losses, saved with the checkpoint
    resumed = run(tmp_path / "resumed", resume=str(tmp_path / "full" / "checkpoint-4"))
    logged = [{k: v for k, v in entry.items() if k.startswith("task_weight_")}
              for trainer in (full, resumed) for entry in trainer.state.log_history if entry.get("step") == 12 and "loss" in entry]
    assert logged[0] == logged[1] and logged[0]["task_weight_topic"] != 1.0  # DWA at work in epoch 3, alike
    assert resumed.loss_weighting.history == full.loss_weighting.history


def test_logged_task_weights_are_those_the_step_applied(tiny_backbone_dir, tmp_path):
    """With warm-up 2, step 2 still weighs the tasks equally; weights logged at step 2 are those, not step 3's."""
    args = make_args(tmp_path, loss_weighting="static", task_weights=["topic=3"], weighting_warmup_steps=2,
                     max_steps=4, logging_steps=1, per_device_train_batch_size=4)
    trainer = MultiTaskTrainer(model=make_model(tiny_backbone_dir, TWO_TASKS), args=args,
                               train_dataset=make_dataset(16, seed=5, tasks=TWO_TASKS, labelled=("topic", "tags")))
    trainer.train()
    weights = {e["step"]: e["task_weight_topic"] for e in trainer.state.log_history if "task_weight_topic" in e}
    assert weights == {1: 1.0, 2: 1.0, 3: 3.0, 4: 3.0}


def test_non_finite_options_are_refused(tmp_path):
    for name, value in (("gradnorm_alpha", float("nan")), ("uncertainty_init", float("-inf")),
                        ("linear_probe_c", float("nan")),  # and transformers' own options
                        ("learning_rate", float("inf")), ("weight_decay", float("nan")), ("max_grad_norm", float("nan")),
                        ("warmup_steps", float("nan")), ("num_train_epochs", float("inf"))):
        with pytest.raises(ValueError, match=f"--{name} must be a finite number"):
            make_args(tmp_path, **{name: value})


def test_unknown_multi_label_entries_are_neither_positive_nor_negative():
    from datasets import Dataset

    # Label q is unknown (-100) on the first two rows and known once positive, once negative: pos_weight 1, not 3.
    rows = [{"labels.tags": tags} for tags in ([1.0, -100.0], [0.0, -100.0], [1.0, 1.0], [0.0, 0.0])]
    tags = {"name": "tags", "problem_type": "multi_label_classification", "labels": ["p", "q"]}
    pos_weight = balanced_loss_options(Dataset.from_list(rows), tags)["pos_weight"]
    torch.testing.assert_close(pos_weight, torch.tensor([1.0, 1.0]))



def test_the_weighting_state_is_in_a_checkpoint_before_it_is_whole(tiny_backbone_dir, tmp_path, monkeypatch):
    """Trainer writes trainer_state.json, the file that marks a checkpoint whole, inside `_save_checkpoint`: the
    weighting state must already be there, or a kill in between resumes with a fresh weighting."""
    import os

    from transformers import Trainer

    seen = []
    real = Trainer._save_checkpoint

    def checked(self, model, trial):
        folder = os.path.join(self.args.output_dir, f"checkpoint-{self.state.global_step}")
        seen.append(os.path.isfile(os.path.join(folder, "loss_weighting.pt")))
        return real(self, model, trial)

    monkeypatch.setattr(Trainer, "_save_checkpoint", checked)
    args = make_args(tmp_path, loss_weighting="uncertainty", max_steps=4, save_strategy="steps", save_steps=2)
    MultiTaskTrainer(model=make_model(tiny_backbone_dir, TWO_TASKS), args=args,
                     train_dataset=make_dataset(16, seed=5, tasks=TWO_TASKS, labelled=("topic", "tags"))).train()
    assert seen == [True, True]
