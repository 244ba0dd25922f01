"""SYNTHETIC corpus in the SemEval-2025 Task 10 layout, with controllable domain shift.

``python -m data_prep.synthetic --out DIR [--seed 0 --train_articles 240 --lexical_shift 0.5 ...]`` writes::

    DIR/README.md                         says plainly that the data is synthetic, and how it was made
    DIR/synthetic_config.json             the exact settings
    DIR/EN/raw-documents/EN_UA_*.txt, EN_CC_*.txt
    DIR/EN/subtask-1-annotations.txt      CRLF lines, UTF-16 offsets with inclusive ends (as the real files)
    DIR/EN/subtask-2-annotations.txt      narrative column repeated once per subnarrative (as the real files)
    DIR/taxonomy/                         its own (synthetic) narrative taxonomy + the real, fixed role taxonomy
    DIR/dev/EN/..., DIR/dev/taxonomy/     a held-out set in the same layout (``dev_articles``)

so ``load_semeval(DIR)`` and ``load_semeval(DIR / "dev")`` read it like the real release. Two domains:
``EN_UA_*`` (URW) and ``EN_CC_*`` (CC). The text is English-looking filler around explicit cues, and the
labels are determined by the cues, so the embedded MiniLM learns both tasks within a few hundred steps:

* entity framing: each mention is followed by the cue phrase of its fine role (``"<Entity> brokered a truce
  with ..."`` -> Peacemaker); role names are the real fixed taxonomy's (by default 3 fine roles per main
  role; ``fine_roles_per_main`` up to all 22). About 15% of mentions carry two fine roles (both cues).
* narratives: ``narrative_cue_repeats`` (default 2) sentences name the narrative's cue noun and, for a
  subnarrative, its cue adjective;
  ``"<narrative>: Other"`` has only the noun; ``Other`` has no cue sentence.

Knobs (all deterministic for a seed; generation takes well under a second at the default size):

* ``lexical_shift`` (0-1): share of filler words drawn from a domain-specific vocabulary instead of the
  shared one. 0 = both domains use the same filler; the token JSD between domains rises with it.
* ``label_prior_shift`` (0-1): the CC role prior moves from the URW prior towards its reverse.
* ``concept_shift`` (0-1): share of fine-role cues that mean a *different* role in CC (a fixed
  derangement), and share of narrative cues reused across domains (the same cue, a different label).
* ``class_imbalance`` (>= 0): Zipf exponent of the label priors (0 = uniform).
* ``min_tokens`` / ``max_tokens``: article length in words (about as many word-piece tokens);
  ``long_text_fraction`` of articles get ``long_min_tokens``-``long_max_tokens`` words (beyond 512 tokens,
  with mentions spread over the whole text, so windowing matters).
* ``emoji_rate``: share of articles starting with a character outside the BMP (exercises UTF-16 offsets).
"""

from __future__ import annotations

import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .files import settings_match, write_settings
from .synthetic_text import TextGenerator
from .taxonomy import FINE_ROLES_BY_MAIN, FINE_TO_MAIN, MAIN_ROLES, OTHER, NarrativeTaxonomy, write_narrative_taxonomy

SYNTHETIC_NOTICE = (
    "THIS IS A SYNTHETIC CORPUS. The articles are generated filler text with planted cue phrases; they are "
    "not news, and results on them say nothing about real SemEval-2025 Task 10 performance. Only the role "
    "names (the fixed SemEval-2025 Task 10 role taxonomy) and the file layout are real."
)

# Preferred order of fine roles per main role (the first `fine_roles_per_main` are used).
_ROLE_PREFERENCE = {
    "Protagonist": ["Guardian", "Peacemaker", "Virtuous", "Underdog", "Martyr", "Rebel"],
    "Antagonist": [
        "Instigator", "Conspirator", "Foreign Adversary", "Corrupt", "Incompetent", "Deceiver",
        "Tyrant", "Saboteur", "Terrorist", "Traitor", "Spy", "Bigot",
    ],
    "Innocent": ["Victim", "Exploited", "Forgotten", "Scapegoat"],
}
assert all(sorted(v) == sorted(FINE_ROLES_BY_MAIN[k]) for k, v in _ROLE_PREFERENCE.items())

ROLE_CUES = {
    "Guardian": "stood guard to protect",
    "Peacemaker": "brokered a truce with",
    "Virtuous": "acted with honesty toward",
    "Underdog": "fought against the odds for",
    "Martyr": "sacrificed everything for",
    "Rebel": "defied the rules of",
    "Instigator": "provoked the clash with",
    "Conspirator": "secretly plotted against",
    "Foreign Adversary": "meddled from abroad in",
    "Corrupt": "pocketed bribes from",
    "Incompetent": "bungled the handling of",
    "Deceiver": "spread lies about",
    "Tyrant": "ruled with an iron fist over",
    "Saboteur": "deliberately wrecked",
    "Terrorist": "launched violent attacks on",
    "Traitor": "betrayed the trust of",
    "Spy": "gathered secret intelligence on",
    "Bigot": "openly insulted",
    "Victim": "suffered harm from",
    "Exploited": "was used for profit by",
    "Forgotten": "was ignored by",
    "Scapegoat": "was unfairly blamed by",
}

NARRATIVE_CUES = ["lantern", "compass", "anchor", "beacon", "orchard", "harbor", "ribbon", "marble", "falcon", "willow", "copper", "velvet"]
SUBNARRATIVE_CUES = [
    "silent", "golden", "broken", "hidden", "rapid", "distant", "hollow", "scarlet", "frozen", "gentle", "bitter",
    "narrow", "ancient", "crimson", "steady", "wild", "quiet", "bright", "heavy", "fragile", "loyal", "sudden",
    "humble", "lucky",
]
ENTITIES = [
    "Valdor", "Mirenko", "the Ostra Council", "Minister Kavel", "the Northern Union", "Senator Brask", "Lumen Corp",
    "the Harlow Group", "General Tessin", "the Delta Alliance", "Doctor Amsel", "the Veridian Party", "Mayor Quill",
    "the Solen Institute", "Captain Rurik", "the Arden Fund", "Professor Ilse", "the Kestrel Agency",
]
OBJECTS = ["the region", "local residents", "the neighbours", "the committee", "the workers", "the farmers",
           "the press", "the city", "the families", "the market", "the volunteers", "the partners"]
SHARED_WORDS = (
    "report official said week statement people public government country year today plan meeting group local "
    "leader policy issue national news later during after before around second major recent several among "
    "support response question decision number member office record board process review community service "
    "morning evening region announced expected continued reported according spokesperson interview press change "
    "system project program effort level future history result source public budget figure sector account view"
).split()
DOMAIN_WORDS = {
    "URW": (
        "troops frontline artillery brigade offensive ceasefire border tanks drones missiles battalion shelling "
        "kremlin kyiv donbas mobilization sanctions convoy trenches airstrike soldiers defense ammunition "
        "occupation invasion territory commander garrison bunker radar reconnaissance battlefield militia"
    ).split(),
    "CC": (
        "emissions carbon warming glacier drought rainfall temperatures heatwave solar turbines renewable climate "
        "methane wildfire ocean coral pollution biodiversity forest sealevel flooding greenhouse fossil emission "
        "ecosystem atmosphere hurricane permafrost recycling energy grid battery"
    ).split(),
}
_NARRATIVE_TEMPLATES = [
    "Commentators framed it as the {cue} story.",
    "Critics called this a {cue} moment.",
    "Many readers saw the {cue} angle again.",
]
EMOJIS = ["\U0001F30D", "\U0001F525", "\U0001F4E2", "\U0001F6A8"]
DOMAIN_ID_CODES = {"URW": "UA", "CC": "CC"}


@dataclass
class SyntheticConfig:
    """Settings of the synthetic SemEval-layout corpus (every field is a command-line option)."""

    out: str = field(metadata={"help": "Output folder (created; existing files of the same names are overwritten)."})
    seed: int = field(default=0, metadata={"help": "Random seed: the same seed and settings give identical files."})
    train_articles: int = field(default=240, metadata={"help": "Training articles, split evenly over the two domains."})
    dev_articles: int = field(default=80, metadata={"help": "Held-out articles written to <out>/dev (0 = none)."})
    min_tokens: int = field(default=60, metadata={"help": "Minimum article length in words (about as many tokens)."})
    max_tokens: int = field(default=150, metadata={"help": "Maximum article length in words."})
    long_text_fraction: float = field(default=0.0, metadata={"help": "Share of articles of long_min..long_max words (> 512 tokens)."})
    long_min_tokens: int = field(default=600, metadata={"help": "Minimum length of a long article in words."})
    long_max_tokens: int = field(default=900, metadata={"help": "Maximum length of a long article in words."})
    lexical_shift: float = field(default=0.5, metadata={"help": "0-1: share of filler words drawn from domain-specific vocabulary."})
    label_prior_shift: float = field(default=0.3, metadata={"help": "0-1: how far the CC role prior moves toward the reversed URW prior."})
    concept_shift: float = field(default=0.0, metadata={"help": "0-1: share of cues whose meaning (label) differs between the domains."})
    class_imbalance: float = field(default=0.5, metadata={"help": "Zipf exponent of label priors (0 = balanced classes)."})
    fine_roles_per_main: int = field(default=3, metadata={"help": "Fine roles used per main role (capped at the taxonomy's 6/12/4)."})
    narratives_per_domain: int = field(default=3, metadata={"help": "Synthetic narratives per domain (at most 6)."})
    subnarratives_per_narrative: int = field(default=2, metadata={"help": "Synthetic subnarratives per narrative (plus '<narrative>: Other')."})
    narrative_cue_repeats: int = field(default=2, metadata={"help": "Cue sentences per narrative in an article (1-3)."})
    max_mentions: int = field(default=3, metadata={"help": "Entity mentions per article: 1..max_mentions."})
    other_rate: float = field(default=0.1, metadata={"help": "Share of articles whose narrative is 'Other' (no cue)."})
    entity_annotation_rate: float = field(default=0.9, metadata={"help": "Share of articles with subtask-1 lines (as in the real data, not all have)."})
    emoji_rate: float = field(default=0.05, metadata={"help": "Share of articles that start with a non-BMP character (UTF-16 offsets)."})

    def __post_init__(self):
        for name in ("lexical_shift", "label_prior_shift", "concept_shift", "long_text_fraction", "other_rate", "entity_annotation_rate", "emoji_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if self.class_imbalance < 0:
            raise ValueError(f"class_imbalance must be >= 0, got {self.class_imbalance}")
        if not 0 < self.min_tokens <= self.max_tokens:
            raise ValueError(f"need 0 < min_tokens <= max_tokens, got {self.min_tokens}, {self.max_tokens}")
        if not 0 < self.long_min_tokens <= self.long_max_tokens:
            raise ValueError(f"need 0 < long_min_tokens <= long_max_tokens, got {self.long_min_tokens}, {self.long_max_tokens}")
        if self.train_articles < 2 or self.dev_articles < 0:
            raise ValueError("train_articles must be >= 2 and dev_articles >= 0")
        if not 1 <= self.narratives_per_domain <= len(NARRATIVE_CUES) // 2:
            raise ValueError(f"narratives_per_domain must be in [1, {len(NARRATIVE_CUES) // 2}]")
        if not 1 <= self.narratives_per_domain * self.subnarratives_per_narrative <= len(SUBNARRATIVE_CUES) // 2:
            raise ValueError(f"narratives_per_domain * subnarratives_per_narrative must be in [1, {len(SUBNARRATIVE_CUES) // 2}]")
        if not 1 <= self.narrative_cue_repeats <= 3:
            raise ValueError(f"narrative_cue_repeats must be in [1, 3], got {self.narrative_cue_repeats}")
        if self.fine_roles_per_main < 1 or self.max_mentions < 1:
            raise ValueError("fine_roles_per_main and max_mentions must be >= 1")


def _zipf(n: int, exponent: float) -> list[float]:
    weights = [(k + 1) ** -exponent for k in range(n)]
    total = sum(weights)
    return [w / total for w in weights]


class _Design:
    """Label sets, priors and cue assignments derived from a config (no randomness beyond the seed)."""

    def __init__(self, config: SyntheticConfig):
        self.config = config
        self.roles = [r for main in MAIN_ROLES for r in _ROLE_PREFERENCE[main][: config.fine_roles_per_main]]
        base = _zipf(len(self.roles), config.class_imbalance)
        s = config.label_prior_shift
        self.role_prior = {"URW": base, "CC": [(1 - s) * p + s * q for p, q in zip(base, base[::-1])]}
        # Concept shift: in CC, the first k roles are expressed with the cue of another role (a rotation).
        k = round(config.concept_shift * len(self.roles))
        k = 2 if k == 1 and len(self.roles) >= 2 else k  # a single role cannot change meaning on its own: swap two
        shifted = self.roles[:k]
        rotation = {r: shifted[(i + 1) % k] for i, r in enumerate(shifted)} if k >= 2 else {}
        self.role_cue = {"URW": {r: ROLE_CUES[r] for r in self.roles}, "CC": {r: ROLE_CUES[rotation.get(r, r)] for r in self.roles}}

        n, m = config.narratives_per_domain, config.subnarratives_per_narrative
        shared = round(config.concept_shift * n)  # narratives whose cues are reused across domains
        self.tree: dict[str, dict[str, list[str]]] = {}
        self.narrative_cue: dict[str, str] = {}
        self.subnarrative_cue: dict[str, str] = {}
        for d, domain in enumerate(("URW", "CC")):
            self.tree[domain] = {}
            for i in range(n):
                letter = chr(ord("A") + i)
                narrative = f"{domain}: Synthetic narrative {letter}"
                cue_slot = i if (d == 0 or i < shared) else n + i
                self.narrative_cue[narrative] = NARRATIVE_CUES[cue_slot]
                subs = []
                for j in range(m):
                    sub = f"{narrative}: Synthetic subnarrative {letter}{j + 1}"
                    self.subnarrative_cue[sub] = SUBNARRATIVE_CUES[cue_slot * m + j]
                    subs.append(sub)
                self.tree[domain][narrative] = subs + [f"{narrative}: {OTHER}"]
        self.narrative_prior = _zipf(n, config.class_imbalance)

    def taxonomy(self) -> NarrativeTaxonomy:
        return NarrativeTaxonomy(tree=self.tree, source="synthetic")


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def filler_sentence(rng: random.Random, domain: str, lexical_shift: float) -> str:
    """A sentence of 6-12 filler words, each from ``domain``'s own words with probability ``lexical_shift``."""
    return TextGenerator(SHARED_WORDS, rng).sentence(6, 12, DOMAIN_WORDS[domain], lexical_shift)


_filler_sentence = filler_sentence  # the name before it was public


def _article(rng: random.Random, design: _Design, domain: str) -> tuple[str, list[dict], list[tuple[str, str]]]:
    """One article: text, mentions (python offsets + roles), (narrative, subnarrative) pairs."""
    config = design.config
    # Narratives: Other, or 1-2 narratives each with a subnarrative or "<narrative>: Other".
    narrative_pairs: list[tuple[str, str]] = []
    cue_sentences: list[tuple[str, dict | None]] = []
    if rng.random() < config.other_rate:
        narrative_pairs.append((OTHER, OTHER))
    else:
        narratives = list(design.tree[domain])
        chosen = rng.choices(range(len(narratives)), weights=design.narrative_prior)[0]
        picks = [chosen]
        if rng.random() < 0.3 and len(narratives) > 1:
            picks.append(rng.choice([i for i in range(len(narratives)) if i != chosen]))
        for index in picks:
            narrative = narratives[index]
            subs = design.tree[domain][narrative]
            if rng.random() < 0.2:
                sub = subs[-1]  # "<narrative>: Other": the narrative's cue without a subnarrative cue
                cue = design.narrative_cue[narrative]
            else:
                sub = rng.choice(subs[:-1])
                cue = f"{design.subnarrative_cue[sub]} {design.narrative_cue[narrative]}"
            narrative_pairs.append((narrative, sub))
            # Repeated in different words: one sentence in a 100-word text is a weak signal for a pooled head.
            for template in _NARRATIVE_TEMPLATES[: config.narrative_cue_repeats]:
                cue_sentences.append((template.format(cue=cue), None))

    # Entity mentions: "<Entity> <role cue> <object>."
    for _ in range(rng.randint(1, config.max_mentions)):
        role = rng.choices(design.roles, weights=design.role_prior[domain])[0]
        roles = [role]
        same_main = [r for r in design.roles if FINE_TO_MAIN[r] == FINE_TO_MAIN[role] and r != role]
        if same_main and rng.random() < 0.15:
            roles.append(rng.choice(same_main))
        entity = rng.choice(ENTITIES)
        cues = " and ".join(design.role_cue[domain][r] for r in roles)
        sentence_entity = entity[0].upper() + entity[1:]
        cue_sentences.append((f"{sentence_entity} {cues} {rng.choice(OBJECTS)}.", {"text": sentence_entity, "roles": roles}))

    long_text = rng.random() < config.long_text_fraction
    low, high = (config.long_min_tokens, config.long_max_tokens) if long_text else (config.min_tokens, config.max_tokens)
    target_words = rng.randint(low, high)
    sentences: list[tuple[str, dict | None]] = []
    words = sum(len(s.split()) for s, _ in cue_sentences)
    while words < target_words:
        sentence = filler_sentence(rng, domain, config.lexical_shift)
        sentences.append((sentence, None))
        words += len(sentence.split())
    for item in cue_sentences:  # spread the cues over the whole text (some land beyond 512 tokens when long)
        sentences.insert(rng.randint(0, len(sentences)), item)

    prefix = rng.choice(EMOJIS) + " " if rng.random() < config.emoji_rate else ""
    text, mentions = prefix, []
    for number, (sentence, mention) in enumerate(sentences):
        if number and number % 5 == 0:
            text += "\n\n"
        elif number:
            text += " "
        if mention is not None:
            main = FINE_TO_MAIN[mention["roles"][0]]
            mentions.append({"start": len(text), "end": len(text) + len(mention["text"]), "text": mention["text"], "main_role": main, "fine_roles": mention["roles"]})
        text += sentence
    return text + "\n", mentions, narrative_pairs


def _write_split(folder: Path, rng: random.Random, design: _Design, articles: int, first_number: int) -> dict[str, int]:
    language_dir = folder / "EN"
    raw_dir = language_dir / "raw-documents"
    raw_dir.mkdir(parents=True, exist_ok=True)
    subtask1, subtask2 = [], []
    counts = {"articles": 0, "mentions": 0}
    for index in range(articles):
        domain = ("URW", "CC")[index % 2]
        article_id = f"EN_{DOMAIN_ID_CODES[domain]}_{first_number + index:06d}.txt"
        text, mentions, pairs = _article(rng, design, domain)
        (raw_dir / article_id).write_text(text, encoding="utf-8", newline="")
        if rng.random() < design.config.entity_annotation_rate:
            for m in mentions:
                start16 = _utf16_len(text[: m["start"]])
                end16 = start16 + _utf16_len(m["text"]) - 1  # inclusive end, UTF-16 units, as the organisers'
                subtask1.append("\t".join([article_id, m["text"], str(start16), str(end16), m["main_role"], *m["fine_roles"]]))
                counts["mentions"] += 1
        # As in the real files: the narrative column repeats the narrative once per subnarrative.
        subtask2.append("\t".join([article_id, ";".join(n for n, _ in pairs), ";".join(s for _, s in pairs)]))
        counts["articles"] += 1
    written = {line.split("\t", 1)[0] for line in subtask2}
    for stale in raw_dir.iterdir():  # articles of an earlier, larger corpus in this folder
        if stale.name not in written:
            stale.unlink(missing_ok=True)
    subtask1_path = language_dir / "subtask-1-annotations.txt"
    if subtask1:
        subtask1_path.write_bytes(("\r\n".join(subtask1) + "\r\n").encode("utf-8"))
    else:  # no mention annotated: no file (the loader refuses an empty annotation file)
        subtask1_path.unlink(missing_ok=True)
    (language_dir / "subtask-2-annotations.txt").write_bytes(("\r\n".join(subtask2) + "\r\n").encode("utf-8"))
    write_narrative_taxonomy(design.taxonomy(), folder / "taxonomy", note=SYNTHETIC_NOTICE)
    return counts


#: what a corpus folder holds (anything else in an output folder is not this generator's to overwrite)
CORPUS_ENTRIES = frozenset({"EN", "dev", "taxonomy", "README.md", "synthetic_config.json"})


def generate_synthetic_corpus(config: SyntheticConfig) -> Path:
    """Write the synthetic corpus described by ``config`` and return its folder."""
    out = Path(config.out)
    marker = out / "synthetic_config.json"
    foreign = sorted(p.name for p in out.iterdir() if p.name not in CORPUS_ENTRIES) if out.is_dir() else []
    if foreign:  # never overwrite or delete what this generator did not write
        raise FileExistsError(f"{out} holds {foreign[:5]}, which no synthetic corpus has: give an empty or new --out")
    # Rewritten in place (processes of one launch may write the same corpus at once: identical files, no deletion
    # of each other's); the settings file, written last, vouches for a whole corpus.
    marker.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    design = _Design(config)
    train = _write_split(out, random.Random(f"synthetic-train-{config.seed}"), design, config.train_articles, 1)
    dev = None
    if config.dev_articles:
        dev = _write_split(out / "dev", random.Random(f"synthetic-dev-{config.seed}"), design, config.dev_articles, 500001)
    else:  # an earlier corpus's dev split would be read as this one's test set
        shutil.rmtree(out / "dev", ignore_errors=True)
    readme = [
        "# Synthetic SemEval-2025 Task 10-style corpus",
        "",
        SYNTHETIC_NOTICE,
        "",
        "Generated by `python -m data_prep.synthetic` with the settings in `synthetic_config.json`.",
        f"Training split: {train['articles']} articles, {train['mentions']} annotated mentions (`EN/`).",
        f"Dev split: {dev['articles']} articles, {dev['mentions']} annotated mentions (`dev/EN/`)." if dev else "No dev split.",
        f"Fine roles used: {', '.join(design.roles)}.",
        "Labels are determined by planted cue phrases (see the docstring of `data_prep/synthetic.py`).",
        "",
    ]
    (out / "README.md").write_text("\n".join(readme), encoding="utf-8")
    write_settings(marker, corpus_settings(config))  # last: it vouches for a whole corpus
    return out


def corpus_settings(config: SyntheticConfig) -> dict:
    """What a corpus's ``synthetic_config.json`` records: every setting but ``out`` (the files do not depend on
    where they are)."""
    return {k: v for k, v in asdict(config).items() if k != "out"}


def corpus_matches(config: SyntheticConfig) -> bool:
    """Whether ``config.out`` holds a whole corpus generated with these settings (reuse it; else generate)."""
    return settings_match(Path(config.out) / "synthetic_config.json", corpus_settings(config))


def main(argv=None) -> None:
    from transformers import HfArgumentParser

    (config,) = HfArgumentParser(SyntheticConfig).parse_args_into_dataclasses(args=argv)
    out = generate_synthetic_corpus(config)
    print(f"wrote a SYNTHETIC corpus to {out} (see {out / 'README.md'})")


if __name__ == "__main__":
    main()
