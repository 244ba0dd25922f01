"""SYNTHETIC known-answer controls for multi-task transfer: two tiny corpora whose answer is known in advance.

Each document hides one *cue word* among filler words (the filler and cue words of :mod:`data_prep.synthetic`).
Every latent class ``z`` owns ``cues_per_class`` cue words (8 by default, 24 cue words in all); the document's
cue word fixes its class. The two controls share the SAME texts and the same primary labels; they differ in the
auxiliary labels only, so whatever separates them is the auxiliary task:

* the **primary** task (``primary_<control>``): ``z``; labels are SCARCE in training (only ``primary_label_rate``
  of the training texts carry one, so some cue words never occur in a labelled text), dense on validation and
  test. A single-task model has only the backbone's prior for a cue word it never saw labelled (the cue words
  of a class are not all of one kind: class 0's are nouns, class 2's adjectives, so that prior is not nil).
* the **auxiliary** task (``auxiliary_<control>``), labelled on EVERY training text and on no validation or test
  text (it is a training signal only: every arm selects its checkpoint and is scored on the primary task alone):

  - ``positive`` control: the same latent ``z`` under other label names. Learning it teaches the shared encoder
    to map every cue word to its class, which is what the primary head needs and cannot learn from its few
    labels: a multi-task model must beat the single-task model on the primary task.
  - ``negative`` control: a label drawn at random, independent of the text (its own seeded generator, so the
    texts are those of the positive control), over ``negative_auxiliary_classes`` classes (2: the least noise a
    model could memorise). Nothing in it can help the primary task, so a multi-task model must not be found
    significantly better; it may be worse (fitting random labels costs the shared layer), which is real
    negative transfer.

If a study pipeline finds no gain on the positive control, or a significant gain on the negative one, the
pipeline (not multi-task learning) is what is being measured. The corpora are deterministic for a seed
and take milliseconds to build.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import datasets

from .synthetic import NARRATIVE_CUES, SUBNARRATIVE_CUES, _filler_sentence
from modeling.vocabulary import DOCUMENT, SINGLE_LABEL

CONTROLS = ("positive", "negative")
#: Words that never occur in the filler (the shared words), so a document's cue is unambiguous.
CUE_WORDS = NARRATIVE_CUES + SUBNARRATIVE_CUES
SPLITS = ("train", "validation", "test")


@dataclass
class ControlsConfig:
    """Sizes of the control corpora (the same texts for both controls)."""

    seed: int = 0
    train_documents: int = 240
    validation_documents: int = 60
    test_documents: int = 150
    primary_label_rate: float = 0.10  # share of training texts with a primary label: the primary task is scarce
    num_classes: int = 3
    cues_per_class: int = 8
    negative_auxiliary_classes: int = 2  # classes of the negative control's random auxiliary label
    min_words: int = 12
    max_words: int = 20

    def __post_init__(self):
        if not 0 < self.primary_label_rate <= 1:
            raise ValueError(f"primary_label_rate must be in (0, 1], got {self.primary_label_rate}")
        if self.num_classes < 2 or self.cues_per_class < 1 or self.negative_auxiliary_classes < 2:
            raise ValueError("num_classes and negative_auxiliary_classes must be >= 2 and cues_per_class >= 1")
        if self.num_classes * self.cues_per_class > len(CUE_WORDS):
            raise ValueError(f"num_classes * cues_per_class must be <= {len(CUE_WORDS)} (the cue words available)")
        if not 0 < self.min_words <= self.max_words:
            raise ValueError(f"need 0 < min_words <= max_words, got {self.min_words}, {self.max_words}")
        if min(self.train_documents, self.validation_documents, self.test_documents) < 1:
            raise ValueError("every split needs at least one document")

    @property
    def cue_words(self) -> list[str]:
        return CUE_WORDS[: self.num_classes * self.cues_per_class]


def primary_task_name(control: str) -> str:
    return f"primary_{_check_control(control)}"


def auxiliary_task_name(control: str) -> str:
    return f"auxiliary_{_check_control(control)}"


def _check_control(control: str) -> str:
    if control not in CONTROLS:
        raise ValueError(f"unknown control {control!r}; expected one of {list(CONTROLS)}")
    return control


def control_tasks(control: str, config: ControlsConfig | None = None) -> list[dict]:
    """Task specs (primary, auxiliary) of one control."""
    config = config or ControlsConfig()
    primary = {"name": primary_task_name(control), "level": DOCUMENT, "problem_type": SINGLE_LABEL,
               "labels": [f"class_{k}" for k in range(config.num_classes)]}
    auxiliary_classes = config.num_classes if control == "positive" else config.negative_auxiliary_classes
    auxiliary = {"name": auxiliary_task_name(control), "level": DOCUMENT, "problem_type": SINGLE_LABEL,
                 "labels": [f"aux_{k}" for k in range(auxiliary_classes)]}
    return [primary, auxiliary]


def _document(rng: random.Random, config: ControlsConfig) -> tuple[str, int]:
    """A text hiding one cue word among shared filler words, and its latent class."""
    cues = config.cue_words
    cue_index = rng.randrange(len(cues))
    words = []
    target = rng.randint(config.min_words, config.max_words)
    while len(words) < target:  # the shared filler only (lexical_shift=0): no domain words, no cue words
        words += _filler_sentence(rng, "URW", 0.0).rstrip(".").lower().split()
    words = words[:target]
    words.insert(rng.randint(0, len(words)), cues[cue_index])
    return " ".join(words).capitalize() + ".", cue_index // config.cues_per_class


def control_examples(control: str, config: ControlsConfig | None = None) -> dict[str, list[dict]]:
    """``{"train", "validation", "test"}`` -> multi-task example dicts of one control (columns: doc_id, text,
    mentions, control, and the control's two task columns)."""
    config = config or ControlsConfig()
    primary, auxiliary = control_tasks(control, config)
    texts = random.Random(f"transfer-control-texts-{config.seed}")  # the same texts and primary labels for both controls
    noise = random.Random(f"transfer-control-negative-auxiliary-{config.seed}")  # independent of the texts
    sizes = {"train": config.train_documents, "validation": config.validation_documents, "test": config.test_documents}
    out = {}
    for split in SPLITS:
        size = sizes[split]
        # round(rate * size) training texts carry a primary label (at least num_classes), plus one text of any class
        # they miss (below).
        labelled = set(range(size)) if split != "train" else set(
            texts.sample(range(size), max(config.num_classes, round(config.primary_label_rate * size))))
        rows, latents = [], []
        for i in range(size):
            text, latent = _document(texts, config)
            latents.append(latent)
            if split != "train":
                aux = None  # a training signal only: selection and scores use the primary task alone
            elif control == "positive":
                aux = auxiliary["labels"][latent]
            else:
                aux = auxiliary["labels"][noise.randrange(len(auxiliary["labels"]))]
            rows.append({"doc_id": f"{control}_{split}_{i:05d}", "control": control, "text": text, "mentions": [],
                         primary["name"]: primary["labels"][latent] if i in labelled else None, auxiliary["name"]: aux})
        out[split] = rows
        if split == "train":
            train_latents = latents
    # A class without a labelled training text cannot be learnt by either arm: label the first text of each such
    # class (the default corpus has every class labelled already, so its data is unchanged).
    labelled_classes = {row[primary["name"]] for row in out["train"]}
    for row, latent in zip(out["train"], train_latents):
        if primary["labels"][latent] not in labelled_classes:
            row[primary["name"]] = primary["labels"][latent]
            labelled_classes.add(primary["labels"][latent])
    return out


def controls_datasets(config: ControlsConfig | None = None) -> dict[str, datasets.Dataset]:
    """Both controls in one dataset per split; a control's rows carry ``None`` for the other control's tasks."""
    config = config or ControlsConfig()
    task_columns = [t["name"] for c in CONTROLS for t in control_tasks(c, config)]
    per_control = {c: control_examples(c, config) for c in CONTROLS}
    out = {}
    for split in SPLITS:
        rows = [{**{t: None for t in task_columns}, **row} for c in CONTROLS for row in per_control[c][split]]
        features = datasets.Features({
            "doc_id": datasets.Value("string"), "text": datasets.Value("string"), "control": datasets.Value("string"),
            "mentions": [{"start": datasets.Value("int64"), "end": datasets.Value("int64")}],
            **{t: datasets.Value("string") for t in task_columns},
        })
        out[split] = datasets.Dataset.from_list(rows, features=features)
    return out
