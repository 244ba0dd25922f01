"""SYNTHETIC helpdesk-ticket table: the default data of the ticket-router recipe.

``python -m data_prep.synthetic_tickets --out tickets.csv [--rows 1200 --seed 0 ...]`` writes a table
(``.csv``, ``.jsonl`` or ``.parquet`` by suffix) with columns ``ticket_id`` (``SYN-...``: synthetic),
``title``, ``body``, ``category``, ``urgency``, ``queue``. The texts are short and of varied length
(log-normal, median about 30 word-piece tokens), made of filler words around cue words.

The three label columns are related but none is a function of another:

* ``category`` (6 classes) is signalled by category cue words in the text;
* ``queue`` (4 classes) follows the category's default queue with probability ``queue_consistency``
  and is otherwise drawn at random - with its own cue words ("escalate to the ... team") - so it is
  learnable from the text but not from the category alone;
* ``urgency`` (low/medium/high) is signalled by urgency cue words; its prior depends on the category.

Each label column has its own share of missing values (empty cells = no label for that task).
Run ``data_prep.audit_label_leakage`` on the result: no pair is flagged at the default settings.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .files import settings_match, write_settings
from .synthetic_text import TextGenerator

CATEGORIES = {
    "access": ["password", "login", "account", "locked", "permission"],
    "hardware": ["laptop", "monitor", "keyboard", "printer", "charger"],
    "network": ["wifi", "vpn", "connection", "router", "bandwidth"],
    "software": ["install", "license", "update", "application", "crash"],
    "billing": ["invoice", "payment", "refund", "charge", "receipt"],
    "hr": ["payroll", "holiday", "contract", "onboarding", "recruiter"],
}
QUEUES = ["service_desk", "infrastructure", "applications", "finance_ops"]
DEFAULT_QUEUE = {"access": "service_desk", "hardware": "infrastructure", "network": "infrastructure",
                 "software": "applications", "billing": "finance_ops", "hr": "service_desk"}
QUEUE_CUES = {"service_desk": "front desk", "infrastructure": "infrastructure", "applications": "apps", "finance_ops": "finance"}
URGENCY_LEVELS = ["low", "medium", "high"]
URGENCY_CUES = {"low": ["whenever possible", "no rush", "when you can"], "medium": ["soon please", "this week"],
                "high": ["urgent", "asap", "blocking everyone", "immediately"]}
URGENCY_PRIOR = {"access": [0.2, 0.4, 0.4], "hardware": [0.4, 0.4, 0.2], "network": [0.2, 0.3, 0.5],
                 "software": [0.3, 0.5, 0.2], "billing": [0.5, 0.3, 0.2], "hr": [0.6, 0.3, 0.1]}
FILLER = ("hi hello please thanks team help issue request user need since today yesterday could would "
          "check see attached details regarding colleague office new still again problem working also "
          "kindly let know dear regards following morning afternoon system access time").split()


@dataclass
class SyntheticTicketsConfig:
    """Settings of the synthetic ticket table."""

    out: str = field(metadata={"help": "Output file (.csv, .jsonl or .parquet)."})
    rows: int = field(default=1200, metadata={"help": "Number of tickets."})
    seed: int = field(default=0, metadata={"help": "Random seed (same seed and settings -> identical file)."})
    median_words: int = field(default=24, metadata={"help": "Median words per ticket (about 30 word-piece tokens)."})
    length_spread: float = field(default=0.6, metadata={"help": "Log-normal sigma of the length (0 = fixed length)."})
    queue_consistency: float = field(default=0.75, metadata={"help": "Probability that the queue is set to the category's default queue; otherwise it is drawn from all 4 queues, default included (so the default's share is q + (1 - q) / 4)."})
    missing_category: float = field(default=0.1, metadata={"help": "Share of rows without a category label."})
    missing_urgency: float = field(default=0.25, metadata={"help": "Share of rows without an urgency label."})
    missing_queue: float = field(default=0.15, metadata={"help": "Share of rows without a queue label."})
    empty_title_rate: float = field(default=0.1, metadata={"help": "Share of rows with an empty title."})

    def __post_init__(self):
        for name in ("queue_consistency", "missing_category", "missing_urgency", "missing_queue", "empty_title_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.rows < 1 or self.median_words < 3:
            raise ValueError("rows must be >= 1 and median_words >= 3")
        if Path(self.out).suffix.lower() not in (".csv", ".jsonl", ".parquet"):
            raise ValueError(f"out must end in .csv, .jsonl or .parquet, got {self.out!r}")


def generate_tickets(config: SyntheticTicketsConfig) -> list[dict]:
    """The ticket rows (dicts) described by ``config``."""
    text = TextGenerator(FILLER, f"synthetic-tickets-{config.seed}")
    rng = text.rng
    categories = list(CATEGORIES)
    rows = []
    for number in range(config.rows):
        category = rng.choice(categories)
        queue = DEFAULT_QUEUE[category] if rng.random() < config.queue_consistency else rng.choice(QUEUES)
        urgency = rng.choices(URGENCY_LEVELS, weights=URGENCY_PRIOR[category])[0]
        words = text.length(config.median_words, config.length_spread, low=4)
        cues = [rng.choice(CATEGORIES[category]), rng.choice(URGENCY_CUES[urgency]), f"for the {QUEUE_CUES[queue]} team"]
        body = text.with_cues(text.words(max(1, words - sum(len(c.split()) for c in cues))), cues)
        title = "" if rng.random() < config.empty_title_rate else f"{rng.choice(CATEGORIES[category])} {rng.choice(FILLER)}"
        rows.append(
            {
                "ticket_id": f"SYN-{number + 1:06d}",
                "title": title,
                "body": " ".join(body),
                "category": None if rng.random() < config.missing_category else category,
                "urgency": None if rng.random() < config.missing_urgency else urgency,
                "queue": None if rng.random() < config.missing_queue else queue,
            }
        )
    return rows


def write_tickets(config: SyntheticTicketsConfig) -> Path:
    """Generate and write the table; returns its path (and writes ``<out>.config.json`` beside it)."""
    import pandas as pd

    out = Path(config.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(generate_tickets(config))
    suffix = out.suffix.lower()
    marker = _config_path(out)
    marker.unlink(missing_ok=True)  # the table is being replaced: no config may vouch for it until it is whole
    partial = out.with_name(f".{out.name}.{os.getpid()}.partial{out.suffix}")  # one per process of a launch
    if suffix == ".csv":
        frame.to_csv(partial, index=False)
    elif suffix == ".jsonl":
        frame.to_json(partial, orient="records", lines=True, force_ascii=False)
    else:
        frame.to_parquet(partial, index=False)
    os.replace(partial, out)  # a kill leaves the old table or the new one, never half of one
    write_settings(marker, _settings(config))  # last: it vouches for the table
    return out


def _config_path(out: Path) -> Path:
    return out.with_name(out.name + ".config.json")


def _settings(config: SyntheticTicketsConfig) -> dict:
    return {"synthetic": True, **{k: v for k, v in asdict(config).items() if k != "out"}}


def synthetic_table_matches(config: SyntheticTicketsConfig) -> bool:
    """Whether ``config.out`` holds a whole table generated with these settings (its config file, written last,
    says so): reuse it; else regenerate it."""
    return Path(config.out).is_file() and settings_match(_config_path(Path(config.out)), _settings(config))


def main(argv=None) -> None:
    from transformers import HfArgumentParser

    (config,) = HfArgumentParser(SyntheticTicketsConfig).parse_args_into_dataclasses(args=argv)
    out = write_tickets(config)
    print(f"wrote {config.rows} SYNTHETIC tickets to {out}")


if __name__ == "__main__":
    main()
