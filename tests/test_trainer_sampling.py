"""Task sampling and length-grouped batching (modeling.sampling) and their use by MultiTaskTrainer."""

import numpy as np
import pytest
from test_trainer_helpers import make_args, make_model, make_rows

from modeling import MultiTaskTrainer, MultiTaskTrainingArguments
from modeling.sampling import MultiTaskSampler, labelled_task_sets, source_probabilities


def _two_source_rows():
    # 'topic' labelled on 60 rows of one source, 'tags' on 12 rows of another (e.g. two corpora)
    return make_rows(60, seed=1, labelled=("topic",)) + make_rows(12, seed=2, labelled=("tags",), start=60)


def test_sources_are_the_labelled_task_sets():
    from datasets import Dataset

    sets = labelled_task_sets(Dataset.from_list(_two_source_rows()), ["topic", "tags", "roles"])
    assert sets[:60] == [frozenset({"topic"})] * 60 and sets[60:] == [frozenset({"tags"})] * 12


@pytest.mark.parametrize(
    "strategy, expected",
    [("proportional", [60 / 72, 12 / 72]), ("equal", [0.5, 0.5]),
     ("temperature", [60**0.5 / (60**0.5 + 12**0.5), 12**0.5 / (60**0.5 + 12**0.5)])],
)
def test_source_probabilities(strategy, expected):
    np.testing.assert_allclose(source_probabilities([60, 12], strategy, temperature=2.0), expected)


def test_sampler_follows_probabilities_and_is_seeded():
    sources = ["a"] * 600 + ["b"] * 120
    sampler = MultiTaskSampler(sources, strategy="equal", seed=3)
    counts = sampler.source_counts()
    assert abs(counts["a"] - counts["b"]) < 0.1 * len(sources)  # equal shares of a 5:1 dataset
    assert list(sampler) == list(MultiTaskSampler(sources, strategy="equal", seed=3))
    sampler.set_epoch(1)
    assert list(sampler) != list(MultiTaskSampler(sources, strategy="equal", seed=3))
    # the scarce source is cycled through whole permutations: all of 'b' appears before any repeats
    first_b = [i for i in MultiTaskSampler(sources, strategy="equal", seed=3) if i >= 600][:120]
    assert sorted(first_b) == list(range(600, 720))
    oversampled = MultiTaskSampler(sources, strategy="proportional", source_factors={"b": 5.0}, seed=0)
    counts = oversampled.source_counts()
    assert abs(counts["a"] - counts["b"]) < 0.1 * len(sources)


def test_length_grouping_cuts_padding():
    rng = np.random.default_rng(0)
    lengths = rng.integers(8, 256, size=2048).tolist()
    batch = 16

    def padded_tokens(order):
        return sum(max(lengths[i] for i in order[s:s + batch]) * len(order[s:s + batch])
                   for s in range(0, len(order), batch))

    plain = list(MultiTaskSampler(["x"] * 2048, seed=0))
    grouped = list(MultiTaskSampler(["x"] * 2048, lengths=lengths, batch_size=batch, seed=0))
    assert sorted(grouped) == sorted(plain) == list(range(2048))  # same examples, new order
    real = sum(lengths)
    assert real / padded_tokens(grouped) > 0.9 > 0.6 > real / padded_tokens(plain)
    assert max(lengths[i] for i in grouped[:batch]) == max(lengths)  # longest batch first


def test_trainer_uses_the_sampler(tiny_backbone_dir, tmp_path):
    from datasets import Dataset

    model = make_model(tiny_backbone_dir)
    args = make_args(tmp_path, task_sampling="equal", oversample=["tags=2"], group_by_length=True)
    trainer = MultiTaskTrainer(model=model, args=args, train_dataset=Dataset.from_list(_two_source_rows()))
    sampler = trainer._get_train_sampler()
    assert isinstance(sampler, MultiTaskSampler)
    probabilities = dict(zip(sampler.source_names, sampler.probabilities))
    assert probabilities[frozenset({"tags"})] == pytest.approx(2 / 3)
    assert sampler.lengths is not None and sampler.batch_size == 8
    loader = trainer.get_train_dataloader()
    seen = [int(i) for batch in loader for i in batch["example_index"]]
    assert len(seen) == 72 and sum(i >= 60 for i in seen) > 30  # the 12 'tags' rows drawn ~2/3 of the time
    with pytest.raises(ValueError, match=r"--oversample names unknown tasks \['nope'\]"):
        MultiTaskTrainer(model=model, args=make_args(tmp_path, oversample=["nope=2"]))


def test_arguments_parse_from_the_command_line(tmp_path):
    from transformers import HfArgumentParser

    (args,) = HfArgumentParser(MultiTaskTrainingArguments).parse_args_into_dataclasses(
        ["--output_dir", str(tmp_path), "--task_weights", "topic=2", "tags=0.5", "--oversample", "tags=3",
         "--loss_weighting", "dwa", "--task_sampling", "temperature", "--group_by_length", "--report_to", "none"]
    )
    assert args.task_weight_map == {"topic": 2.0, "tags": 0.5} and args.oversample_map == {"tags": 3.0}
    assert args.train_sampling_strategy == "group_by_length"
    assert args.remove_unused_columns is False and args.metric_for_best_model == "mean_macro_f1"
    for field_name in ("loss_weighting", "task_weights", "task_sampling", "oversample", "tune_thresholds",
                       "macro_average", "class_weighting", "weighting_warmup_steps", "group_by_length"):
        assert MultiTaskTrainingArguments.__dataclass_fields__[field_name].metadata["help"]
    with pytest.raises(ValueError, match=r"--task_weights: value for task 'topic' is not a number: 'x'"):
        MultiTaskTrainingArguments(output_dir=str(tmp_path), task_weights=["topic=x"])
    with pytest.raises(ValueError, match="--loss_weighting must be one of"):
        MultiTaskTrainingArguments(output_dir=str(tmp_path), loss_weighting="magic")
