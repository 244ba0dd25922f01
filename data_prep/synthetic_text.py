"""The one synthetic-text generator of the repository: seeded filler words, sentences, cue insertion, lengths.

Every synthetic input is built with :class:`TextGenerator`: the SemEval-layout corpus
(:mod:`data_prep.synthetic`), the ticket table (:mod:`data_prep.synthetic_tickets`), the performance benchmark
(``mtl_study.benchmarking``) and the trainer demo (``recipes/trainer_demo.py``). Texts are filler words drawn
from a vocabulary with the label-bearing *cues* planted among them, so what a model must learn is explicit.

Two kinds of random source, because the generated files are published results' inputs and must not change
for a given seed:

* ``random.Random`` (or a seed): the corpora and the demo, one draw per word;
* ``numpy.random.Generator``: the benchmark, which draws hundreds of thousands of words at once
  (:meth:`TextGenerator.from_tokenizer`: a vocabulary of whole-word tokenizer entries, so one word is exactly
  one token and lengths are exact token counts).
"""

from __future__ import annotations

import math
import random
from typing import Sequence

import numpy as np


class TextGenerator:
    """Seeded synthetic words and texts over a vocabulary.

    Args:
        vocabulary: the filler words.
        rng: a seed (``int`` or ``str``, for ``random.Random``), a ``random.Random`` or a
            ``numpy.random.Generator`` (shared with the caller, so its other draws interleave as before).
    """

    def __init__(self, vocabulary: Sequence[str], rng: int | str | random.Random | np.random.Generator = 0):
        if not vocabulary:
            raise ValueError("empty vocabulary")
        self.vocabulary = list(vocabulary)
        self.rng = rng if isinstance(rng, (random.Random, np.random.Generator)) else random.Random(rng)
        self._numpy = isinstance(self.rng, np.random.Generator)

    @classmethod
    def from_tokenizer(cls, tokenizer, seed: int = 0, min_chars: int = 3, max_chars: int = 10) -> "TextGenerator":
        """Words that are whole ASCII entries of ``tokenizer``'s vocabulary: one word is one token."""
        special = set(tokenizer.all_special_tokens)
        words = sorted(
            w for w in tokenizer.get_vocab() if w.isascii() and w.isalpha() and min_chars <= len(w) <= max_chars and w not in special
        )
        if len(words) < 100:
            raise ValueError(f"tokenizer {tokenizer.name_or_path!r}: too few whole-word entries for synthetic text")
        return cls(words, np.random.default_rng(seed))

    # --- draws ---------------------------------------------------------------------------------------------

    def randint(self, low: int, high: int) -> int:
        """An integer in [low, high], both included."""
        return int(self.rng.integers(low, high + 1)) if self._numpy else self.rng.randint(low, high)

    def choice(self, options: Sequence):
        return options[int(self.rng.integers(len(options)))] if self._numpy else self.rng.choice(options)

    def words(self, count: int, pool: Sequence[str] | None = None) -> list[str]:
        """``count`` words drawn uniformly (with replacement) from ``pool`` (default: the vocabulary)."""
        pool = self.vocabulary if pool is None else pool
        if self._numpy:
            return [pool[i] for i in self.rng.integers(0, len(pool), size=count)]
        return [self.rng.choice(pool) for _ in range(count)]

    def mixed_words(self, count: int, special: Sequence[str], share: float) -> list[str]:
        """``count`` words, each from ``special`` with probability ``share``, else from the vocabulary
        (a domain's own words mixed into shared filler: the lexical-shift knob)."""
        return [self.choice(special) if self.rng.random() < share else self.choice(self.vocabulary) for _ in range(count)]

    def text(self, num_words: int) -> str:
        """``num_words`` (at least 1) vocabulary words joined by spaces."""
        return " ".join(self.words(max(1, num_words)))

    def sentence(self, low: int, high: int, special: Sequence[str] = (), share: float = 0.0) -> str:
        """A capitalised sentence of ``low``-``high`` words ending in a full stop (see :meth:`mixed_words`)."""
        count = self.randint(low, high)
        words = self.mixed_words(count, special, share) if special else self.words(count)
        return " ".join(words).capitalize() + "."

    def with_cues(self, words: list[str], cues: Sequence[str]) -> list[str]:
        """Insert each cue (in order) at a uniformly random position of ``words`` (modified and returned)."""
        for cue in cues:
            words.insert(self.randint(0, len(words)), cue)
        return words

    def length(self, median: float, sigma: float, low: int = 1, high: int | None = None) -> int:
        """One log-normal length with the given median, rounded and clipped to [low, high]."""
        draw = self.rng.lognormal(math.log(median), sigma) if self._numpy else median * math.exp(self.rng.gauss(0.0, sigma))
        value = max(low, round(draw))
        return value if high is None else min(high, value)

    def lengths(self, count: int, median: float, sigma: float, low: int, high: int) -> np.ndarray:
        """``count`` log-normal lengths with the given median, rounded and clipped to [low, high]."""
        if self._numpy:
            values = self.rng.lognormal(math.log(median), sigma, size=count)
            return np.clip(np.round(values), low, high).astype(int)
        return np.array([self.length(median, sigma, low, high) for _ in range(count)], dtype=int)
