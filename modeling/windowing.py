"""Windowing of long texts into overlapping backbone-sized token windows, and aggregation of per-window scores.

Used by `MultiTaskModel.predict` and by data preparation, so training and inference cut texts identically.
Pure functions over a Hugging Face *fast* tokenizer (offset mappings are required); no `datasets` dependency.
This file is copied next to every saved checkpoint (``trust_remote_code`` loading): it imports nothing from
this repository.
"""

import bisect
from collections.abc import Sequence
from typing import Any

import numpy as np

from .vocabulary import MULTI_LABEL, SINGLE_LABEL, WINDOW_AGGREGATIONS  # noqa: F401 (re-exported)


def _check_mentions(text: str, mentions: Sequence[Sequence[int]]) -> list[tuple[int, int]]:
    checked = []
    for index, mention in enumerate(mentions):
        try:
            start, end = mention
        except (TypeError, ValueError):
            raise ValueError(
                f"mention {index}: expected a (start, end) pair of character offsets, got {mention!r}"
            ) from None
        # Offsets are refused, not truncated, unless they are integers (python or numpy): a float offset is
        # a bug upstream (e.g. a column read as float), and int() would silently move the mention.
        if not all(isinstance(value, (int, np.integer)) and not isinstance(value, bool) for value in (start, end)):
            raise ValueError(
                f"mention {index}: character offsets must be integers, got {mention!r} "
                f"({type(start).__name__}, {type(end).__name__})"
            )
        start, end = int(start), int(end)
        if not 0 <= start < end <= len(text):
            raise ValueError(
                f"mention {index} ({start}, {end}) is out of range for a text of {len(text)} characters "
                "(need 0 <= start < end <= len(text); offsets are python character offsets, end exclusive)"
            )
        checked.append((start, end))
    return checked


def _without_edge_space(text: str, start: int, end: int) -> tuple[int, int]:
    """``[start, end)`` less leading and trailing white space (unchanged when nothing else is left)."""
    core_start, core_end = start, end
    while core_start < core_end and text[core_start].isspace():
        core_start += 1
    while core_end > core_start and text[core_end - 1].isspace():
        core_end -= 1
    return (core_start, core_end) if core_start < core_end else (start, end)


def window_text(
    tokenizer,
    text: str,
    mentions: Sequence[Sequence[int]] = (),
    max_length: int = 512,
    stride: int = 128,
) -> list[dict[str, Any]]:
    """Cut `text` into overlapping token windows and place every mention in exactly one window.

    Args:
        tokenizer: a Hugging Face fast tokenizer (offset mappings are needed to locate mentions).
        text: the raw text (must not be empty).
        mentions: python character `(start, end)` pairs (end exclusive) of entity mentions in `text`.
        max_length: tokens per window, special tokens included.
        stride: tokens shared by consecutive windows.

    Returns:
        One dict per window, in text order: `input_ids`, `attention_mask`, (`token_type_ids` when the tokenizer
        produces them), `window_index`, `mention_spans` (list of `[start_token, end_token_exclusive]` positions
        in this window's `input_ids`) and `mention_ids` (indices into `mentions`, aligned with `mention_spans`).
        Each mention is assigned to the window that contains all its tokens and where it is most centred (the
        earliest such window on ties). A text that fits in `max_length` gives a single window.

    Raises:
        ValueError: empty text, a slow tokenizer, invalid `max_length`/`stride`, a mention out of range or
            covering no token, or a mention no window shows whole: longer than a window, or straddling a window
            boundary while longer than `stride` + 1 tokens (consecutive windows share `stride` tokens).
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if not text.strip():
        raise ValueError("text is empty (or whitespace only): there is nothing to encode")
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            f"window_text needs a fast tokenizer (offset mappings); got {type(tokenizer).__name__}. "
            "Load it with AutoTokenizer.from_pretrained(..., use_fast=True)."
        )
    num_special = tokenizer.num_special_tokens_to_add(pair=False)
    if max_length <= num_special + 1:
        raise ValueError(f"max_length={max_length} leaves no room for text after {num_special} special tokens")
    if not 0 <= stride < max_length - num_special:
        raise ValueError(
            f"stride={stride} must be in [0, max_length - special tokens) = [0, {max_length - num_special})"
        )
    spans = _check_mentions(text, mentions)

    encoding = tokenizer(
        text,
        truncation=True,
        max_length=max_length,
        stride=stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        return_special_tokens_mask=True,
    )
    num_windows = len(encoding["input_ids"])
    # Character range covered by each window's text tokens; the first/last window extend to the text edges so
    # that a mention in leading/trailing whitespace-adjacent text is still "inside" them.
    windows = []
    for w in range(num_windows):
        offsets = encoding["offset_mapping"][w]
        special = encoding["special_tokens_mask"][w]
        content = [i for i, is_special in enumerate(special) if not is_special and offsets[i][1] > offsets[i][0]]
        windows.append((offsets, content))

    # A window holds a mention when it holds the mention's characters without its edge white space ("zeta " at an
    # inner window edge: no token covers the space, so the window's character range ends before it).
    cores = [_without_edge_space(text, start, end) for start, end in spans]
    best: list[tuple[float, int, int, int] | None] = [None] * len(spans)  # (-centredness, window, start, end)
    for w, (offsets, content) in enumerate(windows):
        if not content:
            continue
        char_start = -1 if w == 0 else offsets[content[0]][0]
        char_end = len(text) + 1 if w == num_windows - 1 else offsets[content[-1]][1]
        first_position, last_position = content[0], content[-1]
        # Content tokens are in text order, so the tokens overlapping a mention are found by binary search.
        token_starts = [offsets[i][0] for i in content]
        token_ends = [offsets[i][1] for i in content]
        for m, (start, end) in enumerate(cores):
            if start < char_start or end > char_end:
                continue  # part of the mention lies outside this window
            first = bisect.bisect_right(token_ends, start)  # first token ending after the mention starts
            last = bisect.bisect_left(token_starts, end) - 1  # last token starting before the mention ends
            if first > last:
                continue
            token_start, token_end = content[first], content[last] + 1
            centredness = min(token_start - first_position, last_position - (token_end - 1))
            candidate = (-centredness, w, token_start, token_end)
            if best[m] is None or candidate < best[m]:
                best[m] = candidate

    for m, choice in enumerate(best):
        if choice is None:
            start, end = spans[m]
            snippet = text[start:end]
            snippet = snippet if len(snippet) <= 60 else snippet[:57] + "..."
            overlapping = any(
                offsets[i][0] < end and offsets[i][1] > start for offsets, content in windows for i in content
            )
            if overlapping:
                raise ValueError(
                    f"mention {m} ({start}, {end}) {snippet!r} does not fit whole in any window of "
                    f"max_length={max_length} tokens with stride={stride}: windows overlap by {stride} tokens, so a "
                    f"mention that straddles a window boundary is seen whole only when it is at most {stride + 1} "
                    "tokens long (raise --stride), and never when it is longer than a window (raise --max_length)"
                )
            raise ValueError(f"mention {m} ({start}, {end}) {snippet!r} covers no token (whitespace only?)")

    results = []
    for w in range(num_windows):
        assigned = sorted((choice[2], choice[3], m) for m, choice in enumerate(best) if choice[1] == w)
        window = {
            "input_ids": list(encoding["input_ids"][w]),
            "attention_mask": list(encoding["attention_mask"][w]),
        }
        if "token_type_ids" in encoding:
            window["token_type_ids"] = list(encoding["token_type_ids"][w])
        window["window_index"] = w
        window["mention_spans"] = [[start, end] for start, end, _ in assigned]
        window["mention_ids"] = [m for _, _, m in assigned]
        results.append(window)
    return results


def aggregate_document_scores(
    scores_per_window, problem_type: str, from_logits: bool = True, aggregation: str = "mean"
) -> np.ndarray:
    """Combine one document's per-window scores into document-level probabilities.

    Args:
        scores_per_window: array-like `[num_windows, num_labels]` (torch tensor, numpy array or nested lists) of
            logits (default) or probabilities (`from_logits=False`).
        problem_type: `"single_label_classification"`: mean over windows of the softmax probabilities.
            `"multi_label_classification"`: see `aggregation`.
        aggregation: multi-label only. `"mean"` (default): the sigmoid of the windows' mean logit (mean of the
            probabilities when given probabilities); with a linear head this is the head applied to the mean of
            the windows' pooled states. It is the estimate consistent with training, where every window carries
            its document's labels. `"max"`: max over windows of the probabilities (a label shown anywhere is
            present); with document-labelled windows it over-predicts (issue 14: on SemEval narratives, 0.40 vs
            0.48 samples-F1 for a window-level probe of the same features).

    Returns:
        float64 numpy array `[num_labels]` of probabilities.
    """
    if aggregation not in WINDOW_AGGREGATIONS:
        raise ValueError(f"unknown aggregation {aggregation!r}; expected one of {list(WINDOW_AGGREGATIONS)}")
    if hasattr(scores_per_window, "detach"):  # torch tensor, without importing torch here
        scores_per_window = scores_per_window.detach().float().cpu().numpy()
    scores = np.asarray(scores_per_window, dtype=np.float64)
    if scores.ndim == 1:
        scores = scores[None, :]
    if scores.ndim != 2 or scores.shape[0] == 0:
        raise ValueError(f"scores_per_window must have shape [num_windows >= 1, num_labels], got {scores.shape}")
    if problem_type == MULTI_LABEL:
        if aggregation == "mean":
            return 1.0 / (1.0 + np.exp(-scores.mean(axis=0))) if from_logits else scores.mean(axis=0)
        probabilities = 1.0 / (1.0 + np.exp(-scores)) if from_logits else scores
        return probabilities.max(axis=0)
    if problem_type == SINGLE_LABEL:
        if from_logits:
            shifted = scores - scores.max(axis=1, keepdims=True)
            exponentials = np.exp(shifted)
            probabilities = exponentials / exponentials.sum(axis=1, keepdims=True)
        else:
            probabilities = scores
        return probabilities.mean(axis=0)
    raise ValueError(f"unknown problem_type {problem_type!r}; expected {SINGLE_LABEL!r} or {MULTI_LABEL!r}")


__all__ = ["window_text", "aggregate_document_scores", "WINDOW_AGGREGATIONS"]
