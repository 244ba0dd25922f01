"""Ticket router: three single-label heads (e.g. category, urgency, queue) on one encoder, from a table.

What it changes: the data — a table of support tickets instead of news articles (default: a SYNTHETIC ticket
table the project generates; ``--data_file`` for a real one), with partial labels (a row may lack some
columns). Besides stl vs mtl scores, the report has the label-leakage audit (is one label a function of
another?), the disagreement rate between the multi-task and the single-task predictions, and the latency of
one multi-task model against running the separate single-task models.

    accelerate launch recipes/ticket_router.py
    accelerate launch recipes/ticket_router.py --data_file ../shared/data/tickets_sample/tickets_sample.csv \
        --label_columns category business_service --audit_columns ticket_type urgency impact --text_columns title body
"""

import os

# Idle OpenMP threads sleep instead of spinning: on a shared or busy CPU, spinning threads slow every step several-fold.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from data_prep.leakage import audit_label_leakage
from data_prep.overlap import text_overlap
from data_prep.splits import split_articles
from data_prep.synthetic_tickets import SyntheticTicketsConfig, synthetic_table_matches, write_tickets
from data_prep.tables import load_table
from mtl_study.config import parse_recipe_args
from mtl_study.data import ExperimentData
from mtl_study.report import markdown_table
from mtl_study.runner import best_models
from mtl_study.study import Study


@dataclass
class TicketArguments:
    data_file: Optional[str] = field(default=None, metadata={"help": "Ticket table (.csv/.tsv/.jsonl/.parquet). Default: a synthetic table generated into <output_dir>/data."})
    text_columns: list[str] = field(default_factory=lambda: ["title", "body"], metadata={"help": "Columns joined into the ticket text."})
    label_columns: list[str] = field(default_factory=lambda: ["category", "urgency", "queue"], metadata={"help": "Label columns: one single-label head each."})
    audit_columns: list[str] = field(default_factory=list, metadata={"help": "Extra label columns checked by the leakage audit only (not trained)."})
    ticket_rows: int = field(default=500, metadata={"help": "Rows of the synthetic table (when no --data_file)."})
    latency_repeats: int = field(default=3, metadata={"help": "Timed passes over the test texts for the latency comparison (best of; >= 1)."})
    stratify_by: str = field(default="first_label", metadata={"help": "Label column whose classes the test and validation splits keep in proportion ('first_label': the first trained column of --label_columns; 'none': a plain random split). A class with one row stays in train instead of landing, unlearnable, in test; classes of fewer than 1/eval_fraction rows are pooled into one stratum."})
    max_skipped_fraction: float = field(default=0.2, metadata={"help": "Largest share of malformed rows (empty text, a bad label cell, a ragged line) the router skips; more, and it stops before training, quoting the first reasons (a table that is mostly malformed is the wrong file or read with the wrong --text_columns)."})

    def __post_init__(self):
        if not 0.0 <= self.max_skipped_fraction <= 1.0:
            raise ValueError(f"--max_skipped_fraction must be in [0, 1], got {self.max_skipped_fraction}")
        if self.latency_repeats < 1:
            raise ValueError(f"--latency_repeats must be >= 1, got {self.latency_repeats}")
        if self.ticket_rows < 1:
            raise ValueError(f"--ticket_rows must be >= 1, got {self.ticket_rows}")


def load_tickets(output_dir, args, tickets) -> ExperimentData:
    """The ticket table split into train / validation / test; unknown columns fail here, before any run."""
    synthetic = tickets.data_file is None
    path = Path(output_dir) / "data" / "tickets.csv" if synthetic else Path(tickets.data_file)
    if synthetic:
        config = SyntheticTicketsConfig(out=str(path), rows=tickets.ticket_rows)
        if not synthetic_table_matches(config):  # another --ticket_rows, or a table cut short by a kill: regenerate
            write_tickets(config)
    audited = list(dict.fromkeys([*tickets.label_columns, *tickets.audit_columns]))
    if tickets.stratify_by not in ("first_label", "none", *audited):
        raise ValueError(f"--stratify_by {tickets.stratify_by!r}: not a label column {audited} (or 'first_label', 'none')")
    table = load_table(path, text_columns=tickets.text_columns, label_columns=audited, on_error="skip",
                       max_skipped_fraction=tickets.max_skipped_fraction)
    # A column with one value everywhere has nothing to learn (a classifier needs two labels): audit it, do not train it.
    constant = {t["name"]: t["labels"][0] for t in table.tasks if len(t["labels"]) < 2}
    trained = {t["name"]: t for t in table.tasks if t["name"] in tickets.label_columns and t["name"] not in constant}
    if not trained:
        raise ValueError(f"{path}: no label column among {tickets.label_columns} has two or more values "
                         f"(single-valued: {constant}); nothing to train")
    stratify_by = {"first_label": next(iter(trained)), "none": None}.get(tickets.stratify_by, tickets.stratify_by)
    # Classes too small to give each split a row are pooled (else each sends a row to test and one to validation).
    split = dict(validation_fraction=args.eval_fraction, stratify_by=stratify_by,
                 min_stratum_size=math.ceil(1 / args.eval_fraction))
    rest_test = split_articles(table.examples, seed=args.split_seed, **split)
    train_val = split_articles(rest_test["train"], seed=args.split_seed + 1, **split)
    source = (f"SYNTHETIC ticket table {path} (generated: not real tickets)" if synthetic else f"ticket table {path}")
    return ExperimentData(tasks=trained, train=train_val["train"], validation=train_val["validation"],
                          test=rest_test["validation"], source=source, dataset_id="synthetic-tickets" if synthetic else path.stem,
                          data_dir=str(path.parent), synthetic=synthetic, load_summary=_skipped_summary(path, table.skipped),
                          extra={"counts": table.counts, "constant": constant, "audited": audited})


def _skipped_summary(path, skipped) -> str:
    """What the loader dropped (on_error="skip"), for the report's "Data loading" section and the console summary."""
    if not skipped:
        return f"{path}: no row skipped"
    shown = "\n".join(f"  line {line}: {reason}" for line, reason in skipped[:20])
    more = f"\n  ... and {len(skipped) - 20} more" if len(skipped) > 20 else ""
    return f"{path}: {len(skipped)} rows skipped\n{shown}{more}"


def overlap_section(data: ExperimentData) -> str:
    """How many test tickets repeat a training ticket, exactly or nearly (templated tickets), for the report."""
    train_texts = list(data.train["text"]) + list(data.validation["text"])
    overlap = text_overlap(train_texts, list(data.test["text"]))
    return (f"{overlap.summary()} (training and validation tickets against test tickets; TF-IDF word uni- and "
            "bigrams). Near duplicates make the test scores partly a measure of memory. The split does not separate "
            "them, as deployment traffic repeats templates too: weigh the scores by this share.")


def predictions_and_latency(study, texts, repeats):
    """Predictions of the best mtl model and of the best stl model of every task, and their timings."""
    from modeling import MultiTaskModel

    models = {info["arm"] if info["arm"] != "stl" else f"stl/{info['tasks'][0]}": MultiTaskModel.from_pretrained(folder).eval()
              for folder, info in best_models(study.output_dir)}
    predictions, seconds = {}, {}
    for key, model in models.items():
        model.predict(texts[:4], tokenizer=study.tokenizer)  # warm-up
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            predictions[key] = model.predict(texts, tokenizer=study.tokenizer, batch_size=32)
            best = min(best, time.perf_counter() - start)
        seconds[key] = best
    return predictions, seconds


def main(argv=None):
    args, training, model, tickets = parse_recipe_args("ticket_router", argv, extra=[TicketArguments],
                                     shipped_config=Path(__file__).with_name("configs") / "ticket_router.yaml")
    data = load_tickets(training.output_dir, args, tickets)
    study = Study(args, training, model, "ticket_router", "Ticket router: one multi-task model vs one model per label", 
                  "Is one three-headed router as good as three single-task classifiers, and what does it save?", data=data,
                  extra=[tickets])
    tasks = list(data.tasks)
    leakage = audit_label_leakage(data.train, tasks=data.extra["audited"], warn=False)
    constant = data.extra["constant"]
    rows = study.run(study.architecture_specs(tasks))

    sections = [("Label-leakage audit (training set)",
                 "Uncertainty coefficient U = 1 − H(target | given)/H(target); a flagged pair means the target label is "
                 "(nearly) a function of the given one, or fixed by one of its values on at least 10% of the tickets "
                 "(partly), so a multi-head 'gain' on it is a shortcut, not transfer.\n\n"
                 "```\n" + leakage.table() + "\n```\n\n" + ("**Flagged: " + ", ".join(f"{p.target} {'partly ' if p.partial else ''}determined by {p.given}" for p in leakage.flagged) + "**"
                                                       if leakage.flagged else "No pair flagged.")
                 + ("".join(f"\n\nColumn `{c}` has the single value {v!r} in this table: audited, not trained." for c, v in constant.items()))),
                ("Train/test text overlap", overlap_section(data))]
    if study._is_main() and "mtl" in args.arms and "stl" in args.arms:
        texts = list(data.test["text"])
        predictions, seconds = predictions_and_latency(study, texts, tickets.latency_repeats)
        body = []
        for task in tasks:
            if f"stl/{task}" in predictions and "mtl" in predictions:
                differ = sum(m[task] != s[task] for m, s in zip(predictions["mtl"], predictions[f"stl/{task}"]))
                body.append([task, len(texts), differ, f"{differ / len(texts):.1%}"])
        sections.append(("Disagreement between the mtl and stl predictions (best seed of each, test set)",
                         markdown_table(["Task", "Tickets", "Different predictions", "Disagreement rate"], body)))
        stl_total = sum(v for k, v in seconds.items() if k.startswith("stl/"))
        latency = [[k, f"{v * 1000:.0f} ms", f"{v * 1000 / len(texts):.2f} ms"] for k, v in sorted(seconds.items())]
        latency.append([f"all {len(tasks)} stl models", f"{stl_total * 1000:.0f} ms", f"{stl_total * 1000 / len(texts):.2f} ms"])
        speedup = f"One mtl model routes the {len(texts)} test tickets {stl_total / seconds['mtl']:.1f}× faster than the {len(tasks)} separate models." if "mtl" in seconds and stl_total else ""
        sections.append(("Latency: one multi-task model vs the separate models",
                         markdown_table(["Model", f"{len(texts)} tickets", "per ticket"], latency) + "\n\n" + speedup))
    return study.finish(rows, arm_order=["stl", "mtl", "mtl_adapters"], extra_sections=sections, tasks=tasks,
                        data_mixture=f"{data.source}; partial labels: rows without a label train only the other heads")


if __name__ == "__main__":
    main()
