"""Cache of the frozen prefix: the output of the embeddings and the `num_frozen_layers` frozen layers, computed once
per token window and stored as a dataset column, so that training runs only the layers above them.

When the embeddings and the k lowest layers are frozen and hold no trainable parameter (hard sharing with
`num_frozen_layers=k`; adapters only when none sits in those layers), their output for a window is the same in every
epoch, seed and arm: `MultiTaskModel` runs them in eval mode (no dropout), so `forward(prefix_hidden_states=...)` on
cached states equals a full forward pass.

Typical use::

    if frozen_prefix_applies(model):
        train_set = attach_frozen_prefix(model, train_set, cache_dir="outputs/cache/frozen_prefix")
    trainer = MultiTaskTrainer(model=model, train_dataset=train_set, ...)  # the collator pads the column

The column `prefix_hidden_states` holds one `[length, H]` array per row (no padding), float16 or float32; the
returned dataset formats it as numpy (the other columns stay python objects) so that collation is a copy.
"""

import hashlib
import json
import logging
import os

import numpy as np
import torch

from .collator import PREFIX_COLUMN

logger = logging.getLogger(__name__)

_STORAGE_DTYPES = {torch.float16: "float16", torch.float32: "float32"}
# Bump when the stored content changes meaning, so that old cache files are not reused.
_CACHE_FORMAT_VERSION = 2  # 2: keyed by the rows' content, not the dataset's fingerprint


def _unwrapped(model):
    return getattr(model, "module", model)  # DDP / DataParallel wrappers


def frozen_prefix_reason(model) -> str | None:
    """None when `model`'s frozen prefix can be cached, else the reason why not (e.g. nothing frozen, adapters
    inside the frozen layers)."""
    model = _unwrapped(model)
    if not hasattr(model, "frozen_prefix_reason"):
        return f"{type(model).__name__} is not a MultiTaskModel"
    return model.frozen_prefix_reason()


def frozen_prefix_applies(model) -> bool:
    """Whether `model`'s frozen prefix can be cached; `frozen_prefix_reason(model)` says why not."""
    return frozen_prefix_reason(model) is None


def _content_digest(dataset) -> str:
    """A hash of every row of `dataset` as it is (indices mapping applied). The file the cache reads back is the
    whole mapped dataset, so its key must change with any column: `datasets`' own fingerprint does not see a change
    in the body of a module-level encoding function (it hashes such functions by name), and would hand back rows
    made by older code."""
    import pyarrow as pa

    table = dataset.with_format("arrow")[:]
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()


def prefix_fingerprint(model, dataset, dtype: torch.dtype = torch.float32) -> str:
    """Identity of the cached states: the frozen weights (name_or_path plus a hash of every frozen tensor), k, the
    attention implementation, the dataset's rows and the storage dtype."""
    model = _unwrapped(model)
    hasher = hashlib.sha256()
    description = {
        "version": _CACHE_FORMAT_VERSION,
        "name_or_path": str(getattr(model, "name_or_path", "")),
        "num_frozen_layers": model.config.num_frozen_layers,
        "attn_implementation": getattr(model.config.backbone_config, "_attn_implementation", None),
        "rows": _content_digest(dataset),
        "dtype": _STORAGE_DTYPES[dtype],
    }
    hasher.update(json.dumps(description, sort_keys=True).encode())
    for position, module in enumerate(model._frozen_modules()):
        for name, tensor in module.state_dict().items():
            hasher.update(f"{position}.{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
            hasher.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return hasher.hexdigest()[:32]


def attach_frozen_prefix(
    model,
    encoded_dataset,
    cache_dir: str | os.PathLike,
    batch_size: int = 32,
    dtype: torch.dtype = torch.float32,
):
    """Return `encoded_dataset` with a `prefix_hidden_states` column: per row, the `[length, H]` output of the
    embeddings and the `num_frozen_layers` frozen layers of `model` (run in eval mode, no grad, on `model.device`).

    Args:
        model: a `MultiTaskModel` whose frozen prefix can be cached (`frozen_prefix_applies(model)`).
        encoded_dataset: a `datasets.Dataset` of encoded windows (`input_ids`, `attention_mask`[, `token_type_ids`]).
        cache_dir: folder of the cache files; a call with the same frozen weights, k, dataset fingerprint and dtype
            (in this or another process) reads `frozen_prefix_<fingerprint>.arrow` instead of running the encoder.
        batch_size: windows per encoder pass while computing the states.
        dtype: storage dtype, `torch.float32` (exact) or `torch.float16` (half the disk and memory).

    Returns:
        The dataset with the new column, formatted as numpy for that column only (`output_all_columns=True`).
    """
    from datasets import Array2D

    reason = frozen_prefix_reason(model)
    if reason is not None:
        raise ValueError(f"attach_frozen_prefix(): the frozen prefix of this model cannot be cached: {reason}")
    if dtype not in _STORAGE_DTYPES:
        raise ValueError(f"attach_frozen_prefix(): dtype must be torch.float16 or torch.float32, got {dtype}")
    if batch_size < 1:
        raise ValueError(f"attach_frozen_prefix(): batch_size must be >= 1, got {batch_size}")
    missing = [c for c in ("input_ids", "attention_mask") if c not in encoded_dataset.column_names]
    if missing:
        raise ValueError(f"attach_frozen_prefix(): the dataset lacks column(s) {missing}")
    if PREFIX_COLUMN in encoded_dataset.column_names:
        encoded_dataset = encoded_dataset.remove_columns(PREFIX_COLUMN)
    raw = _unwrapped(model)
    fingerprint = prefix_fingerprint(raw, encoded_dataset, dtype)
    os.makedirs(cache_dir, exist_ok=True)
    cache_file = os.path.join(os.fspath(cache_dir), f"frozen_prefix_{fingerprint}.arrow")
    storage = _STORAGE_DTYPES[dtype]
    features = encoded_dataset.features.copy()
    features[PREFIX_COLUMN] = Array2D(shape=(None, raw.config.backbone_config.hidden_size), dtype=storage)
    with_types = "token_type_ids" in encoded_dataset.column_names

    def compute(batch):
        lengths = [len(ids) for ids in batch["input_ids"]]
        longest = max(lengths)

        def padded(column):
            return torch.tensor(
                [list(values) + [0] * (longest - len(values)) for values in batch[column]], device=raw.device
            )

        states = raw.frozen_prefix_states(
            padded("input_ids"), padded("attention_mask"), padded("token_type_ids") if with_types else None
        )
        states = states.to(dtype).cpu().numpy()
        return {PREFIX_COLUMN: [states[row, :length] for row, length in enumerate(lengths)]}

    def mapped(reuse: bool):
        return encoded_dataset.map(compute, batched=True, batch_size=batch_size, features=features,
                                   cache_file_name=cache_file, load_from_cache_file=reuse, new_fingerprint=fingerprint,
                                   desc="frozen prefix states")

    if os.path.exists(cache_file):
        logger.info("frozen prefix: reusing %s", cache_file)
        try:
            with_prefix = mapped(reuse=True)
            if with_prefix.num_rows != encoded_dataset.num_rows:
                raise ValueError(f"{with_prefix.num_rows} rows for {encoded_dataset.num_rows} windows")
        except (OSError, ValueError) as error:  # a truncated or foreign file: say which, and compute it again
            logger.warning("frozen prefix: %s is unreadable (%s): computing it again", cache_file, error)
            os.remove(cache_file)
            with_prefix = mapped(reuse=False)
    else:
        logger.info("frozen prefix: computing %d windows into %s", len(encoded_dataset), cache_file)
        with_prefix = mapped(reuse=True)
    # datasets' numpy formatter casts floats to float32 unless told the dtype.
    return with_prefix.with_format("numpy", columns=[PREFIX_COLUMN], output_all_columns=True, dtype=np.dtype(storage))


__all__ = ["attach_frozen_prefix", "frozen_prefix_applies", "frozen_prefix_reason", "prefix_fingerprint"]
