"""`MultiTaskModel.predict`: label names per task for raw texts, long texts windowed (never truncated).

Part of the model code copied next to every saved checkpoint (``trust_remote_code`` loading): imports only
torch/transformers and sibling modules, relatively.
"""

from collections.abc import Sequence
from typing import Any

import torch
from transformers import AutoTokenizer

from .vocabulary import DOCUMENT, MULTI_LABEL, SPAN, probabilities_from_logits
from .windowing import aggregate_document_scores, window_text


class PredictionMixin:
    """Inference methods of `MultiTaskModel` (expects `self.config`, `self.name_or_path`, `self.device`, `self(...)`)."""

    def _resolve_tokenizer(self, tokenizer):
        if tokenizer is not None:
            return tokenizer
        cached = getattr(self, "_default_tokenizer", None)
        if cached is not None and cached[0] == self.name_or_path:
            return cached[1]
        # Loaded as remote code (package absent), the folder's config needs its auto_map to resolve: trusting it
        # runs no code beyond the modeling files already executing.
        trust_remote_code = type(self).__module__.startswith("transformers_modules")
        try:
            loaded = AutoTokenizer.from_pretrained(self.name_or_path, trust_remote_code=trust_remote_code)
        except Exception as err:
            raise OSError(
                f"predict(): no tokenizer was passed and none could be loaded from {self.name_or_path!r} ({err}). "
                "Pass tokenizer=..., or save the tokenizer next to the model (tokenizer.save_pretrained(folder))."
            ) from err
        self._default_tokenizer = (self.name_or_path, loaded)
        return loaded

    def _checked_predict_inputs(self, texts, mentions) -> tuple[list[str], list]:
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"predict(): text {index} must be a str, got {type(text).__name__}: {text!r:.80}")
            if not text.strip():
                raise ValueError(f"predict(): text {index} is empty")
        if mentions is None:
            span_names = [task["name"] for task in self.config.tasks if task["level"] == SPAN]
            if span_names:
                raise ValueError(
                    f"predict(): mentions are required: span task(s) {span_names} classify entity mentions; pass "
                    "mentions=[[(start, end), ...] per text]"
                )
            mentions = [[] for _ in texts]
        mentions = list(mentions)
        if len(mentions) != len(texts):
            raise ValueError(f"predict(): got {len(texts)} texts but {len(mentions)} mention lists")
        return texts, mentions

    @torch.inference_mode()
    def predict(
        self,
        texts: str | Sequence[str],
        mentions: Sequence[Sequence[tuple[int, int]]] | None = None,
        tokenizer=None,
        batch_size: int = 16,
        return_scores: bool = False,
    ) -> list[dict[str, Any]]:
        """Label names per task for raw texts; long texts are windowed (`config.max_length`/`stride`), never truncated.

        Args:
            texts: list of texts (a single string is accepted and treated as a list of one).
            mentions: per text, a list of character `(start, end)` pairs (end exclusive, integers); required when
                the model has a span task.
            tokenizer: defaults to `AutoTokenizer.from_pretrained(self.name_or_path)` (a fast tokenizer).
            batch_size: windows per forward pass.
            return_scores: also return probabilities.

        Returns:
            One dict per text. Document task -> label name (single-label) or list of names (multi-label, labels
            whose probability >= the stored threshold, 0.5 by default); span task -> list with one such prediction
            per mention, in input order. With `return_scores=True` every prediction becomes
            `{"prediction": <as above>, "scores": {label: probability}}`. Document probabilities combine windows
            with `aggregate_document_scores` (`config.window_aggregation`).

        Raises:
            TypeError: a text that is not a str (the message names its index and type).
            ValueError: an empty text, a mention whose offsets are not integers or out of range (the message names
                the text index and the mention index), missing mentions for a span task.
        """
        texts, mentions = self._checked_predict_inputs(texts, mentions)
        if batch_size < 1:
            raise ValueError(f"predict(): batch_size must be >= 1, got {batch_size}")
        tokenizer = self._resolve_tokenizer(tokenizer)

        windows = []  # (text index, window dict)
        for index, (text, text_mentions) in enumerate(zip(texts, mentions)):
            try:
                text_windows = window_text(
                    tokenizer, text, text_mentions, max_length=self.config.max_length, stride=self.config.stride
                )
            except ValueError as err:
                raise ValueError(f"predict(): text {index}: {err}") from err
            windows.extend((index, window) for window in text_windows)

        was_training = self.training
        self.eval()
        document_logits = {task["name"]: [[] for _ in texts] for task in self.config.tasks if task["level"] == DOCUMENT}
        span_logits = {
            task["name"]: [[None] * len(text_mentions) for text_mentions in mentions]
            for task in self.config.tasks
            if task["level"] == SPAN
        }
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        try:
            for begin in range(0, len(windows), batch_size):
                chunk = windows[begin : begin + batch_size]
                batch, owners = self._pad_windows([window for _, window in chunk], pad_id)
                output = self(**batch)
                for name, per_text in document_logits.items():
                    values = output.logits[name].float().cpu()
                    for row, (text_index, _) in enumerate(chunk):
                        per_text[text_index].append(values[row])
                for name, per_text in span_logits.items():
                    values = output.logits[name].float().cpu()
                    for position, (row, mention_id) in enumerate(owners):
                        per_text[chunk[row][0]][mention_id] = values[position]
        finally:
            self.train(was_training)

        results = []
        for text_index in range(len(texts)):
            result = {}
            for task in self.config.tasks:
                name = task["name"]
                if task["level"] == DOCUMENT:
                    probabilities = aggregate_document_scores(
                        torch.stack(document_logits[name][text_index]), task["problem_type"],
                        aggregation=self.config.window_aggregation,
                    )
                    result[name] = self._decide(task, probabilities.tolist(), return_scores)
                else:
                    result[name] = [
                        self._decide(task, probabilities_from_logits(values, task["problem_type"]).tolist(), return_scores)
                        for values in span_logits[name][text_index]
                    ]
            results.append(result)
        return results

    def _pad_windows(self, windows: list[dict], pad_id: int):
        """Right-pad windows into model inputs; returns the batch and, per mention row, (window row, mention id)."""
        length = max(len(window["input_ids"]) for window in windows)
        device = self.device

        def padded(key, value):
            return torch.tensor(
                [window[key] + [value] * (length - len(window[key])) for window in windows], dtype=torch.long, device=device
            )

        batch = {"input_ids": padded("input_ids", pad_id), "attention_mask": padded("attention_mask", 0)}
        if all("token_type_ids" in window for window in windows):
            batch["token_type_ids"] = padded("token_type_ids", 0)
        spans, owners = [], []
        for row, window in enumerate(windows):
            for (start, end), mention_id in zip(window["mention_spans"], window["mention_ids"]):
                spans.append([row, start, end])
                owners.append((row, mention_id))
        batch["mention_spans"] = torch.tensor(spans, dtype=torch.long, device=device).reshape(-1, 3)
        return batch, owners

    def _decide(self, task: dict, probabilities: list[float], return_scores: bool):
        labels = task["labels"]
        if task["problem_type"] == MULTI_LABEL:
            thresholds = self.config.thresholds_of(task["name"])
            floor = self.config.relative_threshold * max(probabilities)  # see MultiTaskConfig.relative_threshold
            prediction = [label for label, p, t in zip(labels, probabilities, thresholds) if p >= t and p >= floor]
            if not prediction and self.config.top1_fallback:  # nothing passes: the top label, as in evaluation
                prediction = [labels[max(range(len(labels)), key=probabilities.__getitem__)]]
        else:
            prediction = labels[max(range(len(labels)), key=probabilities.__getitem__)]
        if not return_scores:
            return prediction
        return {"prediction": prediction, "scores": dict(zip(labels, (float(p) for p in probabilities)))}


__all__ = ["PredictionMixin"]
