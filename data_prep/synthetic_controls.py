"""SYNTHETIC known-answer controls for multi-task transfer: two tiny corpora whose answer is known in advance.

Each document hides one *cue word* among filler words (the filler and cue words of :mod:`data_prep.synthetic`).
Every latent class ``z`` owns ``cues_per_class`` cue words (8 by default, 24 cue words in all); the document's
cue word fixes its class. Two document-level tasks are labelled on it:

* the **primary** task (``primary_<control>``): ``z``; labels are SCARCE in training (only ``primary_label_rate``
  of the training texts carry one, so about a third of the cue words never occur in a labelled text), dense on
  validation and test. A single-task model cannot know the class of a cue word it never saw labelled.
* the **auxiliary** task (``auxiliary_<control>``), labelled on EVERY training text:

  - ``positive`` control: the same latent ``z`` under other label names. Learning it teaches the shared encoder
    to map every cue word to its class, which is what the primary head needs and cannot learn from its few
    labels: a multi-task model must beat the single-task model on the primary task.
  - ``negative`` control: a label that carries no information about ``z``, so a multi-task model must not be
    significantly BETTER than the single-task one (it may be worse: the unrelated task competes for the encoder). By default (``negative_auxiliary="decoy"``) it is the class
    of a second planted *decoy* word (one decoy word per class), drawn independently of the cue (every text of
    both controls carries one, so the two corpora differ only in their auxiliary labels). ``"random"`` draws the label at random,
    independent of the text; a shared encoder then memorises noise, and on the default settings that HURTS
    the primary task significantly: it tests negative transfer from label noise, not the absence of transfer.

If a study pipeline finds no gain on the positive control, or a "significant" difference on the negative one,
the pipeline (not multi-task learning) is what is being measured. The corpora are deterministic for a seed
and take milliseconds to build.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import datasets

from .synthetic import DOMAIN_WORDS, NARRATIVE_CUES, SUBNARRATIVE_CUES, _filler_sentence
from modeling.vocabulary import DOCUMENT, SINGLE_LABEL

CONTROLS = ("positive", "negative")
#: Words that never occur in the filler (the shared words), so a document's cue and decoy are unambiguous.
CUE_WORDS = NARRATIVE_CUES + SUBNARRATIVE_CUES
DECOY_WORDS = DOMAIN_WORDS["CC"]
NEGATIVE_AUXILIARIES = ("decoy", "random")

@dataclass
class ControlsConfig:
    """Sizes of the control corpora (the same for both controls)."""

    seed: int = 0
    train_documents: int = 240
    validation_documents: int = 60
    test_documents: int = 150
    primary_label_rate: float = 0.10  # share of training texts with a primary label: the primary task is scarce
    num_classes: int = 3
    cues_per_class: int = 8
    min_words: int = 12
    max_words: int = 20
    negative_auxiliary: str = "decoy"  # decoy | random (see the module docstring)

    def __post_init__(self):
        if self.negative_auxiliary not in NEGATIVE_AUXILIARIES:
            raise ValueError(f"negative_auxiliary must be one of {list(NEGATIVE_AUXILIARIES)}, got {self.negative_auxiliary!r}")
        if not 0 < self.primary_label_rate <= 1:
            raise ValueError(f"primary_label_rate must be in (0, 1], got {self.primary_label_rate}")
        if self.num_classes < 2 or self.cues_per_class < 1:
            raise ValueError("num_classes must be >= 2 and cues_per_class >= 1")
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
    auxiliary = {"name": auxiliary_task_name(control), "level": DOCUMENT, "problem_type": SINGLE_LABEL,
                 "labels": [f"aux_{k}" for k in range(config.num_classes)]}
    return [primary, auxiliary]


def _document(rng: random.Random, config: ControlsConfig, control: str, labelled_primary: bool) -> dict:
    cues = config.cue_words
    cue_index = rng.randrange(len(cues))
    words = []
    target = rng.randint(config.min_words, config.max_words)
    while len(words) < target:  # the shared filler only (lexical_shift=0): no domain words, no cue words
        words += _filler_sentence(rng, "URW", 0.0).rstrip(".").lower().split()
    words = words[:target]
    # One decoy word per class, independent of the cue: the decoy says nothing about the latent. A single word per
    # class makes the decoy task quick to learn, so its gradient fades instead of competing with the primary task.
    decoy_class = rng.randrange(config.num_classes)
    words.insert(rng.randint(0, len(words)), DECOY_WORDS[decoy_class])
    words.insert(rng.randint(0, len(words)), cues[cue_index])
    latent = cue_index // config.cues_per_class
    if control == "positive":
        auxiliary = latent
    elif config.negative_auxiliary == "decoy":
        auxiliary = decoy_class
    else:
        auxiliary = rng.randrange(config.num_classes)
    primary, aux = control_tasks(control, config)
    return {
        "text": " ".join(words).capitalize() + ".",
        "mentions": [],
        primary["name"]: primary["labels"][latent] if labelled_primary else None,
        aux["name"]: aux["labels"][auxiliary],
    }


def control_examples(control: str, config: ControlsConfig | None = None) -> dict[str, list[dict]]:
    """``{"train", "validation", "test"}`` -> multi-task example dicts of one control (columns: doc_id, text,
    mentions, control, and the control's two task columns)."""
    config = config or ControlsConfig()
    rng = random.Random(f"transfer-control-{control}-{config.seed}")
    sizes = {"train": config.train_documents, "validation": config.validation_documents, "test": config.test_documents}
    out = {}
    for split, size in sizes.items():
        # Exactly round(rate * size) training texts carry a primary label (at least one per class).
        labelled = set(range(size)) if split != "train" else set(
            rng.sample(range(size), max(config.num_classes, round(config.primary_label_rate * size))))
        out[split] = [{"doc_id": f"{control}_{split}_{i:05d}", "control": control,
                       **_document(rng, config, control, i in labelled)} for i in range(size)]
    return out


def controls_datasets(config: ControlsConfig | None = None) -> dict[str, datasets.Dataset]:
    """Both controls in one dataset per split; a control's rows carry ``None`` for the other control's tasks."""
    config = config or ControlsConfig()
    task_columns = [t["name"] for c in CONTROLS for t in control_tasks(c, config)]
    per_control = {c: control_examples(c, config) for c in CONTROLS}
    out = {}
    for split in ("train", "validation", "test"):
        rows = [{**{t: None for t in task_columns}, **row} for c in CONTROLS for row in per_control[c][split]]
        features = datasets.Features({
            "doc_id": datasets.Value("string"), "text": datasets.Value("string"), "control": datasets.Value("string"),
            "mentions": [{"start": datasets.Value("int64"), "end": datasets.Value("int64")}],
            **{t: datasets.Value("string") for t in task_columns},
        })
        out[split] = datasets.Dataset.from_list(rows, features=features)
    return out

