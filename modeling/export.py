"""Export a hard-shared `MultiTaskModel` with all its heads as ONE ONNX graph, and check it against PyTorch.

One command::

    python -m modeling.export --model path/to/checkpoint --out model.onnx

The graph has one backbone pass feeding every head, so serving K tasks costs one encoder pass:

- inputs: ``input_ids`` [batch, sequence], ``attention_mask`` [batch, sequence], ``token_type_ids``
  [batch, sequence] (only when the backbone takes them) and, when the model has span-level tasks,
  ``mention_spans`` [mentions, 3] with rows ``(batch_row, start_token, end_token_exclusive)``. Every
  axis is dynamic: any batch size, any length up to the backbone's positions, any number of mentions
  (including 0).
- outputs: ``logits.<task>`` per task, in ``config.tasks`` order: [batch, C] for document tasks,
  [mentions, C] for span tasks.
- metadata (``onnx.ModelProto.metadata_props``): ``multi_task.tasks`` (the tasks as JSON, with labels,
  problem types and thresholds, so a server can decode logits without the Python package),
  ``multi_task.inputs`` / ``multi_task.outputs``, ``multi_task.max_length`` / ``multi_task.stride`` (how long
  texts were windowed in training), ``multi_task.window_aggregation`` (how a document's windows combine) and
  ``multi_task.relative_threshold`` and ``multi_task.top1_fallback`` (the multi-label decision rule, with the
  tasks' thresholds).

Export uses the `torch.export`-based exporter (``torch.onnx.export(..., dynamo=True)``). After export the
graph is run with onnxruntime on inputs of shapes other than the traced ones (several batch sizes,
lengths, padding and mention counts) and compared with PyTorch; the largest absolute difference must be
within ``atol`` (1e-4 by default) or `OnnxVerificationError` is raised.
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

logger = logging.getLogger(__name__)

DEFAULT_OPSET = 18
DEFAULT_ATOL = 1e-4
# Sentences of different lengths used to verify an export when a tokenizer is available.
_VERIFY_TEXTS = (
    "The printer on the third floor has stopped working again.",
    "Please reset my password.",
    "Officials said the agreement, signed on Monday after months of talks, would cut emissions by half "
    "before 2035, although several governments warned that the targets were not binding.",
    "VPN drops every ten minutes since the update; I restarted twice.",
)


class OnnxVerificationError(RuntimeError):
    """onnxruntime's outputs differ from PyTorch's by more than the tolerance."""


@dataclass
class OnnxExportResult:
    """What `export_onnx` wrote, and how closely onnxruntime reproduces PyTorch."""

    path: Path
    input_names: list[str]
    output_names: list[str]
    tasks: list[dict[str, Any]]
    max_abs_diff: float | None = None
    per_output_max_abs_diff: dict[str, float] = field(default_factory=dict)
    checked_shapes: list[dict[str, int]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "input_names": self.input_names,
            "output_names": self.output_names,
            "tasks": self.tasks,
            "max_abs_diff": self.max_abs_diff,
            "per_output_max_abs_diff": self.per_output_max_abs_diff,
            "checked_shapes": self.checked_shapes,
        }


def output_name(task: str) -> str:
    """Name of the ONNX output that carries `task`'s logits."""
    return f"logits.{task}"


def _backbone_module(model: nn.Module) -> nn.Module:
    """The shared encoder inside a MultiTaskModel (the first nested PreTrainedModel)."""
    from transformers import PreTrainedModel

    for name in ("backbone", getattr(model, "base_model_prefix", "") or "backbone"):
        module = getattr(model, name, None)
        if isinstance(module, nn.Module) and module is not model:
            return module
    for module in model.modules():
        if module is not model and isinstance(module, PreTrainedModel):
            return module
    raise ValueError(f"{type(model).__name__}: no backbone sub-model found")


def _backbone_takes_token_type_ids(model: nn.Module) -> bool:
    backbone = _backbone_module(model)
    forward = getattr(backbone, "get_base_model", lambda: backbone)().forward
    return "token_type_ids" in inspect.signature(forward).parameters


def _span_tasks(config) -> list[str]:
    return [task["name"] for task in config.tasks if task.get("level") == "span"]


def pool_spans_traceable(hidden: torch.Tensor, mention_spans: torch.Tensor, mode: str) -> torch.Tensor:
    """Span pooling written for `torch.export`: the same result as the model's `pool_spans`, no data-dependent shapes.

    The model's training-time pooling gathers a ``[M, longest mention, H]`` block, whose size depends on the
    *values* of `mention_spans` (not expressible in a static graph). Here each mention's tokens are selected
    with a ``[M, L]`` mask over the whole window instead, which works for any M (0 included) and L.
    """
    rows, starts, ends = mention_spans.unbind(dim=-1)
    positions = torch.arange(hidden.shape[1], device=hidden.device)
    inside = (positions.unsqueeze(0) >= starts.unsqueeze(1)) & (positions.unsqueeze(0) < ends.unsqueeze(1))
    tokens = hidden[rows]  # [M, L, H]
    if mode == "max":
        return tokens.masked_fill(~inside.unsqueeze(-1), torch.finfo(tokens.dtype).min).amax(dim=1)
    weights = inside.to(tokens.dtype).unsqueeze(-1)
    return (tokens * weights).sum(dim=1) / (ends - starts).clamp_min(1).to(tokens.dtype).unsqueeze(1)


class MultiTaskOnnxWrapper(nn.Module):
    """The inference path of a hard-shared MultiTaskModel, with positional inputs and tuple outputs.

    It composes the model's own parts (``encode`` -> the backbone, ``pool_document``, ``heads``) and swaps in
    `pool_spans_traceable`, because `MultiTaskModel.forward` validates `mention_spans` with data-dependent
    Python branches that `torch.export` cannot trace. `verify_onnx` compares the exported graph with
    `MultiTaskModel.forward` itself, so any divergence between the two paths fails the export.
    Returns one logits tensor per task in `config.tasks` order; no loss, no labels.
    """

    def __init__(self, model: nn.Module, use_token_type_ids: bool, use_mention_spans: bool):
        super().__init__()
        self.model = model
        self.tasks = [dict(task) for task in model.config.tasks]
        self.use_token_type_ids = use_token_type_ids
        self.use_mention_spans = use_mention_spans

    def forward(self, input_ids, attention_mask, *extra):
        from .heads import pool_document, with_span_context

        extra = list(extra)
        token_type_ids = extra.pop(0) if self.use_token_type_ids else None
        mention_spans = extra.pop(0) if self.use_mention_spans else None
        config = self.model.config
        hidden = self.model.encode(input_ids, attention_mask, token_type_ids)  # one pass serves every head
        document_pooled = span_pooled = None
        logits = []
        for task in self.tasks:
            if task["level"] == "span":
                if span_pooled is None:
                    span_pooled = pool_spans_traceable(hidden, mention_spans, config.span_pooling)
                    if config.span_context:  # as MultiTaskModel.forward
                        span_pooled = with_span_context(span_pooled, hidden, attention_mask, mention_spans)
                pooled = span_pooled
            else:
                if document_pooled is None:
                    document_pooled = pool_document(hidden, attention_mask, config.pooling)
                pooled = document_pooled
            logits.append(self.model.heads[task["name"]](pooled))
        return tuple(logits)


def _input_names(use_token_type_ids: bool, use_mention_spans: bool) -> list[str]:
    names = ["input_ids", "attention_mask"]
    if use_token_type_ids:
        names.append("token_type_ids")
    if use_mention_spans:
        names.append("mention_spans")
    return names


def make_example_inputs(
    batch_size: int,
    seq_len: int,
    num_mentions: int,
    vocab_size: int,
    input_names: Sequence[str],
    *,
    pad_last_row: bool = True,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Random but well-formed model inputs of the given shape (CPU, int64).

    The last row is padded to about half length when `pad_last_row` (so padding handling is exercised);
    mentions lie inside each row's non-padding tokens and are 1-4 tokens long.
    """
    if seq_len < 4:
        raise ValueError(f"seq_len must be >= 4, got {seq_len}")
    generator = generator or torch.Generator().manual_seed(0)
    low = 1000 if vocab_size > 1100 else 1  # above BERT's special and unused ids when the vocabulary has room
    input_ids = torch.randint(low, max(low + 1, vocab_size - 1), (batch_size, seq_len), generator=generator)
    attention_mask = torch.ones(batch_size, seq_len, dtype=torch.long)
    lengths = [seq_len] * batch_size
    if pad_last_row and batch_size > 1:
        lengths[-1] = max(4, seq_len // 2)
        attention_mask[-1, lengths[-1] :] = 0
        input_ids[-1, lengths[-1] :] = 0
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    if "token_type_ids" in input_names:
        inputs["token_type_ids"] = torch.zeros(batch_size, seq_len, dtype=torch.long)
    if "mention_spans" in input_names:
        rows = []
        for index in range(num_mentions):
            row = index % batch_size
            usable = lengths[row] - 1  # keep off the final special token
            start = int(torch.randint(1, max(2, usable - 1), (1,), generator=generator))
            end = min(usable, start + 1 + int(torch.randint(0, 4, (1,), generator=generator)))
            rows.append([row, start, max(end, start + 1)])
        inputs["mention_spans"] = torch.tensor(rows, dtype=torch.long).reshape(-1, 3)
    return inputs


def _load_model(model_or_path) -> nn.Module:
    if isinstance(model_or_path, nn.Module):
        return model_or_path
    path = Path(model_or_path)
    if not path.exists():
        raise FileNotFoundError(f"--model {path}: no such checkpoint folder")
    from .modeling_multitask import MultiTaskModel

    return MultiTaskModel.from_pretrained(str(path))


def _load_tokenizer(tokenizer, model_or_path, model):
    if tokenizer is not None and not isinstance(tokenizer, (str, os.PathLike)):
        return tokenizer
    from transformers import AutoTokenizer

    candidates = [tokenizer] if tokenizer is not None else []
    if not isinstance(model_or_path, nn.Module):
        candidates.append(model_or_path)
    candidates.append(getattr(model, "name_or_path", None))
    for candidate in candidates:
        if not candidate:
            continue
        try:
            return AutoTokenizer.from_pretrained(str(candidate))
        except (OSError, ValueError):
            continue
    return None


def _verification_inputs(model, input_names, tokenizer, max_length: int) -> list[dict[str, torch.Tensor]]:
    """Inputs whose shapes differ from the traced example: several batch sizes, lengths, mention counts."""
    vocab_size = model.config.backbone_config.vocab_size
    generator = torch.Generator().manual_seed(1234)
    cases = [(1, 9, 0), (3, 37, 5), (5, min(max_length, 130), 1), (2, 64, 0)]
    batches = [
        make_example_inputs(b, min(length, max_length), m, vocab_size, input_names, generator=generator)
        for b, length, m in cases
    ]
    if tokenizer is not None:
        encoded = tokenizer(list(_VERIFY_TEXTS), padding=True, truncation=True, max_length=max_length,
                            return_tensors="pt")
        real = {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}
        if "token_type_ids" in input_names:
            real["token_type_ids"] = encoded.get("token_type_ids", torch.zeros_like(encoded["input_ids"]))
        if "mention_spans" in input_names:
            lengths = encoded["attention_mask"].sum(1).tolist()
            spans = [[row, 1, min(3, lengths[row] - 1)] for row in range(len(lengths))]
            spans += [[2, 4, min(9, lengths[2] - 1)], [2, 10, min(12, lengths[2] - 1)]]
            # short windows (max_length < 16) leave no room for the later spans: keep the well-formed ones
            real["mention_spans"] = torch.tensor([span for span in spans if span[1] < span[2]], dtype=torch.long)
        batches.append(real)
    return batches


def verify_onnx(
    model: nn.Module,
    onnx_path: str | os.PathLike,
    batches: Sequence[dict[str, torch.Tensor]],
) -> tuple[float, dict[str, float], list[dict[str, int]]]:
    """Run `batches` through PyTorch and onnxruntime; return (max abs diff, per-output max, shapes checked)."""
    import numpy as np
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    onnx_inputs = [node.name for node in session.get_inputs()]
    onnx_outputs = [node.name for node in session.get_outputs()]
    task_names = list(model.config.task_names)
    per_output = {name: 0.0 for name in onnx_outputs}
    shapes = []
    model = model.eval()
    for batch in batches:
        missing = [name for name in onnx_inputs if name not in batch]
        if missing:
            raise ValueError(f"verification batch lacks ONNX inputs {missing}")
        with torch.inference_mode():
            reference = model(**{name: batch[name] for name in onnx_inputs})
        results = session.run(onnx_outputs, {name: batch[name].cpu().numpy() for name in onnx_inputs})
        for task, name, got in zip(task_names, onnx_outputs, results):
            expected = reference.logits[task].float().cpu().numpy()
            if got.shape != expected.shape:
                raise OnnxVerificationError(
                    f"{name}: onnxruntime shape {got.shape} != PyTorch shape {expected.shape} "
                    f"for inputs {[tuple(batch[n].shape) for n in onnx_inputs]}"
                )
            if not (np.isfinite(got).all() and np.isfinite(expected).all()):  # max() would drop a NaN difference
                raise OnnxVerificationError(
                    f"{name}: non-finite values (onnxruntime: {int((~np.isfinite(got)).sum())}, PyTorch: "
                    f"{int((~np.isfinite(expected)).sum())}) for inputs {[tuple(batch[n].shape) for n in onnx_inputs]}"
                )
            if got.size:
                per_output[name] = max(per_output[name], float(np.max(np.abs(got - expected))))
        shapes.append(
            {
                "batch": int(batch["input_ids"].shape[0]),
                "sequence": int(batch["input_ids"].shape[1]),
                "mentions": int(batch["mention_spans"].shape[0]) if "mention_spans" in batch else 0,
            }
        )
    return max(per_output.values(), default=0.0), per_output, shapes


def _write_metadata(onnx_path: Path, metadata: dict[str, str]) -> None:
    import onnx

    proto = onnx.load(str(onnx_path))
    existing = {entry.key: entry for entry in proto.metadata_props}
    for key, value in metadata.items():
        entry = existing.get(key) or proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(onnx_path))


def export_onnx(
    model: nn.Module | str | os.PathLike,
    output_path: str | os.PathLike,
    *,
    opset_version: int = DEFAULT_OPSET,
    verify: bool = True,
    atol: float = DEFAULT_ATOL,
    tokenizer=None,
) -> OnnxExportResult:
    """Export `model` (a `MultiTaskModel` or a checkpoint folder) with all heads as one ONNX graph.

    Args:
        model: a hard-shared `MultiTaskModel`, or the path of a folder saved with `save_pretrained`.
        output_path: the `.onnx` file to write (parent folders are created). Weights are stored inside
            the file (models under 2 GB).
        opset_version: ONNX opset (18 by default, what the torch.export-based exporter targets).
        verify: run onnxruntime on inputs of untraced shapes and compare with PyTorch.
        atol: the largest absolute difference accepted by the verification.
        tokenizer: a tokenizer or its path, used to add real sentences to the verification inputs;
            defaults to the checkpoint folder's / the backbone's tokenizer when one can be loaded.

    Returns:
        `OnnxExportResult` with the input/output names and the verification's max abs difference.

    Raises:
        ValueError: the model does not share one backbone across all heads (``sharing="adapters"``
            needs one pass per task's adapter, so it is not one shared graph).
        OnnxVerificationError: onnxruntime and PyTorch differ by more than `atol`.
    """
    model_or_path = model
    model = _load_model(model)
    config = model.config
    sharing = getattr(config, "sharing", "hard")
    if sharing != "hard":
        raise ValueError(
            f"export_onnx: config.sharing={sharing!r}; only hard-shared models export as one graph with one "
            "backbone pass (merge adapters into separate single-task models to export them)"
        )
    output_path = Path(output_path)
    output_path.parent.mkdir(parents=True, exist_ok=True)

    # Export on CPU in float32: the graph is portable and onnxruntime's CPU results are the reference.
    original_device = next(model.parameters()).device
    original_dtype = next(model.parameters()).dtype  # exported in float32; the caller's model gets its own back
    original_training = model.training
    model = model.to("cpu").float().eval()

    use_token_type_ids = _backbone_takes_token_type_ids(model)
    use_mention_spans = bool(_span_tasks(config))
    input_names = _input_names(use_token_type_ids, use_mention_spans)
    output_names = [output_name(task) for task in config.task_names]
    max_length = int(getattr(config, "max_length", None) or config.backbone_config.max_position_embeddings)

    wrapper = MultiTaskOnnxWrapper(model, use_token_type_ids, use_mention_spans).eval()
    # Traced shapes avoid 0 and 1, which torch.export would specialise into constants.
    example = make_example_inputs(2, min(16, max_length), 3, config.backbone_config.vocab_size, input_names)
    batch = torch.export.Dim("batch")
    sequence = torch.export.Dim("sequence", max=max_length)
    dynamic_shapes: dict[str, Any] = {"input_ids": {0: batch, 1: sequence}, "attention_mask": {0: batch, 1: sequence}}
    if use_token_type_ids:
        dynamic_shapes["token_type_ids"] = {0: batch, 1: sequence}
    if use_mention_spans:
        dynamic_shapes["mention_spans"] = {0: torch.export.Dim("mentions")}
    # The wrapper takes *extra positionally; torch.export wants dynamic_shapes matching its signature.
    shapes_by_position = (
        dynamic_shapes["input_ids"],
        dynamic_shapes["attention_mask"],
        tuple(dynamic_shapes[name] for name in input_names[2:]),
    )
    try:
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            # The exporter warns that axes sharing one constraint keep one name: expected, not actionable.
            warnings.filterwarnings("ignore", message=".*axis name.*will not be used.*")
            warnings.filterwarnings("ignore", category=FutureWarning)
            torch.onnx.export(
                wrapper,
                tuple(example[name] for name in input_names),
                str(output_path),
                input_names=input_names,
                output_names=output_names,
                opset_version=opset_version,
                dynamo=True,
                external_data=False,
                dynamic_shapes=shapes_by_position,
                verbose=False,
            )
    finally:
        model.to(original_device, original_dtype).train(original_training)

    tasks = [dict(task) for task in config.tasks]
    _write_metadata(
        output_path,
        {
            "multi_task.tasks": json.dumps(tasks),
            "multi_task.inputs": json.dumps(input_names),
            "multi_task.outputs": json.dumps(output_names),
            "multi_task.max_length": str(max_length),
            "multi_task.stride": str(getattr(config, "stride", "")),
            "multi_task.window_aggregation": str(getattr(config, "window_aggregation", "mean")),
            "multi_task.relative_threshold": str(getattr(config, "relative_threshold", 0.0)),
            "multi_task.top1_fallback": json.dumps(getattr(config, "top1_fallback", True)),
        },
    )
    result = OnnxExportResult(path=output_path, input_names=input_names, output_names=output_names, tasks=tasks)
    if verify:
        cpu_model = model.to("cpu").float().eval()  # the graph is float32: so is its reference (a bf16 model differs)
        tokenizer = _load_tokenizer(tokenizer, model_or_path, model)
        batches = _verification_inputs(cpu_model, input_names, tokenizer, max_length)
        try:
            diff, per_output, shapes = verify_onnx(cpu_model, output_path, batches)
        finally:
            model.to(original_device, original_dtype).train(original_training)
        result.max_abs_diff, result.per_output_max_abs_diff, result.checked_shapes = diff, per_output, shapes
        if diff > atol:
            raise OnnxVerificationError(
                f"{output_path}: onnxruntime differs from PyTorch by {diff:.3g} > atol={atol:g} "
                f"(per output: {per_output})"
            )
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m modeling.export",
        description="Export a hard-shared MultiTaskModel with all its heads as one ONNX graph, "
        "verified against PyTorch with onnxruntime.",
    )
    parser.add_argument("--model", required=True, help="Checkpoint folder written by MultiTaskModel.save_pretrained.")
    parser.add_argument("--out", required=True, help="The .onnx file to write.")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset version (default %(default)s).")
    parser.add_argument("--atol", type=float, default=DEFAULT_ATOL,
                        help="Largest accepted |onnxruntime - PyTorch| difference (default %(default)s).")
    parser.add_argument("--tokenizer", default=None,
                        help="Tokenizer folder/name for real-text verification inputs (default: the checkpoint's).")
    parser.add_argument("--no-verify", action="store_true", help="Skip the onnxruntime comparison.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import modeling  # noqa: F401  (registers the Auto* classes)

    try:
        result = export_onnx(args.model, args.out, opset_version=args.opset, verify=not args.no_verify,
                             atol=args.atol, tokenizer=args.tokenizer)
    except (FileNotFoundError, ValueError, OnnxVerificationError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(json.dumps(result.to_dict() | {"tasks": [task["name"] for task in result.tasks]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
