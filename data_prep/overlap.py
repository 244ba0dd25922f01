"""Train/test text overlap: how many test texts have an exact or a near duplicate among the training texts.

A test set that repeats training texts measures memory, not generalisation; one that repeats them nearly
(templated tickets: "new purchase po ... dear purchased monitor" vs "... purchased speaker") does so less visibly.
Deployment may well see such repeats, so the split is not changed here: the report states the overlap, and a
reviewer can weigh the scores by it.

* exact: equal after lower-casing and collapsing non-word characters;
* near: TF-IDF (word uni- and bigrams, sublinear tf, fitted on both sides) cosine similarity of at least
  ``threshold`` to some training text. Test rows are compared in blocks of ``block_rows`` so memory stays at
  ``block_rows x len(train)`` floats whatever the table's size.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

_NON_WORD = re.compile(r"\W+")


def normalize_text(text: str) -> str:
    """Lower-cased, runs of non-word characters collapsed to one space, stripped."""
    return _NON_WORD.sub(" ", text.lower()).strip()


def repeat_key(text: str) -> str:
    """What makes two texts repeats of each other: `normalize_text`, or the stripped text itself where that has no
    word ("!!!" repeats "!!!", not "???"); empty for an empty text, which repeats nothing."""
    return normalize_text(text) or text.strip()


@dataclass
class TextOverlap:
    test_texts: int
    exact: int
    """Test texts equal to a training text after `normalize_text`."""
    near: int
    """Test texts with a training text at cosine >= `threshold` (exact duplicates included)."""
    threshold: float
    nearest_similarity: np.ndarray
    """Per test text, its highest cosine similarity to any training text."""
    nearest_train_index: np.ndarray
    """Per test text, the index of that training text (-1 where none shares a word)."""

    @property
    def near_share(self) -> float:
        return self.near / self.test_texts if self.test_texts else 0.0

    def summary(self) -> str:
        if not self.test_texts:
            return "no test texts"
        return (f"{self.exact} of {self.test_texts} test texts ({self.exact / self.test_texts:.1%}) repeat a training "
                f"text exactly; {self.near} ({self.near_share:.1%}) have one at TF-IDF cosine >= {self.threshold:g}")


def text_overlap(train_texts: Sequence[str], test_texts: Sequence[str], threshold: float = 0.9,
                 block_rows: int = 1024) -> TextOverlap:
    """Exact and near duplicates of `test_texts` among `train_texts` (see the module docstring)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    train_texts, test_texts = list(train_texts), list(test_texts)
    seen: dict[str, int] = {}
    for index, text in enumerate(train_texts):
        seen.setdefault(repeat_key(text), index)
    seen.pop("", None)  # an empty text repeats nothing
    exact_index = [seen.get(repeat_key(text), -1) for text in test_texts]
    is_exact = np.array([index >= 0 for index in exact_index], dtype=bool)
    nearest = np.zeros(len(test_texts))
    nearest_index = np.full(len(test_texts), -1)
    if train_texts and test_texts:
        try:
            vectors = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True).fit_transform(train_texts + test_texts)
        except ValueError:  # no word anywhere (e.g. only punctuation): nothing can be near
            vectors = None
        if vectors is not None:
            train, test = vectors[: len(train_texts)], vectors[len(train_texts):]
            for start in range(0, len(test_texts), block_rows):
                similarity = (test[start:start + block_rows] @ train.T).toarray()
                nearest_index[start:start + len(similarity)] = similarity.argmax(axis=1)
                nearest[start:start + len(similarity)] = similarity.max(axis=1)
    nearest_index[nearest <= 0] = -1  # no shared word with any training text: no nearest one
    # An exact duplicate is near whatever TF-IDF says (a text of punctuation only has no vector), and its own match.
    nearest_index[is_exact] = np.array(exact_index)[is_exact]
    nearest[is_exact] = 1.0
    near = int(((nearest >= threshold - 1e-9) | is_exact).sum())
    return TextOverlap(test_texts=len(test_texts), exact=int(is_exact.sum()), near=near, threshold=threshold,
                       nearest_similarity=nearest, nearest_train_index=nearest_index)


__all__ = ["TextOverlap", "normalize_text", "text_overlap"]
