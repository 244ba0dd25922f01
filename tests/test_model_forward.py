"""Forward pass of MultiTaskModel: one shared pass, span pooling, masked loss, padding independence, freezing."""

import pytest
import torch
from transformers import AutoTokenizer

from modeling import MultiTaskModel, MultiTaskOutput
from modeling.heads import pool_spans

TASKS = [
    {"name": "topic", "level": "document", "problem_type": "single_label_classification", "labels": ["a", "b", "c"]},
    {"name": "frames", "level": "document", "problem_type": "multi_label_classification", "labels": ["x", "y"]},
    {"name": "role", "level": "span", "problem_type": "single_label_classification", "labels": ["hero", "villain"]},
    {"name": "traits", "level": "span", "problem_type": "multi_label_classification", "labels": ["p", "q", "r"]},
]


@pytest.fixture(scope="module")
def tokenizer(tiny_backbone_dir):
    return AutoTokenizer.from_pretrained(tiny_backbone_dir)


@pytest.fixture()
def model(tiny_backbone_dir):
    torch.manual_seed(0)
    return MultiTaskModel.from_backbone(tiny_backbone_dir, TASKS, head_dropout=0.0).eval()


def _batch(tokenizer):
    encoded = tokenizer(["the hero saves the town", "a villain"], padding=True, return_tensors="pt")
    encoded["mention_spans"] = torch.tensor([[0, 2, 3], [0, 4, 6], [1, 2, 3]])
    return encoded


def test_one_backbone_pass_serves_every_hard_shared_head(model, tokenizer):
    calls = []
    handle = model.backbone.register_forward_hook(lambda module, args, output: calls.append(1))
    try:
        output = model(**_batch(tokenizer))
    finally:
        handle.remove()
    assert len(calls) == 1
    assert isinstance(output, MultiTaskOutput)
    assert output.logits["topic"].shape == (2, 3)
    assert output.logits["frames"].shape == (2, 2)
    assert output.logits["role"].shape == (3, 2)
    assert output.logits["traits"].shape == (3, 3)
    assert output.loss is None


def test_adapters_run_one_pass_per_task_with_its_own_adapter(tiny_backbone_dir, tokenizer):
    torch.manual_seed(0)
    model = MultiTaskModel.from_backbone(tiny_backbone_dir, TASKS[:2], sharing="adapters").eval()
    active = []
    layer = model._tuner_layers[0]
    handle = model.backbone.register_forward_hook(lambda module, args, output: active.append(layer.active_adapter))
    try:
        model(**_batch(tokenizer))
    finally:
        handle.remove()
    assert active == ["topic", "frames"]
    # Every adapter stays trainable after switching (PEFT's set_adapter would freeze the inactive ones).
    assert all(p.requires_grad for task in ("topic", "frames") for p in model.head_parameters(task))
    assert not any(p.requires_grad for p in model.shared_parameters(trainable_only=False))


def test_span_pooling_matches_hand_computation():
    torch.manual_seed(1)
    hidden = torch.randn(2, 7, 4)
    spans = torch.tensor([[0, 1, 4], [1, 0, 1], [1, 2, 7]])
    expected_mean = torch.stack([hidden[0, 1:4].mean(0), hidden[1, 0:1].mean(0), hidden[1, 2:7].mean(0)])
    expected_max = torch.stack([hidden[0, 1:4].amax(0), hidden[1, 0:1].amax(0), hidden[1, 2:7].amax(0)])
    torch.testing.assert_close(pool_spans(hidden, spans, "mean"), expected_mean)
    torch.testing.assert_close(pool_spans(hidden, spans, "max"), expected_max)
    assert pool_spans(hidden, torch.zeros(0, 3, dtype=torch.long), "mean").shape == (0, 4)


def test_span_head_reads_the_pooled_mention_states(model, tokenizer):
    batch = _batch(tokenizer)
    assert model(**batch).last_hidden_state is None
    output = model(**batch, output_hidden_states=True)
    hidden = output.last_hidden_state
    pooled = torch.stack([hidden[0, 2:3].mean(0), hidden[0, 4:6].mean(0), hidden[1, 2:3].mean(0)])
    torch.testing.assert_close(output.logits["role"], model.heads["role"](pooled))


def test_span_context_puts_the_window_next_to_the_mention(tiny_backbone_dir, tokenizer, tmp_path):
    torch.manual_seed(0)
    model = MultiTaskModel.from_backbone(tiny_backbone_dir, TASKS, head_dropout=0.0, span_context=True).eval()
    hidden_size = model.config.backbone_config.hidden_size
    assert model.heads["role"].classifier.in_features == 2 * hidden_size
    assert model.heads["topic"].classifier.in_features == hidden_size  # document heads are unchanged
    batch = _batch(tokenizer)
    output = model(**batch, output_hidden_states=True)
    hidden, mask = output.last_hidden_state, batch["attention_mask"].unsqueeze(-1).float()
    window = (hidden * mask).sum(1) / mask.sum(1)  # padding excluded
    pooled = torch.stack([torch.cat([hidden[0, 2:3].mean(0), window[0]]), torch.cat([hidden[0, 4:6].mean(0), window[0]]),
                          torch.cat([hidden[1, 2:3].mean(0), window[1]])])
    torch.testing.assert_close(output.logits["role"], model.heads["role"](pooled))
    model.save_pretrained(tmp_path)
    reloaded = MultiTaskModel.from_pretrained(tmp_path).eval()
    assert reloaded.config.span_context is True
    torch.testing.assert_close(reloaded(**batch).logits["traits"], output.logits["traits"])
    no_mentions = {k: v for k, v in batch.items() if k != "mention_spans"}
    assert model(**no_mentions).logits["role"].shape == (0, 2)


def test_absent_tasks_contribute_exactly_zero_and_get_no_gradient(model, tokenizer):
    model.train()
    batch = _batch(tokenizer)
    labels = {"topic": torch.tensor([2, -100]), "traits": torch.tensor([[1.0, 0.0, 1.0], [-100.0] * 3, [0.0, 1.0, 0.0]])}
    output = model(**batch, labels=labels)
    assert output.task_losses["frames"].item() == 0.0 and output.task_losses["role"].item() == 0.0
    assert output.task_counts["topic"].item() == 1 and output.task_counts["traits"].item() == 2
    assert output.task_counts["frames"].item() == 0
    assert torch.isfinite(output.loss)
    expected_topic = torch.nn.functional.cross_entropy(output.logits["topic"][:1], torch.tensor([2]))
    torch.testing.assert_close(output.task_losses["topic"], expected_topic)
    expected_traits = torch.nn.functional.binary_cross_entropy_with_logits(
        output.logits["traits"][[0, 2]], torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    )
    torch.testing.assert_close(output.task_losses["traits"], expected_traits)
    torch.testing.assert_close(output.loss, output.task_losses["topic"] + output.task_losses["traits"])
    torch.testing.assert_close(output.task_loss_sums["traits"], expected_traits * 2)
    output.loss.backward()
    for task in ("topic", "traits"):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.head_parameters(task))
    for task in ("frames", "role"):
        # Connected to the graph (DDP sees them used) but with an exactly-zero gradient.
        grads = [p.grad for p in model.head_parameters(task)]
        assert all(g is not None for g in grads)
        assert all(torch.count_nonzero(g) == 0 for g in grads)


def test_batch_without_any_label_gives_zero_loss_not_nan(model, tokenizer):
    batch = _batch(tokenizer)
    output = model(**batch, labels={"topic": torch.tensor([-100, -100])})
    assert output.loss.item() == 0.0
    output.loss.backward()


def test_class_weights_and_pos_weight(model, tokenizer):
    batch = _batch(tokenizer)
    labels = {"topic": torch.tensor([2, 0]), "frames": torch.tensor([[1.0, 0.0], [0.0, 1.0]])}
    plain = model(**batch, labels=labels)
    model.set_loss_options("topic", class_weights=[1.0, 1.0, 3.0])
    model.set_loss_options("frames", pos_weight=[2.0, 1.0])
    weighted = model(**batch, labels=labels)
    per_example = torch.nn.functional.cross_entropy(plain.logits["topic"], labels["topic"], reduction="none")
    torch.testing.assert_close(weighted.task_losses["topic"], (per_example * torch.tensor([3.0, 1.0])).mean())
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        plain.logits["frames"], labels["frames"], pos_weight=torch.tensor([2.0, 1.0])
    )
    torch.testing.assert_close(weighted.task_losses["frames"], expected)
    with pytest.raises(ValueError, match="pos_weight only applies"):
        model.set_loss_options("topic", pos_weight=[1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="needs 3 values"):
        model.set_loss_options("topic", class_weights=[1.0])


def test_logits_do_not_depend_on_padding(model, tokenizer):
    alone = tokenizer(["a villain"], return_tensors="pt")
    out_alone = model(**alone, mention_spans=torch.tensor([[0, 2, 3]]))
    out_batch = model(**_batch(tokenizer))
    for task in ("topic", "frames"):
        torch.testing.assert_close(out_batch.logits[task][1:], out_alone.logits[task], atol=1e-5, rtol=1e-4)
    for task in ("role", "traits"):
        torch.testing.assert_close(out_batch.logits[task][2:], out_alone.logits[task], atol=1e-5, rtol=1e-4)


def test_mean_pooling_padding_independent(tiny_backbone_dir, tokenizer):
    model = MultiTaskModel.from_backbone(tiny_backbone_dir, TASKS[:1], pooling="mean").eval()
    alone = model(**tokenizer(["a villain"], return_tensors="pt")).logits["topic"]
    batch = model(**tokenizer(["the hero saves the town", "a villain"], padding=True, return_tensors="pt"))
    torch.testing.assert_close(batch.logits["topic"][1:], alone, atol=1e-5, rtol=1e-4)


def test_invalid_inputs_raise_clear_errors(model, tokenizer):
    batch = _batch(tokenizer)
    with pytest.raises(ValueError, match="mention_spans"):
        model(**{**batch, "mention_spans": torch.tensor([[0, 3, 3]])})
    with pytest.raises(ValueError, match="mention_spans"):
        model(**{**batch, "mention_spans": torch.tensor([[2, 0, 1]])})
    with pytest.raises(ValueError, match="unknown task"):
        model(**batch, labels={"nope": torch.tensor([0, 0])})
    with pytest.raises(ValueError, match=r"labels\['topic'\].*shape"):
        model(**batch, labels={"topic": torch.tensor([0])})
    with pytest.raises(ValueError, match=r"class ids must be in \[0, 3\)"):
        model(**batch, labels={"topic": torch.tensor([0, 3])})
    with pytest.raises(ValueError, match=r"labels\['frames'\]: multi-hot values must be in \[0, 1\] or -100"):
        model(**batch, labels={"frames": torch.tensor([[1.0, 2.0], [-100.0, -100.0]])})


def test_a_half_precision_backbone_gets_heads_of_its_dtype(tiny_backbone_dir, tokenizer):
    model = MultiTaskModel.from_backbone(tiny_backbone_dir, TASKS, backbone_kwargs={"dtype": torch.bfloat16})
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    output = model(**_batch(tokenizer), labels={"topic": torch.tensor([0, 1])})
    assert all(logits.dtype == torch.bfloat16 for logits in output.logits.values()) and torch.isfinite(output.loss)


def test_num_frozen_layers_freezes_embeddings_and_lowest_layers(tiny_backbone_dir):
    model = MultiTaskModel.from_backbone(tiny_backbone_dir, TASKS[:1], num_frozen_layers=1)
    assert not any(p.requires_grad for p in model.backbone.embeddings.parameters())
    assert not any(p.requires_grad for p in model.backbone.encoder.layer[0].parameters())
    assert all(p.requires_grad for p in model.backbone.encoder.layer[1].parameters())
    assert all(p.requires_grad for p in model.heads.parameters())
    trainable_shared = model.shared_parameters()
    assert trainable_shared and all(p.requires_grad for p in trainable_shared)


def test_from_backbone_keeps_pretrained_weights(tiny_backbone_dir):
    from transformers import AutoModel

    reference = AutoModel.from_pretrained(tiny_backbone_dir).state_dict()
    for sharing in ("hard", "adapters"):
        model = MultiTaskModel.from_backbone(tiny_backbone_dir, TASKS[:1], sharing=sharing)
        state = model.backbone.state_dict()
        for key, value in reference.items():
            if key.startswith("pooler."):
                assert key not in state  # the unused pooler is dropped (unused parameters break DDP)
                continue
            if key not in state:  # LoRA wraps the attention projections
                key = key.replace(".weight", ".base_layer.weight").replace(".bias", ".base_layer.bias")
            torch.testing.assert_close(state[key], value, rtol=0, atol=0)
        if sharing == "adapters":
            lora_b = [v for k, v in state.items() if "lora_B" in k]
            assert lora_b and all(torch.count_nonzero(v) == 0 for v in lora_b)


@pytest.mark.parametrize(
    ("model_type", "options"),
    [
        ("distilbert", {"dim": 32, "n_layers": 2, "n_heads": 2, "hidden_dim": 64}),
        ("deberta-v2", {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}),
        ("roberta", {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}),
    ],
)
@pytest.mark.parametrize("sharing", ["hard", "adapters"])
def test_other_encoder_layouts_train_and_freeze(model_type, options, sharing):
    from transformers import AutoConfig

    from modeling import MultiTaskConfig

    config = MultiTaskConfig(
        backbone_config=AutoConfig.for_model(model_type, **options), tasks=TASKS, sharing=sharing, num_frozen_layers=1
    )
    model = MultiTaskModel(config)
    input_ids = torch.randint(5, 100, (2, 9))
    labels = {"topic": torch.tensor([0, 2]), "traits": torch.tensor([[1.0, 0.0, 1.0]])}
    output = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), mention_spans=torch.tensor([[1, 2, 5]]), labels=labels)
    output.loss.backward()
    layers = model._backbone_layers()
    assert len(layers) == 2
    assert not any(p.requires_grad for p in layers[0].parameters())
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    # Every trainable parameter takes part in the graph (DDP without find_unused_parameters).
    assert all(p.grad is not None for _, p in trainable), [n for n, p in trainable if p.grad is None]
    if sharing == "adapters":
        assert all("lora_" in n or n.startswith("heads.") for n, _ in trainable)
        assert any("lora_" in n for n, _ in trainable)


def test_gradient_checkpointing(tiny_backbone_dir, tokenizer):
    model = MultiTaskModel.from_backbone(tiny_backbone_dir, TASKS)
    model.gradient_checkpointing_enable()
    model.train()
    output = model(**_batch(tokenizer), labels={"role": torch.tensor([0, 1, -100])})
    output.loss.backward()
    assert model.backbone.encoder.layer[0].attention.self.query.weight.grad is not None
