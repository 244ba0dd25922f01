"""Article-level train/validation splits, seeded and stratified (by domain by default).

Rows are articles, so a mention can never land in another split than its article. The official dev set
of SemEval-2025 Task 10 has no public test labels on its own side, so the usual protocol is: split the
training release into train/validation here, and use the official dev set (loaded with
``load_semeval``, same layout) as the test set.
"""

from __future__ import annotations

from collections import Counter
from typing import Mapping, Sequence

import datasets
import numpy as np

_POOLED = object()  # the stratum of pooled small strata: no column value can equal it


def split_articles(
    articles: datasets.Dataset,
    validation_fraction: float = 0.2,
    seed: int = 42,
    stratify_by: str | None = "domain",
    id_column: str | None = None,
    test: datasets.Dataset | None = None,
    min_stratum_size: int = 1,
) -> datasets.DatasetDict:
    """Split ``articles`` into ``train`` / ``validation`` (plus ``test`` when given).

    Within each stratum (value of ``stratify_by``; ``None`` = one stratum) the rows are shuffled with
    ``numpy.random.default_rng(seed)`` and ``round(validation_fraction * n)`` of them go to validation
    (at least one where the stratum has two or more rows). Ids (``id_column``; ``id`` or ``doc_id`` by
    default) must be unique, and ids of ``test`` must not occur in ``articles``. Strata with fewer than
    ``min_stratum_size`` rows are pooled into one: with a long tail of 2-3-row classes, "at least one to
    validation" per stratum would otherwise send a third or more of the rows there.
    """
    if not 0.0 < validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    id_column = id_column or next((c for c in ("id", "doc_id") if c in articles.column_names), None)
    if id_column is None:
        raise ValueError(f"no id column ('id' or 'doc_id') among {articles.column_names}; pass id_column")
    ids = articles[id_column]
    duplicates = [i for i, n in Counter(ids).items() if n > 1]
    if duplicates:
        raise ValueError(f"field {id_column!r}: duplicate article ids {sorted(duplicates)[:5]} (split would leak)")
    if stratify_by is not None and stratify_by not in articles.column_names:
        raise ValueError(f"stratify_by column {stratify_by!r} not in {articles.column_names}")

    strata = articles[stratify_by] if stratify_by else [None] * len(articles)
    if min_stratum_size > 1:
        sizes = Counter(strata)
        strata = [_POOLED if sizes[s] < min_stratum_size else s for s in strata]
    rng = np.random.default_rng(seed)
    validation: list[int] = []
    for stratum in sorted(set(strata), key=lambda s: (s is _POOLED, str(s))):
        rows = [i for i, s in enumerate(strata) if s == stratum]
        rows = list(rng.permutation(rows))
        count = int(round(validation_fraction * len(rows)))
        if len(rows) >= 2:
            count = min(max(count, 1), len(rows) - 1)
        validation.extend(int(i) for i in rows[:count])
    validation_set = set(validation)
    train = [i for i in range(len(articles)) if i not in validation_set]
    splits = {"train": articles.select(train), "validation": articles.select(sorted(validation))}
    if test is not None:
        test_id_column = id_column if id_column in test.column_names else ("id" if "id" in test.column_names else "doc_id")
        overlap = set(test[test_id_column]) & set(ids)
        if overlap:
            raise ValueError(f"test set shares article ids with the training data: {sorted(overlap)[:5]}")
        splits["test"] = test
    return datasets.DatasetDict(splits)


def keep_repeated_texts_together(splits: Mapping[str, datasets.Dataset], order: Sequence[str] = ("train", "validation", "test"),
                                 text_column: str = "text", id_column: str | None = None
                                 ) -> tuple[datasets.DatasetDict, list[tuple[str, str, str]]]:
    """Move every row whose text also occurs in an earlier split of ``order`` into that split, so that no text is
    scored that a model trained or was selected on (repeats as `data_prep.overlap.repeat_key` sees them).

    A split by id cannot see that a release carries one article under two ids (the English SemEval-2025 release
    has four such pairs: EN_UA_300050 = EN_UA_104569, EN_CC_200093 = EN_CC_200107 ...). Returns the new splits and
    ``(id, from, to)`` of every moved row; with no repeated text the splits come back unchanged. Names of ``order``
    that `splits` lacks are skipped (e.g. no test split); splits not in ``order`` come back as they were.
    """
    from .overlap import repeat_key

    unknown = [name for name in splits if name not in order]
    order = [name for name in order if name in splits]
    keys = {name: [repeat_key(text) for text in splits[name][text_column]] for name in order}
    first_split: dict[str, str] = {}
    for name in order:
        for key in keys[name]:
            if key:
                first_split.setdefault(key, name)
    moved: list[tuple[str, str, str]] = []
    keep: dict[str, list[int]] = {name: [] for name in order}
    extra: dict[str, list[tuple[str, int]]] = {name: [] for name in order}
    for name in order:
        dataset = splits[name]
        ids = dataset[id_column or next(c for c in ("id", "doc_id") if c in dataset.column_names)]
        for row, key in enumerate(keys[name]):
            target = first_split.get(key, name)
            if target == name:
                keep[name].append(row)
            else:
                extra[target].append((name, row))
                moved.append((ids[row], name, target))
    if not moved:
        return datasets.DatasetDict({name: splits[name] for name in [*order, *unknown]}), []
    out = {name: splits[name] for name in unknown}
    for name in order:
        parts = [splits[name].select(keep[name])]
        parts += [splits[source].select([row]) for source, row in extra[name]]
        out[name] = datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]
    return datasets.DatasetDict(out), moved
