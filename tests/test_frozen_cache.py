"""Frozen-prefix cache: forward on cached states equals a full pass; training with the cache equals training
without it; the cache file is computed once and reused."""

import numpy as np
import pytest
import torch
from datasets import Dataset
from transformers import AutoConfig

from modeling import MultiTaskCollator, MultiTaskConfig, MultiTaskModel
from modeling.frozen_cache import attach_frozen_prefix, frozen_prefix_applies, frozen_prefix_reason

TASKS = [
    {"name": "topic", "level": "document", "problem_type": "single_label_classification", "labels": ["a", "b", "c"]},
    {"name": "tags", "level": "document", "problem_type": "multi_label_classification", "labels": ["x", "y"]},
    {"name": "role", "level": "span", "problem_type": "single_label_classification", "labels": ["p", "q"]},
]


def make_rows(num_rows: int, seed: int = 0) -> list[dict]:
    """Windows of varied length (so batches are padded), each with a label per task and 1-2 mentions."""
    rng = np.random.default_rng(seed)
    rows = []
    for index in range(num_rows):
        length = int(rng.integers(8, 20))
        topic = int(rng.integers(0, 3))
        ids = [101] + [int(v) for v in rng.integers(1000, 3000, length - 2)] + [102]
        ids[1] = 2000 + topic  # a learnable signal
        spans = [[2, 4]] if index % 2 else [[2, 4], [5, 7]]
        rows.append({
            "input_ids": ids, "attention_mask": [1] * length, "token_type_ids": [0] * length,
            "document_index": index, "example_index": index, "mention_spans": spans,
            "mention_index": list(range(len(spans))),
            "labels.topic": topic, "labels.tags": [float(topic == 0), float(topic != 1)],
            "labels.role": [topic % 2] * len(spans),
        })
    return rows


def hard_model(backbone_dir, frozen=1, **options):
    torch.manual_seed(0)
    return MultiTaskModel.from_backbone(backbone_dir, TASKS, num_frozen_layers=frozen, **options)


def cached_batch(model, rows, collator):
    """The batch of `rows` with each row's prefix computed alone (no padding), as the cache stores it."""
    for row in rows:
        ids = torch.tensor([row["input_ids"]])
        states = model.frozen_prefix_states(ids, torch.ones_like(ids), torch.zeros_like(ids))
        row["prefix_hidden_states"] = states[0].numpy()
    return collator(rows)


def assert_same_outputs(model, batch):
    plain = {k: v for k, v in batch.items() if k != "prefix_hidden_states"}
    torch.manual_seed(7)
    full = model(**plain)
    torch.manual_seed(7)
    cached = model(**batch)
    for task in full.logits:
        torch.testing.assert_close(cached.logits[task], full.logits[task], rtol=0, atol=1e-5)
    torch.testing.assert_close(cached.loss, full.loss, rtol=0, atol=1e-5)


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("frozen", [1, 2])
def test_forward_on_cached_prefix_equals_full_forward(tiny_backbone_dir, mode, frozen):
    model = hard_model(tiny_backbone_dir, frozen=frozen, head_dropout=0.3)
    assert frozen_prefix_applies(model)
    getattr(model, mode)()
    if mode == "train":  # the frozen part stays in eval mode, the rest trains
        assert not model.backbone.embeddings.training and not model.backbone.encoder.layer[0].training
        assert model.heads.training and model.backbone.encoder.layer[1].training == (frozen == 1)
    batch = cached_batch(model, make_rows(6), MultiTaskCollator(tasks=model.config, pad_to_multiple_of=8))
    assert batch["prefix_hidden_states"].shape == (6, batch["input_ids"].shape[1], 32)
    assert_same_outputs(model, batch)
    if mode == "train" and frozen == 1:  # gradients flow into the layer above the prefix, not into the prefix
        model(**batch).loss.backward()
        assert model.backbone.encoder.layer[1].output.dense.weight.grad.abs().sum() > 0
        assert all(p.grad is None for p in model.backbone.encoder.layer[0].parameters())


@pytest.mark.parametrize(
    ("model_type", "options"),
    [
        ("distilbert", {"dim": 32, "n_layers": 2, "n_heads": 2, "hidden_dim": 64}),
        ("deberta-v2", {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}),
        ("roberta", {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}),
    ],
)
def test_other_encoder_layouts(model_type, options):
    torch.manual_seed(0)
    config = MultiTaskConfig(backbone_config=AutoConfig.for_model(model_type, **options), tasks=TASKS,
                             num_frozen_layers=1)
    model = MultiTaskModel(config).train()
    rows = make_rows(4)
    for row in rows:
        if model_type == "distilbert":
            del row["token_type_ids"]
        row["input_ids"] = [min(v, 500) for v in row["input_ids"]]
    collator = MultiTaskCollator(tasks=config)
    for row in rows:
        ids = torch.tensor([row["input_ids"]])
        types = None if model_type == "distilbert" else torch.zeros_like(ids)
        row["prefix_hidden_states"] = model.frozen_prefix_states(ids, torch.ones_like(ids), types)[0].numpy()
    assert_same_outputs(model, collator(rows))


def test_when_the_prefix_cannot_be_cached(tiny_backbone_dir):
    assert "num_frozen_layers is 0" in frozen_prefix_reason(hard_model(tiny_backbone_dir, frozen=0))
    adapters = hard_model(tiny_backbone_dir, frozen=1, sharing="adapters")  # LoRA sits in every layer
    assert "adapters sit in" in frozen_prefix_reason(adapters)
    # Adapters only above the frozen layer: the prefix is shared by every task and can be cached.
    upper_only = hard_model(
        tiny_backbone_dir, frozen=1, sharing="adapters",
        adapter_config={"peft_type": "LORA", "r": 4, "target_modules": ["query", "value"], "layers_to_transform": [1]},
    )
    assert frozen_prefix_applies(upper_only)
    batch = cached_batch(upper_only, make_rows(4), MultiTaskCollator(tasks=upper_only.config))
    assert_same_outputs(upper_only.train(), batch)
    model = hard_model(tiny_backbone_dir, frozen=1)
    model.backbone.embeddings.word_embeddings.weight.requires_grad_(True)
    assert "trainable" in frozen_prefix_reason(model)
    with pytest.raises(ValueError, match="prefix_hidden_states: the frozen prefix cannot be precomputed"):
        model(input_ids=torch.tensor([[101, 102]]), prefix_hidden_states=torch.zeros(1, 2, 32))
    with pytest.raises(ValueError, match=r"prefix_hidden_states: expected shape \[1, 2, 32\]"):
        hard_model(tiny_backbone_dir)(input_ids=torch.tensor([[101, 102]]), prefix_hidden_states=torch.zeros(1, 3, 32))


def test_collator_pads_the_prefix_column_and_checks_it():
    collator = MultiTaskCollator(tasks=TASKS)
    rows = make_rows(2)
    rows[0]["prefix_hidden_states"] = np.ones((len(rows[0]["input_ids"]), 4), dtype=np.float16)
    rows[1]["prefix_hidden_states"] = np.full((len(rows[1]["input_ids"]), 4), 2, dtype=np.float16)
    states = collator(rows)["prefix_hidden_states"]
    length = max(len(row["input_ids"]) for row in rows)
    assert states.shape == (2, length, 4) and states.dtype == torch.float16
    for row_number, row in enumerate(rows):
        assert torch.all(states[row_number, : len(row["input_ids"])] == row_number + 1)
        assert torch.all(states[row_number, len(row["input_ids"]):] == 0)
    rows[1]["prefix_hidden_states"] = rows[1]["prefix_hidden_states"][:-1]
    with pytest.raises(ValueError, match=r"row 1: prefix_hidden_states has shape \[\d+, 4\]"):
        collator(rows)
    del rows[1]["prefix_hidden_states"]
    with pytest.raises(ValueError, match="row 1: no 'prefix_hidden_states'"):
        collator(rows)


def count_encoder_calls(model):
    calls = []
    handle = model.backbone.encoder.layer[0].register_forward_hook(lambda *args: calls.append(1))
    return calls, handle


def test_attach_computes_once_and_reuses_the_cache_file(tiny_backbone_dir, tmp_path):
    dataset = Dataset.from_list(make_rows(10))
    model = hard_model(tiny_backbone_dir)
    calls, handle = count_encoder_calls(model)
    first = attach_frozen_prefix(model, dataset, tmp_path, batch_size=4)
    handle.remove()
    assert len(calls) == 3  # 10 windows in batches of 4
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".arrow"] == [first.cache_files[0]["filename"].split("/")[-1]]
    row = first[3]
    assert isinstance(row["prefix_hidden_states"], np.ndarray) and isinstance(row["input_ids"], list)
    assert row["prefix_hidden_states"].shape == (len(row["input_ids"]), 32)
    ids = torch.tensor([row["input_ids"]])
    expected = model.frozen_prefix_states(ids, torch.ones_like(ids), torch.zeros_like(ids))[0]
    torch.testing.assert_close(torch.from_numpy(row["prefix_hidden_states"].copy()), expected, rtol=0, atol=1e-6)

    # A fresh model with the same frozen weights (another arm / seed / process) reuses the file.
    other = hard_model(tiny_backbone_dir)
    with torch.no_grad():
        other.heads["topic"].classifier.weight.add_(1.0)  # heads differ: irrelevant to the prefix
    calls, handle = count_encoder_calls(other)
    again = attach_frozen_prefix(other, dataset, tmp_path, batch_size=4)
    handle.remove()
    assert calls == []
    np.testing.assert_array_equal(again[3]["prefix_hidden_states"], row["prefix_hidden_states"])
    # Different frozen weights, k or dtype: a new file.
    with torch.no_grad():
        other.backbone.encoder.layer[0].output.dense.bias.add_(0.1)
    attach_frozen_prefix(other, dataset, tmp_path, batch_size=4)
    half = attach_frozen_prefix(model, dataset, tmp_path, dtype=torch.float16)
    assert half[0]["prefix_hidden_states"].dtype == np.float16
    assert len([p for p in tmp_path.iterdir() if p.suffix == ".arrow"]) == 3
    with pytest.raises(ValueError, match="cannot be cached: num_frozen_layers is 0"):
        attach_frozen_prefix(hard_model(tiny_backbone_dir, frozen=0), dataset, tmp_path)


def test_a_file_for_other_rows_or_a_damaged_file_is_not_reused(tiny_backbone_dir, tmp_path):
    """`datasets`' fingerprint can stay the same for other rows (a module-level encoding function is hashed by
    name, so changed code keeps its fingerprint): the key is the rows' content. A truncated file is computed again."""
    model = hard_model(tiny_backbone_dir)
    dataset = Dataset.from_list(make_rows(10))
    first = attach_frozen_prefix(model, dataset, tmp_path, batch_size=4)
    changed = Dataset.from_list(make_rows(6, seed=1))
    changed._fingerprint = dataset._fingerprint  # what a changed encoding function leaves
    again = attach_frozen_prefix(model, changed, tmp_path, batch_size=4)
    assert again.num_rows == 6 and again[0]["input_ids"] == changed[0]["input_ids"]
    path, expected = first.cache_files[0]["filename"], first[3]["prefix_hidden_states"].copy()
    del first  # memory-mapped: do not read it past the truncation below
    with open(path, "r+b") as handle:
        handle.truncate(handle.seek(0, 2) // 2)
    repaired = attach_frozen_prefix(model, dataset, tmp_path, batch_size=4)
    np.testing.assert_array_equal(repaired[3]["prefix_hidden_states"], expected)


def train_and_evaluate(backbone_dir, output_dir, train_set, eval_set):
    from modeling import MultiTaskTrainer, MultiTaskTrainingArguments

    model = hard_model(backbone_dir, head_dropout=0.2)
    args = MultiTaskTrainingArguments(
        output_dir=str(output_dir), per_device_train_batch_size=4, per_device_eval_batch_size=8, learning_rate=1e-3,
        num_train_epochs=2, logging_steps=1, save_strategy="no", eval_strategy="no", report_to=[], seed=0,
        disable_tqdm=True, use_cpu=True,
    )
    trainer = MultiTaskTrainer(model=model, args=args, train_dataset=train_set, eval_dataset=eval_set)
    calls, handle = count_encoder_calls(model)
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    metrics = trainer.evaluate()
    handle.remove()
    return losses, metrics, len(calls)


def test_training_with_the_cache_equals_training_without(tiny_backbone_dir, tmp_path):
    train_set, eval_set = Dataset.from_list(make_rows(16, seed=1)), Dataset.from_list(make_rows(8, seed=2))
    losses, metrics, calls = train_and_evaluate(tiny_backbone_dir, tmp_path / "plain", train_set, eval_set)
    assert calls == 8 + 1  # 8 training steps, 1 evaluation batch
    prefix_model = hard_model(tiny_backbone_dir)  # the frozen weights are all the cache depends on
    results = {}
    for dtype in (torch.float32, torch.float16):
        cached_train = attach_frozen_prefix(prefix_model, train_set, tmp_path / "cache", dtype=dtype)
        cached_eval = attach_frozen_prefix(prefix_model, eval_set, tmp_path / "cache", dtype=dtype)
        results[dtype] = train_and_evaluate(tiny_backbone_dir, tmp_path / str(dtype), cached_train, cached_eval)
    cached_losses, cached_metrics, cached_calls = results[torch.float32]
    assert cached_calls == 0  # the frozen layer never ran: the trainer fed the cached states
    assert len(losses) == 8
    np.testing.assert_allclose(cached_losses, losses, rtol=0, atol=1e-5)
    numeric = [key for key, value in metrics.items() if isinstance(value, float) and "runtime" not in key
               and "per_second" not in key]
    assert "eval_topic_macro_f1" in numeric and "eval_loss" in numeric
    for key in numeric:
        assert cached_metrics[key] == pytest.approx(metrics[key], abs=1e-5), key
    half_losses, half_metrics, _ = results[torch.float16]
    worst = max(abs(half_metrics[key] - metrics[key]) for key in numeric)
    print(f"fp16 storage: max |metric difference| = {worst:.2e}, max |loss difference| = "
          f"{np.max(np.abs(np.subtract(half_losses, losses))):.2e}")
    assert worst <= 1e-4


REUSE_SCRIPT = """
import json, sys
import torch
from datasets import Dataset
sys.path.insert(0, sys.argv[3])
from test_frozen_cache import count_encoder_calls, hard_model, make_rows
from modeling.frozen_cache import attach_frozen_prefix
model = hard_model(sys.argv[1])
calls, handle = count_encoder_calls(model)
cached = attach_frozen_prefix(model, Dataset.from_list(make_rows(10)), sys.argv[2], batch_size=4)
print(json.dumps({"calls": len(calls), "first": cached[0]["prefix_hidden_states"][0, :4].tolist()}))
"""


def test_another_process_reuses_the_cache_file(tiny_backbone_dir, tmp_path):
    import json
    import os
    import subprocess
    import sys

    from conftest import REPO_ROOT

    def run() -> dict:
        result = subprocess.run(
            [sys.executable, "-c", REUSE_SCRIPT, tiny_backbone_dir, str(tmp_path), str(REPO_ROOT / "tests")],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        )
        assert result.returncode == 0, result.stderr[-3000:]
        return json.loads(result.stdout.strip().splitlines()[-1])

    first, second = run(), run()
    assert first["calls"] == 3 and second["calls"] == 0
    assert second["first"] == first["first"]
