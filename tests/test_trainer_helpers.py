"""Shared builders for the trainer tests (tasks, learnable synthetic encoded rows, tiny models, arguments).

Imported by tests/test_trainer_*.py and by the two-process worker; it holds no tests of its own.
The rows follow the encoded-dataset format of modeling.vocabulary, with labels that are deterministic functions of
"key" tokens so that a tiny random BERT can learn them within a few steps.
"""

from __future__ import annotations

import random

TOPIC_LABELS = ["sports", "politics", "science"]
TAG_LABELS = ["red", "green", "blue", "gold"]
ROLE_LABELS = ["Guardian", "Martyr", "Instigator", "Conspirator"]
ROLE_PARENTS = {"Guardian": "Protagonist", "Martyr": "Protagonist", "Instigator": "Antagonist", "Conspirator": "Antagonist"}

TASKS = [
    {"name": "topic", "level": "document", "problem_type": "single_label_classification", "labels": TOPIC_LABELS},
    {"name": "tags", "level": "document", "problem_type": "multi_label_classification", "labels": TAG_LABELS},
    {
        "name": "roles",
        "level": "span",
        "problem_type": "multi_label_classification",
        "labels": ROLE_LABELS,
        "parents": ROLE_PARENTS,
    },
]
TWO_TASKS = TASKS[:2]

TOPIC_TOKEN, TAG_TOKEN, ROLE_TOKEN = 2000, 2100, 2200


def make_rows(
    num_rows: int,
    seed: int = 0,
    labelled: tuple[str, ...] = ("topic", "tags", "roles"),
    start: int = 0,
    windows_per_document: int = 1,
    min_length: int = 10,
    max_length: int = 24,
    tasks: list[dict] | None = None,
) -> list[dict]:
    """Encoded rows; tasks not in `labelled` get -100 labels. Rows `start..start+num_rows` get unique indices."""
    rng = random.Random(seed)
    task_names = [task["name"] for task in (tasks or TASKS)]
    rows = []
    document_labels = {}
    for number in range(num_rows):
        index = start + number
        document = start + number // windows_per_document
        if document not in document_labels:
            document_labels[document] = (rng.randrange(3), [int(rng.random() < 0.4) for _ in TAG_LABELS])
        topic, tags = document_labels[document]
        length = rng.randint(min_length, max_length)
        ids = [101] + [rng.randint(1000, 1999) for _ in range(length - 2)] + [102]
        ids[1] = TOPIC_TOKEN + topic
        for tag, present in enumerate(tags):
            if present:
                ids[2 + tag] = TAG_TOKEN + tag
        spans, mention_index, roles = [], [], []
        for mention in range(rng.randint(0, 2)):
            position = 7 + 2 * mention
            role = rng.randrange(len(ROLE_LABELS))
            ids[position] = ROLE_TOKEN + role
            spans.append([position, position + 1])
            mention_index.append(index * 10 + mention)
            roles.append([float(label == role) for label in range(len(ROLE_LABELS))])
        row = {
            "input_ids": ids,
            "attention_mask": [1] * length,
            "document_index": document,
            "example_index": index,
            "window_index": number % windows_per_document,
            "mention_spans": spans,
            "mention_index": mention_index,
            "length": length,
        }
        if "topic" in task_names:
            row["labels.topic"] = topic if "topic" in labelled else -100
        if "tags" in task_names:
            row["labels.tags"] = [float(t) for t in tags] if "tags" in labelled else [-100.0] * len(TAG_LABELS)
        if "roles" in task_names:
            row["labels.roles"] = roles if "roles" in labelled else [[-100.0] * len(ROLE_LABELS) for _ in spans]
        rows.append(row)
    return rows


def make_dataset(*args, **kwargs):
    from datasets import Dataset

    return Dataset.from_list(make_rows(*args, **kwargs))


def make_model(backbone_dir: str, tasks=None, seed: int = 0, **options):
    import torch

    from modeling import MultiTaskModel

    torch.manual_seed(seed)
    return MultiTaskModel.from_backbone(backbone_dir, tasks or TASKS, head_dropout=0.0, **options)


def make_args(output_dir, **overrides):
    from modeling import MultiTaskTrainingArguments

    defaults = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=8,
        per_device_eval_batch_size=16,
        learning_rate=1e-3,
        num_train_epochs=2,
        logging_steps=2,
        save_strategy="no",
        eval_strategy="no",
        report_to=[],
        seed=0,
        disable_tqdm=True,
        use_cpu=True,
        dataloader_num_workers=0,
    )
    defaults.update(overrides)
    return MultiTaskTrainingArguments(**defaults)
