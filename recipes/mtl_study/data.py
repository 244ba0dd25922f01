"""The data of an experiment: the SemEval-2025 Task 10 release given with ``--data_dir``, or by default a
SYNTHETIC corpus in the same layout generated into ``<output_dir>/data``, loaded as multi-task examples
with every task at both granularities, and split by article into train / validation / test.

* test: ``<data_dir>/dev`` when it exists (the synthetic corpus writes one; the official dev release can
  be placed there), otherwise a seeded, domain-stratified share of the articles;
* validation: a seeded, domain-stratified share of the remaining training articles (decision thresholds
  and model selection use it, never the test set).

Task names are ``<kind>_<granularity>`` (``narratives_fine``, ``entity_framing_coarse``, ...), as
:mod:`data_prep.tasks` names them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import datasets

logger = logging.getLogger(__name__)

TASK_KINDS = ("narratives", "entity_framing")
GRANULARITIES = ("fine", "coarse")
SPLIT_SEED = 1234  # the default --split_seed: every seed of every arm sees the same split (arms paired on equal data)
#: Version of the splitting rules, recorded with a study's settings: runs split under other rules are not reused.
#: 2: an article repeated under two ids stays in one split; ticket tables are stratified by their first label.
SPLIT_VERSION = 2


def task_name(kind: str, granularity: str) -> str:
    if kind not in TASK_KINDS:
        raise ValueError(f"unknown task kind {kind!r}; choose among {list(TASK_KINDS)}")
    if granularity not in GRANULARITIES:
        raise ValueError(f"unknown granularity {granularity!r} for task {kind!r}; choose fine or coarse")
    return f"{kind}_{granularity}"


@dataclass
class ExperimentData:
    """Multi-task examples of an experiment, with every task of the corpus at both granularities."""

    tasks: dict[str, dict]  # task name -> task dict
    train: datasets.Dataset
    validation: datasets.Dataset
    test: datasets.Dataset
    source: str  # human-readable description (says SYNTHETIC when it is)
    dataset_id: str
    data_dir: str
    synthetic: bool
    domain_column: str = "domain"
    load_summary: str = ""
    extra: dict = field(default_factory=dict)

    def specs(self, names: Sequence[str]) -> list[dict]:
        """Task dicts of ``names``, in that order; an unknown name is an error listing the known ones."""
        missing = [n for n in names if n not in self.tasks]
        if missing:
            raise ValueError(f"task(s) {missing} are not in this corpus; its tasks are {sorted(self.tasks)}")
        return [self.tasks[n] for n in names]

    def domains(self) -> list[str]:
        if self.domain_column not in self.train.column_names:
            return []
        return sorted({str(d) for d in self.train[self.domain_column] if d is not None})

    def describe(self) -> dict:
        return {"source": self.source, "train documents": len(self.train), "validation documents": len(self.validation),
                "test documents": len(self.test), "domains": ", ".join(self.domains()) or "n/a",
                "tasks": ", ".join(f"{n} ({len(t['labels'])} labels)" for n, t in sorted(self.tasks.items()))}


def generate_default_corpus(folder: Path, num_documents: int, min_words: int, max_words: int, seed: int = 0,
                            lexical_shift: float = 0.5) -> Path:
    """Generate (once) the synthetic corpus the recipes use by default; reused when its settings match."""
    from data_prep.synthetic import SyntheticConfig, corpus_matches, generate_synthetic_corpus

    config = SyntheticConfig(out=str(folder), seed=seed, train_articles=num_documents,
                             dev_articles=max(20, num_documents // 4), min_tokens=min_words, max_tokens=max_words,
                             lexical_shift=lexical_shift)
    if corpus_matches(config):
        return folder
    logger.info("generating the synthetic corpus into %s", folder)
    return generate_synthetic_corpus(config)


def _load_release(folder: Path, language: str):
    from data_prep.semeval import load_semeval

    return load_semeval(folder, languages=[language], return_report=True)


def load_experiment_data(data_dir: str | Path | None, output_dir: str | Path, language: str = "EN",
                         eval_fraction: float = 0.25, synthetic_options: Mapping | None = None,
                         split_seed: int = SPLIT_SEED) -> ExperimentData:
    """Load ``data_dir`` (a SemEval release) or generate + load the default synthetic corpus; ``split_seed`` seeds
    the article-level splits (another seed gives another fold of a cross-validation of the whole study)."""
    from data_prep.splits import keep_repeated_texts_together, split_articles
    from data_prep.tasks import semeval_tasks, task_specs, to_multitask_examples
    from data_prep.taxonomy import NarrativeTaxonomy, load_narrative_taxonomy

    synthetic = data_dir is None
    if synthetic:
        options = dict(synthetic_options or {})
        folder = generate_default_corpus(Path(output_dir) / "data", **options)
    else:
        folder = Path(data_dir)
        if not (folder / language).is_dir():
            raise FileNotFoundError(f"--data_dir {folder}: no {language}/ folder (expected the SemEval-2025 Task 10 layout "
                                    f"<data_dir>/{language}/raw-documents, subtask-1/2-annotations.txt)")
    articles, report = _load_release(folder, language)
    test_articles = None
    if (folder / "dev" / language).is_dir():
        test_articles, _ = _load_release(folder / "dev", language)

    every = list(articles) + (list(test_articles) if test_articles is not None else [])
    if (folder / "taxonomy").is_dir():
        taxonomy = load_narrative_taxonomy(folder / "taxonomy")
    else:
        taxonomy = NarrativeTaxonomy.from_labels([n for r in every for n in (r["narratives"] or [])],
                                                 [s for r in every for s in (r["subnarratives"] or [])])
    tasks = []
    for granularity in GRANULARITIES:
        for task in semeval_tasks(taxonomy, entity_granularity=granularity, narrative_granularity=granularity):
            tasks.append(task)
    by_name = {spec["name"]: spec for spec in task_specs(tasks)}
    examples = to_multitask_examples(articles, tasks)
    if test_articles is not None:
        test = to_multitask_examples(test_articles, tasks)
        rest = examples
    else:
        split = split_articles(examples, validation_fraction=eval_fraction, seed=split_seed)
        rest, test = split["train"], split["validation"]
    split = split_articles(rest, validation_fraction=eval_fraction, seed=split_seed + 1,
                           test=test if test_articles is not None else None)  # ids shared with dev/ are refused
    # One article under two ids must not be trained on in one split and scored in another. The official dev set is
    # never changed: its repeats of training texts are only counted.
    order = ("train", "validation") if test_articles is not None else ("train", "validation", "test")
    parts, moved = keep_repeated_texts_together({"train": split["train"], "validation": split["validation"], "test": test},
                                                order=order)
    summary = report.summary()
    if moved:
        summary += (f"\nrepeated texts: {len(moved)} article(s) moved to the split that holds the same text under "
                    "another id: " + ", ".join(f"{i} ({a} -> {b})" for i, a, b in moved))
    if test_articles is not None:
        from data_prep.overlap import repeat_key

        seen = {repeat_key(text) for name in order for text in parts[name]["text"]} - {""}
        repeats = sum(repeat_key(text) in seen for text in test["text"])
        if repeats:
            summary += f"\nrepeated texts: {repeats} dev/ article(s) repeat a training or validation text"
    source = (f"SYNTHETIC corpus generated into {folder} (not real news: results say nothing about SemEval performance)"
              if synthetic else f"SemEval-2025 Task 10 release at {folder} ({language})")
    return ExperimentData(
        tasks=by_name, train=parts["train"], validation=parts["validation"], test=parts.get("test", test),
        source=source, dataset_id="synthetic-semeval2025-task10" if synthetic else "semeval2025-task10",
        data_dir=str(folder), synthetic=synthetic, load_summary=summary,
    )
