"""Synthetic inputs of the benchmark (seeded): task shapes, labels, news-like articles at a given mention
density, marked-mention baseline inputs, length-sorted batches. Texts come from
:class:`data_prep.synthetic_text.TextGenerator` built on the tokenizer (one word is one token)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from data_prep.synthetic_text import TextGenerator


def ticket_tasks(num_tasks: int) -> list[dict[str, Any]]:
    """K document-level tasks shaped like a help-desk router: categories, urgency, multi-label tags."""
    shapes = [
        ("category", "single_label_classification", 8),
        ("urgency", "single_label_classification", 4),
        ("tags", "multi_label_classification", 6),
    ]
    tasks = []
    for index in range(num_tasks):
        name, problem, size = shapes[index % len(shapes)]
        if index >= len(shapes):
            name = f"{name}_{index}"
        tasks.append(
            {"name": name, "level": "document", "problem_type": problem,
             "labels": [f"{name}_{i}" for i in range(size)], "parents": None, "thresholds": None}
        )
    return tasks


def framing_tasks() -> list[dict[str, Any]]:
    """The two tasks of an entity-framing model: 20 document-level narratives (multi-label) and three roles per
    mention (span level), as in SemEval-2025 Task 10."""
    narratives = {"name": "narratives", "level": "document", "problem_type": "multi_label_classification",
                  "labels": [f"narrative_{i}" for i in range(20)], "parents": None, "thresholds": None}
    roles = {"name": "roles", "level": "span", "problem_type": "single_label_classification",
             "labels": ["Protagonist", "Antagonist", "Innocent"], "parents": None, "thresholds": None}
    return [narratives, roles]


def random_label(task: dict[str, Any], rng: np.random.Generator):
    labels = task["labels"]
    if task["problem_type"] == "multi_label_classification":
        return [label for label in labels if rng.random() < 0.25]
    return labels[int(rng.integers(len(labels)))]


@dataclass
class Article:
    doc_id: str
    text: str
    mentions: list[tuple[int, int]]  # python char offsets, end exclusive
    num_words: int


def synthetic_articles(
    generator: TextGenerator,
    num_articles: int,
    num_mentions: int,
    median_tokens: int,
    sigma: float = 0.45,
    position_beta: tuple[float, float] = (1.0, 1.6),
) -> list[Article]:
    """News-like articles at a given mention density.

    Lengths are log-normal around `median_tokens`; every article has at least one mention and the rest
    are spread uniformly over articles; mention positions follow Beta(`position_beta`) over the article
    (news names its actors early; (1, 1.6) puts about 14% of mentions beyond token 512 at this length
    distribution, as in the release; 10-18% across seeds). Mentions are 1-3 capitalised words.
    """
    if num_mentions < num_articles:
        raise ValueError(f"entity_mentions ({num_mentions}) must be >= entity_articles ({num_articles})")
    rng = generator.rng
    lengths = generator.lengths(num_articles, median_tokens, sigma, low=80, high=4 * median_tokens)
    counts = 1 + rng.multinomial(num_mentions - num_articles, [1 / num_articles] * num_articles)
    articles = []
    for index, (length, count) in enumerate(zip(lengths, counts)):
        length = int(length) - 2  # [CLS] and [SEP]
        words = generator.words(length)
        spans_by_start: dict[int, int] = {}
        for _ in range(int(count)):
            for _attempt in range(50):
                start = int(rng.beta(*position_beta) * (length - 3))
                size = int(rng.integers(1, 4))
                if all(start + size <= s or start >= s + n for s, n in spans_by_start.items()):
                    spans_by_start[start] = size
                    break
        for start, size in spans_by_start.items():
            for position in range(start, start + size):
                words[position] = words[position].capitalize()
        # char offsets of each word
        offsets, cursor = [], 0
        for word in words:
            offsets.append(cursor)
            cursor += len(word) + 1
        mentions = sorted(
            (offsets[start], offsets[start + size - 1] + len(words[start + size - 1]))
            for start, size in spans_by_start.items()
        )
        articles.append(Article(f"article_{index:04d}", " ".join(words), mentions, length))
    return articles


def synthetic_windows(tokenizer, count: int, length: int, seed: int) -> list[dict[str, Any]]:
    """`count` encoded windows of exactly `length` random word pieces (a full window, as long articles give),
    two mentions each, labelled for every task of :func:`framing_tasks` (rows as `encode_for_model` writes them)."""
    from modeling.vocabulary import label_column

    narratives, roles = framing_tasks()
    rng = np.random.default_rng(seed)
    # Word pieces from the upper part of the vocabulary: no special or unused tokens.
    low = min(1000, tokenizer.vocab_size // 2)
    rows = []
    for index in range(count):
        ids = [tokenizer.cls_token_id, *rng.integers(low, tokenizer.vocab_size, length - 2).tolist(),
               tokenizer.sep_token_id]
        rows.append({
            "input_ids": ids, "attention_mask": [1] * length, "token_type_ids": [0] * length,
            "mention_spans": [[5, 8], [length // 3, length // 3 + 2]], "mention_index": [0, 1],
            "example_index": index,
            label_column(narratives["name"]): rng.integers(0, 2, len(narratives["labels"])).astype(float).tolist(),
            label_column(roles["name"]): rng.integers(0, len(roles["labels"]), 2).tolist(),
        })
    return rows


def mark_mention(text: str, span: tuple[int, int], marker: str = "@") -> str:
    """The baseline's input: the text with its mention wrapped in markers ("typed entity marker" style)."""
    start, end = span
    return f"{text[:start]}{marker} {text[start:end]} {marker}{text[end:]}"


def batches_by_length(rows: list[dict[str, Any]], batch_size: int) -> list[list[dict[str, Any]]]:
    """Rows sorted by length and cut into batches (both sides of a comparison get the same treatment)."""
    ordered = sorted(rows, key=lambda row: len(row["input_ids"]))
    return [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]


def pad_batch(rows: list[dict[str, Any]], pad_id: int, device: torch.device, pad_to: int | None = None) -> dict[str, torch.Tensor]:
    """Right-pad token rows to the longest (or `pad_to`) and stack them as tensors."""
    length = pad_to or max(len(row["input_ids"]) for row in rows)
    batch: dict[str, torch.Tensor] = {}
    for key, pad in (("input_ids", pad_id), ("attention_mask", 0), ("token_type_ids", 0)):
        if key in rows[0]:
            batch[key] = torch.tensor([row[key] + [pad] * (length - len(row[key])) for row in rows], device=device)
    return batch

