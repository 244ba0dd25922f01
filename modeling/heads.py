"""Task heads, the poolings that feed them, and the masked per-task losses.

Part of the model code copied next to every saved checkpoint (``trust_remote_code`` loading): imports only
torch and sibling modules, relatively.
"""

import torch
from torch import nn

from .losses import masked_task_loss_sum


class TaskHead(nn.Module):
    """Dropout -> (optional Linear + GELU + dropout) -> Linear to the task's labels."""

    def __init__(self, hidden_size: int, num_labels: int, dropout: float, inner_size: int | None = None):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        if inner_size:
            self.dense = nn.Linear(hidden_size, inner_size)
            self.activation = nn.GELU()
            hidden_size = inner_size
        else:
            self.dense = None
            self.activation = None
        self.classifier = nn.Linear(hidden_size, num_labels)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        hidden = self.dropout(pooled)
        if self.dense is not None:
            hidden = self.dropout(self.activation(self.dense(hidden)))
        return self.classifier(hidden)


def pool_document(hidden: torch.Tensor, attention_mask: torch.Tensor, mode: str) -> torch.Tensor:
    """`[B, L, H]` token states -> `[B, H]`: the first token (`"cls"`) or the mean over unpadded tokens (`"mean"`)."""
    if mode == "cls":
        return hidden[:, 0]
    mask = attention_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)


def pool_spans(hidden: torch.Tensor, mention_spans: torch.Tensor, mode: str) -> torch.Tensor:
    """Pool the token states of each mention, all mentions at once (no python loop over mentions).

    Args:
        hidden: `[B, L, H]` token states.
        mention_spans: `[M, 3]` rows `(batch_row, start_token, end_token_exclusive)`.
        mode: `"mean"` or `"max"` over each mention's tokens.

    Returns:
        `[M, H]`; `[0, H]` (still attached to `hidden`'s graph) when there are no mentions.
    """
    if mention_spans.shape[0] == 0:
        return hidden[:0, 0]
    rows, starts, ends = mention_spans.unbind(dim=-1)
    lengths = ends - starts
    # Gather a [M, longest mention, H] block; positions past a mention's end are masked out.
    offsets = torch.arange(int(lengths.max()), device=hidden.device)
    positions = (starts.unsqueeze(1) + offsets.unsqueeze(0)).clamp(max=hidden.shape[1] - 1)
    inside = offsets.unsqueeze(0) < lengths.unsqueeze(1)
    tokens = hidden[rows.unsqueeze(1), positions]
    if mode == "max":
        return tokens.masked_fill(~inside.unsqueeze(-1), torch.finfo(tokens.dtype).min).amax(dim=1)
    weights = inside.to(tokens.dtype).unsqueeze(-1)
    return (tokens * weights).sum(dim=1) / lengths.to(tokens.dtype).unsqueeze(1)


def with_span_context(span_pooled: torch.Tensor, hidden: torch.Tensor, attention_mask: torch.Tensor,
                      mention_spans: torch.Tensor) -> torch.Tensor:
    """`[M, 2H]`: each mention's pooled tokens next to its window, mean-pooled (`MultiTaskConfig.span_context`)."""
    context = pool_document(hidden, attention_mask, "mean")[mention_spans[:, 0]]
    return torch.cat([span_pooled, context], dim=-1)


def checked_spans(mention_spans, batch_size: int, length: int, device) -> torch.Tensor:
    """`mention_spans` as a validated `[M, 3]` long tensor (`[0, 3]` when None or empty)."""
    if mention_spans is None:
        return torch.zeros(0, 3, dtype=torch.long, device=device)
    spans = torch.as_tensor(mention_spans, device=device).long()
    if spans.numel() == 0:
        return spans.reshape(0, 3)
    if spans.dim() != 2 or spans.shape[1] != 3:
        raise ValueError(
            f"mention_spans: expected shape [M, 3] (batch_row, start_token, end_token_exclusive), got {tuple(spans.shape)}"
        )
    rows, starts, ends = spans.unbind(dim=-1)
    bad = (rows < 0) | (rows >= batch_size) | (starts < 0) | (ends <= starts) | (ends > length)
    if bool(bad.any()):
        first = spans[bad.nonzero()[0, 0]].tolist()
        raise ValueError(
            f"mention_spans: row {first} is invalid for a batch of {batch_size} x {length} tokens "
            "(need 0 <= batch_row < B and 0 <= start < end <= L)"
        )
    return spans


def absent_task_loss(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss sum and count of a task without labels in the batch: exactly 0, but connected to the graph so DDP
    sees every head used."""
    loss_sum = logits.new_zeros((), dtype=torch.float32) + logits.sum() * 0.0
    return loss_sum, torch.zeros((), dtype=torch.float32, device=logits.device)


def task_loss_sum(
    task: dict, logits: torch.Tensor, target, options: dict | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of per-example losses over the labelled examples/mentions of one task, and their (float) count:
    :func:`losses.masked_task_loss_sum` (the one masked loss, shared with evaluation) with the model's loss
    options (``class_weights``, ``pos_weight``)."""
    options = options or {}
    return masked_task_loss_sum(task, logits, target, class_weights=options.get("class_weights"),
                                pos_weight=options.get("pos_weight"))


__all__ = ["TaskHead", "pool_document", "pool_spans", "with_span_context", "checked_spans", "task_loss_sum",
           "absent_task_loss"]
