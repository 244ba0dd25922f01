"""MultiTaskCollator: dynamic padding, mention spans with batch rows, labels per task with -100 for missing."""

import pytest
import torch

from modeling import MultiTaskCollator, MultiTaskConfig

TASKS = [
    {"name": "topic", "labels": ["a", "b", "c"]},
    {"name": "frames", "problem_type": "multi_label_classification", "labels": ["x", "y"]},
    {"name": "role", "level": "span", "labels": ["hero", "villain"]},
    {"name": "traits", "level": "span", "problem_type": "multi_label_classification", "labels": ["p", "q", "r"]},
]

ROWS = [
    {
        "input_ids": [101, 7, 8, 9, 102],
        "attention_mask": [1, 1, 1, 1, 1],
        "token_type_ids": [0, 0, 0, 0, 0],
        "document_index": 4,
        "example_index": 10,
        "window_index": 0,
        "mention_spans": [[1, 2], [2, 4]],
        "mention_index": [0, 1],
        "labels.topic": 2,
        "labels.frames": [1.0, 0.0],
        "labels.role": [1, -100],
        "length": 5,
    },
    {
        "input_ids": [101, 5, 102],
        "attention_mask": [1, 1, 1],
        "token_type_ids": [0, 0, 0],
        "document_index": 5,
        "example_index": 11,
        "window_index": 0,
        "mention_spans": [[1, 2]],
        "mention_index": [2],
        "labels.topic": -100,
        "labels.frames": None,
        "labels.role": [0],
        "length": 3,
    },
]


def test_padding_spans_and_labels():
    batch = MultiTaskCollator(TASKS, pad_token_id=0)(ROWS)
    assert batch["input_ids"].tolist() == [[101, 7, 8, 9, 102], [101, 5, 102, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    assert batch["token_type_ids"].shape == (2, 5)
    assert batch["mention_spans"].tolist() == [[0, 1, 2], [0, 2, 4], [1, 1, 2]]
    assert batch["mention_index"].tolist() == [0, 1, 2]
    assert batch["document_index"].tolist() == [4, 5] and batch["example_index"].tolist() == [10, 11]
    labels = batch["labels"]
    assert set(labels) == {"topic", "frames", "role"}  # no row has traits: the task is absent
    assert labels["topic"].dtype == torch.long and labels["topic"].tolist() == [2, -100]
    assert labels["frames"].dtype == torch.float32 and labels["frames"].tolist() == [[1.0, 0.0], [-100.0, -100.0]]
    assert labels["role"].tolist() == [1, -100, 0]


@pytest.mark.parametrize("format_type", ["torch", "numpy"])
def test_rows_of_a_formatted_dataset(format_type):
    # set_format gives arrays, whose truth value is ambiguous: "spans or []" failed on them
    import datasets

    columns = ["input_ids", "attention_mask", "mention_spans", "mention_index", "labels.role", "labels.frames"]
    rows = [{key: row[key] for key in columns} for row in ROWS]
    rows[1]["labels.frames"] = [0.0, 1.0]
    dataset = datasets.Dataset.from_list(rows).with_format(format_type)
    batch = MultiTaskCollator(TASKS, pad_token_id=0)([dataset[0], dataset[1]])
    assert batch["mention_spans"].tolist() == [[0, 1, 2], [0, 2, 4], [1, 1, 2]]
    assert batch["labels"]["role"].tolist() == [1, -100, 0]


def test_feeds_the_model(tiny_backbone_dir):
    from modeling import MultiTaskModel

    model = MultiTaskModel.from_backbone(tiny_backbone_dir, TASKS)
    rows = [dict(row) for row in ROWS]
    rows[0]["labels.traits"] = [[1.0, 0.0, 0.0], None]
    batch = MultiTaskCollator(model.config, pad_to_multiple_of=8)(rows)
    assert batch["input_ids"].shape == (2, 8)
    assert batch["labels"]["traits"].tolist() == [[1.0, 0.0, 0.0], [-100.0] * 3, [-100.0] * 3]
    output = model(**batch)
    assert output.logits["role"].shape == (3, 2)
    assert torch.isfinite(output.loss) and output.task_counts["traits"].item() == 1


def test_rows_without_mentions_give_an_empty_span_tensor():
    rows = [{"input_ids": [101, 102], "attention_mask": [1, 1], "mention_spans": [], "labels.topic": 1}]
    batch = MultiTaskCollator(TASKS)(rows)
    assert batch["mention_spans"].shape == (0, 3)
    assert batch["labels"] == {"topic": torch.tensor([1])}


def test_bad_rows_raise_clear_errors():
    collator = MultiTaskCollator(MultiTaskConfig(tasks=TASKS))
    bad = [dict(ROWS[0], mention_spans=[[1, 9]], mention_index=[0], **{"labels.role": [0]})]
    with pytest.raises(ValueError, match=r"row 0 .*mention_spans\[0\] = \[1, 9\] is outside"):
        collator(bad)
    with pytest.raises(ValueError, match=r"column 'labels.role': 1 labels for 2 mention_spans"):
        collator([dict(ROWS[0], **{"labels.role": [1]})])
    with pytest.raises(ValueError, match=r"column 'labels.frames': expected 2 values"):
        collator([dict(ROWS[0], **{"labels.frames": [1.0]})])
