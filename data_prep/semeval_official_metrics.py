"""The official measures of SemEval-2025 Task 10 over gold and predicted submissions, and a scorer command.

Definitions, as in the organisers' released scorers (``subtask1_scorer.py``, ``subtask2_scorer.py``):

* **subtask 2** (``F1@coarse`` / ``F1@fine``): per article, the F1 of the predicted against the gold label set,
  both one-hot encoded over the class list (the taxonomy's narratives / subnarratives, ``Other`` included;
  labels outside it are ignored), with F1 = 0 when both sets are empty (``zero_division=0``); reported as
  the mean (and population std) over articles. The mean equals
  ``sklearn.metrics.f1_score(gold_multi_hot, pred_multi_hot, average="samples", zero_division=0)`` (tested).
* **subtask 1**: the exact match ratio of the fine-role *set* per mention (the official ranking measure:
  "EMR on the fine-grained roles"), and the accuracy of the main role.

Differences from the released scripts, all deliberate: gold and predicted lines are aligned by key (article id,
or article id + UTF-16 span) where the scripts zip the two files in file order (a reordered prediction file would
be mis-scored); and the first released subtask-1 script compared the ordered ``(main_role, fine_roles)`` list,
so a permutation of the same roles counted as a miss, whereas the task defines EMR over the role set. What the
scripts refuse is refused here too, naming the line: missing or extra lines, role names outside the taxonomy, and a
mention text that differs from the gold line at the same span.

Command::

    python -m data_prep.semeval_official_metrics --gold GOLD_DIR --pred PRED_DIR [--taxonomy TAXONOMY_DIR]

Each folder holds ``subtask-1-annotations.txt`` and/or ``subtask-2-annotations.txt`` (or a ``<LANG>/`` sub-folder
that does, with ``--language``); prints the measures as JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path
from typing import Collection, Sequence

import numpy as np

from .semeval_official import MentionLine, NarrativeLine, Submission
from .taxonomy import FINE_ROLES, MAIN_ROLES, OTHER, NarrativeTaxonomy, load_narrative_taxonomy

logger = logging.getLogger(__name__)

METRIC_NAMES = ("narratives_samples_f1", "subnarratives_samples_f1", "fine_role_exact_match", "main_role_accuracy")


def multi_hot(label_sets: Sequence[Collection[str]], classes: Sequence[str]) -> np.ndarray:
    """Rows of 0/1 over ``classes``; labels outside ``classes`` are ignored, as in the official scorer."""
    index = {label: i for i, label in enumerate(classes)}
    matrix = np.zeros((len(label_sets), len(classes)), dtype=int)
    for row, labels in enumerate(label_sets):
        for label in labels:
            if label in index:
                matrix[row, index[label]] = 1
    return matrix


def samples_f1(
    gold: Sequence[Collection[str]], pred: Sequence[Collection[str]], classes: Sequence[str] | None = None
) -> tuple[float, float]:
    """Mean and population std over examples of the per-example F1 (the official subtask-2 measure).

    ``classes`` defaults to every label seen in ``gold`` or ``pred``.
    """
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold label sets but {len(pred)} predicted ones")
    if not gold:
        return math.nan, math.nan
    if classes is None:
        classes = sorted({label for labels in (*gold, *pred) for label in labels})
    y_true, y_pred = multi_hot(gold, classes), multi_hot(pred, classes)
    true_positives = (y_true & y_pred).sum(axis=1)
    denominator = y_true.sum(axis=1) + y_pred.sum(axis=1)
    # Per example, as the organisers do (sklearn's samples average gives the same mean but refuses a single class).
    per_example = np.divide(2 * true_positives, denominator, out=np.zeros(len(gold)), where=denominator > 0)
    return float(per_example.mean()), float(per_example.std())


def _aligned(gold: dict, pred: dict, what: str) -> list:
    missing, extra = sorted(set(gold) - set(pred)), sorted(set(pred) - set(gold))
    if missing or extra:
        raise ValueError(
            f"{what}: the prediction lacks {len(missing)} gold entries {missing[:3]} and has {len(extra)} extra "
            f"ones {extra[:3]} (the official scorer refuses mismatched files)"
        )
    return list(gold)


Classes = NarrativeTaxonomy | tuple[Sequence[str], Sequence[str]] | None
"""The class lists of subtask 2: a taxonomy, or (narratives, subnarratives) lists (:func:`load_official_classes`)."""


def load_official_classes(taxonomy_dir: str | Path) -> tuple[list[str], list[str]]:
    """The organisers' class lists ``subtask2_narratives.txt`` / ``subtask2_subnarratives.txt`` (what their scorer
    reads), else the labels of the taxonomy files plus ``Other``.

    The lists can differ from ``taxonomy_subtask1_2.json``: on the English release the JSON adds 3 subnarratives
    "from annotations" that the official list, and hence the official score, ignores.
    """
    taxonomy_dir = Path(taxonomy_dir)
    paths = [taxonomy_dir / "subtask2_narratives.txt", taxonomy_dir / "subtask2_subnarratives.txt"]
    if all(path.is_file() for path in paths):
        narratives, subnarratives = (
            [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()] for path in paths
        )
        return narratives, subnarratives
    taxonomy = load_narrative_taxonomy(taxonomy_dir)
    return [OTHER, *taxonomy.narratives()], [OTHER, *taxonomy.subnarratives()]


def narrative_scores(gold: Sequence[NarrativeLine], pred: Sequence[NarrativeLine], classes: Classes = None) -> dict[str, float]:
    """Samples-F1 mean and std of narratives and subnarratives, articles aligned by id."""
    gold_by_id, pred_by_id = {line.article_id: line for line in gold}, {line.article_id: line for line in pred}
    ids = _aligned(gold_by_id, pred_by_id, "subtask 2")
    if isinstance(classes, NarrativeTaxonomy):
        classes = ([OTHER, *classes.narratives()], [OTHER, *classes.subnarratives()])
    lists = dict(zip(("narratives", "subnarratives"), classes or (None, None)))
    out = {}
    for column in ("narratives", "subnarratives"):
        mean, std = samples_f1(
            [getattr(gold_by_id[i], column) for i in ids], [getattr(pred_by_id[i], column) for i in ids], lists[column]
        )
        out[f"{column}_samples_f1"], out[f"{column}_samples_f1_std"] = mean, std
    return out


def _check_mentions(gold_by_key: dict, pred_by_key: dict) -> None:
    """What the organisers' scorer refuses: role names outside the taxonomy, and a predicted line whose mention text
    differs from the gold line at the same span (their key includes the text, so it would count as missing)."""
    fine_roles = set(FINE_ROLES)
    for key, line in pred_by_key.items():
        where = f"subtask 1, article {key[0]}, span {key[1]}-{key[2]}"
        if line.main_role not in MAIN_ROLES:
            raise ValueError(f"{where}: unknown main role {line.main_role!r}; expected one of {list(MAIN_ROLES)}")
        unknown = sorted(set(line.fine_roles) - fine_roles)
        if unknown:
            raise ValueError(f"{where}: unknown fine role(s) {unknown}; the taxonomy's are {sorted(fine_roles)}")
        if key in gold_by_key and line.mention != gold_by_key[key].mention:
            raise ValueError(f"{where}: predicted mention {line.mention!r} differs from the gold {gold_by_key[key].mention!r} "
                             "(the official scorer matches mentions by their text too)")


def entity_scores(gold: Sequence[MentionLine], pred: Sequence[MentionLine]) -> dict[str, float]:
    """Exact match ratio of the fine-role sets and main-role accuracy, mentions aligned by (article, span).

    Raises `ValueError`, naming the line, where the official scorer would refuse the prediction file: missing or
    extra mentions, unknown role names, a mention text that differs from the gold's."""
    gold_by_key, pred_by_key = {line.key: line for line in gold}, {line.key: line for line in pred}
    keys = _aligned(gold_by_key, pred_by_key, "subtask 1")
    _check_mentions(gold_by_key, pred_by_key)
    if not keys:
        return {"fine_role_exact_match": math.nan, "main_role_accuracy": math.nan}
    exact = [set(gold_by_key[k].fine_roles) == set(pred_by_key[k].fine_roles) for k in keys]
    main = [gold_by_key[k].main_role == pred_by_key[k].main_role for k in keys]
    return {"fine_role_exact_match": float(np.mean(exact)), "main_role_accuracy": float(np.mean(main))}


def official_metrics(gold: Submission, pred: Submission, classes: Classes = None) -> dict[str, float]:
    """The four official measures (NaN for a subtask that ``gold`` has no lines of).

    Returns ``{"narratives_samples_f1", "subnarratives_samples_f1", "fine_role_exact_match",
    "main_role_accuracy"}``. ``classes`` gives the class lists of subtask 2 (labels outside them are ignored,
    as officially; :func:`load_official_classes` reads the organisers' lists); without it every label seen counts. A model that predicts only subnarratives is scored on
    narratives through the parents its submission lines carry (see ``submission_from_predictions``).
    """
    out = dict.fromkeys(METRIC_NAMES, math.nan)
    if gold.narratives:
        scores = narrative_scores(gold.narratives, pred.narratives, classes)
        out.update({name: scores[name] for name in METRIC_NAMES[:2]})
    if gold.mentions:
        out.update(entity_scores(gold.mentions, pred.mentions))
    return out


def _submission_folder(folder: Path, language: str | None) -> Path:
    if language and (folder / language).is_dir():
        return folder / language
    return folder


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m data_prep.semeval_official_metrics", description="Score a SemEval-2025 Task 10 submission."
    )
    parser.add_argument("--gold", required=True, type=Path, help="folder with the gold subtask files")
    parser.add_argument("--pred", required=True, type=Path, help="folder with the predicted subtask files")
    parser.add_argument(
        "--taxonomy",
        type=Path,
        help="taxonomy folder (class lists of subtask 2); default GOLD/taxonomy or the gold files' ../taxonomy",
    )
    parser.add_argument("--language", default="EN", help="use the <LANG>/ sub-folder where there is one (default EN)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    gold_dir, pred_dir = _submission_folder(args.gold, args.language), _submission_folder(args.pred, args.language)
    taxonomy_dir = args.taxonomy
    if taxonomy_dir is None:
        taxonomy_dir = next((d for d in (args.gold / "taxonomy", gold_dir.parent / "taxonomy") if d.is_dir()), None)
    try:
        classes = load_official_classes(taxonomy_dir) if taxonomy_dir is not None else None
        gold, pred = Submission.read(gold_dir), Submission.read(pred_dir)
        scores = official_metrics(gold, pred, classes)
        if gold.narratives:  # the organisers' scorer also prints the std over articles
            scores.update(narrative_scores(gold.narratives, pred.narratives, classes))
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    scores = {name: (None if isinstance(v, float) and math.isnan(v) else round(v, 4)) for name, v in scores.items()}
    print(json.dumps({"gold": str(gold_dir), "pred": str(pred_dir), "taxonomy": str(taxonomy_dir), **scores}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
