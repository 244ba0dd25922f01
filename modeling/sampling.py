"""Task-aware and length-grouped sampling of multi-task training sets.

When tasks come from different sources (task A labelled on one corpus, task B on another), plain shuffling draws
each source in proportion to its size, so a small task is seen rarely. `MultiTaskSampler` draws *sources* with
probability ``proportional`` to their size, ``temperature``-scaled (size^(1/T)), or ``equal``, optionally
oversampling the sources that carry a scarce task, and may sort short windows of batches by length so that, with
the collator's dynamic padding, little compute is spent on padding.

The sampler yields *global* indices and is identical on every process for a given seed and epoch; under
`accelerate` the prepared dataloader gives each process its own share of the batches, so no example order depends
on the number of processes beyond that split.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Iterator, Mapping, Sequence

import numpy as np
import torch

logger = logging.getLogger(__name__)

from .vocabulary import IGNORE_INDEX, LABEL_COLUMN_PREFIX, task_of_label_column  # noqa: F401 (re-exported)


def has_label(value) -> bool:
    """Whether an encoded label value carries any label (-100 / all -100 / empty / None mean "no label")."""
    if value is None:
        return False
    if isinstance(value, (list, tuple)):
        return any(has_label(item) for item in value)
    if hasattr(value, "tolist"):
        return has_label(value.tolist())
    return value != IGNORE_INDEX


def _column(dataset, name: str) -> list:
    """A column of a `datasets.Dataset` (fast path) or of any indexable dataset of dicts."""
    column_names = getattr(dataset, "column_names", None)
    if column_names is not None:
        if name not in column_names:
            return [None] * len(dataset)
        return list(dataset[name])
    return [example.get(name) for example in (dataset[i] for i in range(len(dataset)))]


def labelled_task_sets(dataset, task_names: Sequence[str]) -> list[frozenset]:
    """For each encoded example, the set of tasks it carries labels for (from its ``labels.<task>`` columns)."""
    columns = {name: _column(dataset, LABEL_COLUMN_PREFIX + name) for name in task_names}
    return [
        frozenset(name for name in task_names if has_label(columns[name][row])) for row in range(len(dataset))
    ]


def source_ids(dataset, task_names: Sequence[str], column: str | None = None) -> list[Hashable]:
    """The source of every example: the value of `column` if given, else its set of labelled tasks."""
    if column is not None:
        column_names = getattr(dataset, "column_names", None)
        if column_names is not None and column not in column_names:
            raise ValueError(f"--task_sampling_column {column!r} is not a column of the training set {column_names}")
        return _column(dataset, column)
    return labelled_task_sets(dataset, task_names)


def example_lengths(dataset, length_column: str = "length") -> list[int]:
    """Token lengths of the examples: the `length_column` if present, else ``len(input_ids)``."""
    column_names = getattr(dataset, "column_names", None)
    if column_names is not None and length_column in column_names:
        return [int(value) for value in dataset[length_column]]
    lengths = _column(dataset, "input_ids")
    if any(value is None for value in lengths):
        raise ValueError(
            f"length-grouped batching needs a {length_column!r} column or 'input_ids' in every training example"
        )
    return [len(value) for value in lengths]


def source_probabilities(
    sizes: Sequence[int], strategy: str, temperature: float = 2.0, factors: Sequence[float] | None = None
) -> np.ndarray:
    """Probability of drawing each source: sizes (``proportional``), sizes^(1/T) (``temperature``) or equal.

    `factors` (oversampling) multiply the unnormalised weights.
    """
    sizes = np.asarray(sizes, dtype=np.float64)
    if strategy in ("proportional", "none"):
        weights = sizes.copy()
    elif strategy == "temperature":
        if not temperature > 0:
            raise ValueError(f"sampling temperature must be > 0, got {temperature}")
        weights = sizes ** (1.0 / temperature)
    elif strategy == "equal":
        weights = np.ones_like(sizes)
    else:
        raise ValueError(f"unknown task sampling strategy {strategy!r}")
    if factors is not None:
        weights = weights * np.asarray(factors, dtype=np.float64)
    if weights.sum() <= 0:
        raise ValueError("task sampling: every source has weight 0")
    return weights / weights.sum()


class MultiTaskSampler(torch.utils.data.Sampler[int]):
    """Seeded sampler drawing examples source by source, optionally length-grouped.

    Args:
        sources: the source id of every example (see `source_ids`).
        strategy: ``"none"`` (one random permutation of the data), ``"proportional"``, ``"temperature"`` or
            ``"equal"``. With a strategy, each draw picks a source with its probability, then the next example of
            that source's own shuffled order (reshuffled when used up): scarce sources repeat, large ones are
            subsampled.
        temperature: T of ``"temperature"``.
        source_factors: ``{source: factor}`` multipliers (oversampling).
        num_samples: examples per epoch (default: the dataset size).
        lengths: example lengths; with `batch_size`, enables length grouping: random windows of
            ``batch_size * megabatch`` examples are sorted by decreasing length, so each batch holds similar
            lengths while the order of batches stays random (the longest batch comes first, so an out-of-memory
            error shows at once).
        seed: base seed; the order of epoch ``e`` depends only on ``seed + e``.
    """

    def __init__(
        self,
        sources: Sequence[Hashable],
        strategy: str = "none",
        temperature: float = 2.0,
        source_factors: Mapping[Hashable, float] | None = None,
        num_samples: int | None = None,
        lengths: Sequence[int] | None = None,
        batch_size: int | None = None,
        megabatch: int = 50,
        seed: int = 0,
    ):
        if len(sources) == 0:
            raise ValueError("MultiTaskSampler needs a non-empty dataset")
        if lengths is not None and len(lengths) != len(sources):
            raise ValueError(f"{len(lengths)} lengths for {len(sources)} examples")
        self.strategy = strategy
        self.seed = int(seed)
        self.epoch = 0
        self.num_samples = int(num_samples) if num_samples is not None else len(sources)
        self.lengths = np.asarray(lengths, dtype=np.int64) if lengths is not None else None
        self.batch_size = batch_size
        self.megabatch = megabatch
        self.source_names = list(dict.fromkeys(sources))
        position = {source: index for index, source in enumerate(self.source_names)}
        self.source_of = np.asarray([position[source] for source in sources], dtype=np.int64)
        self.members = [np.flatnonzero(self.source_of == index) for index in range(len(self.source_names))]
        factors = [float((source_factors or {}).get(source, 1.0)) for source in self.source_names]
        self.resample = strategy != "none" or any(factor != 1.0 for factor in factors)
        sizes = [len(members) for members in self.members]
        self.probabilities = source_probabilities(
            sizes, strategy if strategy != "none" else "proportional", temperature, factors
        )

    def set_epoch(self, epoch: int) -> None:
        """Called by the Trainer (through accelerate) at each epoch: a new, reproducible order."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_samples

    def _draw(self, rng: np.random.Generator) -> np.ndarray:
        if not self.resample:
            return rng.permutation(len(self.source_of))[: self.num_samples]
        choices = rng.choice(len(self.source_names), size=self.num_samples, p=self.probabilities)
        indices = np.empty(self.num_samples, dtype=np.int64)
        for source, members in enumerate(self.members):
            slots = np.flatnonzero(choices == source)
            if len(slots) == 0:
                continue
            # Whole shuffled passes over the source, so every example is seen before any repeats.
            passes = -(-len(slots) // len(members))
            order = np.concatenate([rng.permutation(members) for _ in range(passes)])
            indices[slots] = order[: len(slots)]
        return indices

    def _group_by_length(self, indices: np.ndarray) -> np.ndarray:
        chunk = self.batch_size * self.megabatch
        groups = []
        for start in range(0, len(indices), chunk):
            window = indices[start : start + chunk]
            # Stable sort on decreasing length keeps the (random) order among equal lengths.
            groups.append(window[np.argsort(-self.lengths[window], kind="stable")])
        result = np.concatenate(groups)
        # Put the batch holding the longest example first.
        batches = [result[start : start + self.batch_size] for start in range(0, len(result), self.batch_size)]
        longest = int(np.argmax([self.lengths[batch].max() for batch in batches]))
        batches[0], batches[longest] = batches[longest], batches[0]
        return np.concatenate(batches)

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng(self.seed + self.epoch)
        indices = self._draw(rng)
        if self.lengths is not None and self.batch_size:
            indices = self._group_by_length(indices)
        return iter(indices.tolist())

    def source_counts(self, epoch: int | None = None) -> dict[Hashable, int]:
        """How many draws each source gets in `epoch` (default: the current one); for logging and tests."""
        previous = self.epoch
        if epoch is not None:
            self.epoch = epoch
        try:
            drawn = np.fromiter(iter(self), dtype=np.int64)
        finally:
            self.epoch = previous
        counts = np.bincount(self.source_of[drawn], minlength=len(self.source_names))
        return {source: int(count) for source, count in zip(self.source_names, counts)}


def describe_source(source: Hashable) -> str:
    """Readable name of a source id (a task set prints as ``{a+b}``)."""
    if isinstance(source, frozenset):
        return "{" + "+".join(sorted(source)) + "}" if source else "{unlabelled}"
    return str(source)


def build_train_sampler(dataset, task_names: Sequence[str], args, batch_size: int) -> MultiTaskSampler | None:
    """The `MultiTaskSampler` that `args` (a `MultiTaskTrainingArguments`) asks for, or None when plain shuffling
    does (no task sampling, no oversampling, no length grouping).

    Oversampling factors apply per source: a task-set source gets the largest factor of its tasks.
    """
    grouping = args.train_sampling_strategy == "group_by_length"
    if args.task_sampling == "none" and not args.oversample_map and not grouping:
        return None
    sources = source_ids(dataset, task_names, args.task_sampling_column)
    factors = {}
    for source in set(sources):
        if isinstance(source, frozenset):
            factors[source] = max([args.oversample_map.get(name, 1.0) for name in source] or [1.0])
        else:
            factors[source] = args.oversample_map.get(str(source), 1.0)
    sampler = MultiTaskSampler(
        sources,
        strategy=args.task_sampling,
        temperature=args.sampling_temperature,
        source_factors=factors,
        lengths=example_lengths(dataset, args.length_column_name) if grouping else None,
        batch_size=batch_size,
        megabatch=args.length_grouping_megabatch,
        seed=args.data_seed if args.data_seed is not None else args.seed,
    )
    if sampler.resample:
        shares = {
            describe_source(source): round(float(probability), 4)
            for source, probability in zip(sampler.source_names, sampler.probabilities)
        }
        logger.info("task sampling %r: source probabilities %s", args.task_sampling, shares)
    return sampler


def check_label_columns(dataset, description: str, task_names: Sequence[str]) -> None:
    """Reject a dataset with a ``labels.<task>`` column for a task the model lacks (a silent skip hides bugs)."""
    columns = getattr(dataset, "column_names", None) or []
    unknown = [column for column in columns if task_of_label_column(column) not in (None, *task_names)]
    if unknown:
        raise ValueError(
            f"{description} has label column(s) {unknown} for task(s) the model lacks; the model's tasks are "
            f"{list(task_names)}"
        )


def threshold_tuning_set_name(chosen: str | None, names: Sequence[str]) -> str:
    """The evaluation set thresholds are tuned on: ``--threshold_tuning_set`` (checked), else the first."""
    if chosen is not None and chosen not in names:
        raise ValueError(f"--threshold_tuning_set {chosen!r} is not one of the evaluation sets {list(names)}")
    return chosen if chosen is not None else names[0]


def check_trainer_datasets(train_dataset, eval_dataset, task_names: Sequence[str],
                           threshold_tuning_set: str | None = None) -> None:
    """`check_label_columns` on a trainer's training set and every evaluation set (a dict gives named sets), and
    ``--threshold_tuning_set`` names one of a dict's sets."""
    if threshold_tuning_set is not None and eval_dataset is not None:
        if not isinstance(eval_dataset, dict):
            raise ValueError(f"--threshold_tuning_set {threshold_tuning_set!r} names one of several evaluation sets: "
                             "give eval_dataset as a dict of named sets")
        threshold_tuning_set_name(threshold_tuning_set, list(eval_dataset))
    named = [("train_dataset", train_dataset)]
    if isinstance(eval_dataset, dict):
        named += [(f"eval_dataset[{name!r}]", dataset) for name, dataset in eval_dataset.items()]
    else:
        named.append(("eval_dataset", eval_dataset))
    for description, dataset in named:
        if dataset is not None:
            check_label_columns(dataset, description, task_names)
