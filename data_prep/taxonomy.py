"""Label taxonomies of SemEval-2025 Task 10: the fixed entity-role hierarchy and the narrative trees.

Entity framing (subtask 1) has a taxonomy fixed by the task: 3 main roles over 22 fine roles, each fine
role under exactly one main role. It is hard-coded here (names as in the organisers' scorer and
``taxonomy_subtask1_2.json``) so that a fresh clone without the shared data folder still knows it.

Narratives (subtask 2) are a two-level tree per domain (``URW`` = Ukraine-Russia war, ``CC`` = climate
change): narrative -> subnarratives. Labels carry their domain as a prefix (``"URW: Praise of Russia"``);
``"Other"`` is a valid label in both columns (an article with no domain narrative), and a subnarrative can
be ``"<narrative>: Other"``. The tree is read from the organisers' taxonomy files when they are given
(:func:`load_narrative_taxonomy`) or inferred from labels (:meth:`NarrativeTaxonomy.from_labels`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

OTHER = "Other"
"""The explicit "no domain narrative" label (narratives and subnarratives), also used as a suffix."""

MAIN_ROLES: tuple[str, ...] = ("Protagonist", "Antagonist", "Innocent")

FINE_ROLES_BY_MAIN: dict[str, tuple[str, ...]] = {
    "Protagonist": ("Guardian", "Martyr", "Peacemaker", "Rebel", "Underdog", "Virtuous"),
    "Antagonist": (
        "Instigator",
        "Conspirator",
        "Tyrant",
        "Foreign Adversary",
        "Traitor",
        "Spy",
        "Saboteur",
        "Corrupt",
        "Incompetent",
        "Terrorist",
        "Deceiver",
        "Bigot",
    ),
    "Innocent": ("Forgotten", "Exploited", "Victim", "Scapegoat"),
}

FINE_ROLES: tuple[str, ...] = tuple(role for roles in FINE_ROLES_BY_MAIN.values() for role in roles)
"""The 22 fine roles, grouped by main role in the order of :data:`MAIN_ROLES`."""

FINE_TO_MAIN: dict[str, str] = {fine: main for main, fines in FINE_ROLES_BY_MAIN.items() for fine in fines}

DOMAINS: tuple[str, ...] = ("URW", "CC")

# Article ids look like "EN_UA_002668.txt" (English) or "RU-URW-1004.txt": the second field names the domain.
# Some languages' ids name none ("PT_230.txt", "BG_670.txt").
_ID_DOMAIN_CODES = {"UA": "URW", "URW": "URW", "CC": "CC"}
_ID_FIELD_SEPARATOR = re.compile(r"[_-]")

assert len(FINE_ROLES) == 22 and len(set(FINE_ROLES)) == 22


def domain_of_article_id(article_id: str) -> str | None:
    """``"URW"`` / ``"CC"`` from an id such as ``EN_UA_002668.txt`` or ``RU-URW-1004.txt``; ``None`` when the id
    names no domain (``PT_230.txt``)."""
    parts = _ID_FIELD_SEPARATOR.split(Path(article_id).stem)
    if len(parts) >= 2:
        return _ID_DOMAIN_CODES.get(parts[1].upper())
    return None


def domain_of_label(label: str) -> str | None:
    """The domain prefix of a narrative/subnarrative (``"URW: ..."`` -> ``"URW"``); ``None`` for ``Other``."""
    prefix, sep, _ = label.partition(":")
    if sep and prefix.strip() in DOMAINS:
        return prefix.strip()
    return None


def parent_of_subnarrative(subnarrative: str, narratives: Iterable[str] = ()) -> str:
    """The narrative a subnarrative belongs to.

    The longest known narrative that prefixes ``subnarrative`` followed by ``": "`` wins; without known
    narratives the parent is ``"<DOMAIN>: <name>"``, the text before the second ``": "``. ``"Other"`` is
    its own parent.
    """
    if subnarrative == OTHER:
        return OTHER
    best = ""
    for narrative in narratives:
        if subnarrative.startswith(narrative + ": ") and len(narrative) > len(best):
            best = narrative
    if best:
        return best
    parts = subnarrative.split(": ")
    if len(parts) < 3:
        raise ValueError(
            f"subnarrative {subnarrative!r} is not of the form '<DOMAIN>: <narrative>: <subnarrative>' "
            "and no taxonomy lists its narrative"
        )
    return ": ".join(parts[:2])


def is_well_formed_narrative_label(label: str) -> bool:
    """``Other`` or a label with a known domain prefix (``URW: ...`` / ``CC: ...``)."""
    return label == OTHER or domain_of_label(label) is not None


def check_roles(main_role: str, fine_roles: Iterable[str]) -> str | None:
    """Return a description of what is wrong with a (main role, fine roles) annotation, or ``None``."""
    if main_role not in FINE_ROLES_BY_MAIN:
        return f"main role {main_role!r} is not one of {list(MAIN_ROLES)}"
    fine_roles = list(fine_roles)
    if not fine_roles:
        return f"no fine role given under main role {main_role!r}"
    for fine in fine_roles:
        if fine not in FINE_TO_MAIN:
            return f"fine role {fine!r} is not one of the 22 fine roles of the task taxonomy"
        if FINE_TO_MAIN[fine] != main_role:
            return f"fine role {fine!r} belongs to main role {FINE_TO_MAIN[fine]!r}, not {main_role!r}"
    return None


@dataclass
class NarrativeTaxonomy:
    """Narrative -> subnarratives per domain. ``Other`` is implicit: always valid, never listed here."""

    tree: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    """domain -> narrative -> ordered subnarratives (including ``"<narrative>: Other"`` where allowed)."""
    source: str | None = None

    def narratives(self, domain: str | None = None) -> list[str]:
        """Narratives of one domain (or all, in domain order), without ``Other``."""
        domains = [domain] if domain else list(self.tree)
        return [n for d in domains for n in self.tree.get(d, {})]

    def subnarratives(self, domain: str | None = None) -> list[str]:
        domains = [domain] if domain else list(self.tree)
        return [s for d in domains for subs in self.tree.get(d, {}).values() for s in subs]

    def subnarrative_parents(self, domain: str | None = None) -> dict[str, str]:
        domains = [domain] if domain else list(self.tree)
        return {s: n for d in domains for n, subs in self.tree.get(d, {}).items() for s in subs}

    def knows_narrative(self, label: str) -> bool:
        return label == OTHER or label in self.narratives(domain_of_label(label))

    def knows_subnarrative(self, label: str) -> bool:
        return label == OTHER or label in self.subnarratives(domain_of_label(label))

    @classmethod
    def from_labels(cls, narratives: Iterable[str], subnarratives: Iterable[str]) -> "NarrativeTaxonomy":
        """Infer the tree from observed labels (sorted, for a deterministic label order)."""
        tree: dict[str, dict[str, set[str]]] = {}
        narratives = set(narratives) - {OTHER}
        for narrative in narratives:
            domain = domain_of_label(narrative)
            if domain is None:
                raise ValueError(f"narrative {narrative!r} has no domain prefix (expected 'URW: ' or 'CC: ')")
            tree.setdefault(domain, {}).setdefault(narrative, set())
        for sub in set(subnarratives) - {OTHER}:
            parent = parent_of_subnarrative(sub, narratives)
            domain = domain_of_label(parent)
            if domain is None:
                raise ValueError(f"subnarrative {sub!r} has no domain prefix (expected 'URW: ' or 'CC: ')")
            tree.setdefault(domain, {}).setdefault(parent, set()).add(sub)
        ordered = {
            d: {n: sorted(tree[d][n]) for n in sorted(tree[d])} for d in [d for d in DOMAINS if d in tree]
        }
        return cls(tree=ordered, source="inferred from labels")


def load_narrative_taxonomy(taxonomy_dir: str | Path) -> NarrativeTaxonomy:
    """Read the narrative tree from a taxonomy folder.

    Prefers ``taxonomy_subtask1_2.json`` (key ``subtask2_narratives``: domain -> narrative ->
    subnarratives, plus ``subtask2_subnarratives_added_from_annotations``); otherwise reads the
    organisers' flat lists ``subtask2_narratives.txt`` and ``subtask2_subnarratives.txt`` (one label a
    line) and rebuilds the tree from the label prefixes.
    """
    taxonomy_dir = Path(taxonomy_dir)
    json_path = taxonomy_dir / "taxonomy_subtask1_2.json"
    if json_path.is_file():
        try:
            data = json.loads(json_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(f"{json_path}: not valid JSON ({error})") from error
        if "subtask2_narratives" not in data or not isinstance(data["subtask2_narratives"], dict):
            raise ValueError(f"{json_path}: missing the object field 'subtask2_narratives'")
        tree: dict[str, dict[str, list[str]]] = {}
        for domain, narratives in data["subtask2_narratives"].items():
            if not isinstance(narratives, dict):
                raise ValueError(f"{json_path}: field 'subtask2_narratives.{domain}' must map narratives to lists")
            tree[domain] = {n: list(subs) for n, subs in narratives.items()}
        for sub in data.get("subtask2_subnarratives_added_from_annotations", []):
            parent = parent_of_subnarrative(sub, [n for d in tree.values() for n in d])
            domain = domain_of_label(parent)
            subs = tree.setdefault(domain, {}).setdefault(parent, [])
            if sub not in subs:
                subs.append(sub)
        roles = data.get("subtask1_entity_roles")
        if roles is not None and {k: tuple(v) for k, v in roles.items()} != FINE_ROLES_BY_MAIN:
            raise ValueError(
                f"{json_path}: field 'subtask1_entity_roles' differs from the fixed task taxonomy "
                "(3 main roles over 22 fine roles); the role taxonomy of SemEval-2025 Task 10 cannot change"
            )
        return NarrativeTaxonomy(tree=tree, source=str(json_path))

    narratives_path = taxonomy_dir / "subtask2_narratives.txt"
    subnarratives_path = taxonomy_dir / "subtask2_subnarratives.txt"
    if not narratives_path.is_file() or not subnarratives_path.is_file():
        raise FileNotFoundError(
            f"{taxonomy_dir}: no taxonomy_subtask1_2.json and no subtask2_narratives.txt + "
            "subtask2_subnarratives.txt"
        )

    def read_lines(path: Path) -> list[str]:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        return [line for line in lines if line]

    narratives = read_lines(narratives_path)
    for number, label in enumerate(narratives, start=1):
        if not is_well_formed_narrative_label(label):
            raise ValueError(f"{narratives_path}, line {number}: {label!r} has no 'URW: '/'CC: ' prefix")
    taxonomy = NarrativeTaxonomy.from_labels(narratives, read_lines(subnarratives_path))
    taxonomy.source = str(taxonomy_dir)
    return taxonomy


def write_narrative_taxonomy(taxonomy: NarrativeTaxonomy, taxonomy_dir: str | Path, note: str = "") -> None:
    """Write the taxonomy in the organisers' layout (flat lists + the assembled JSON), e.g. for synthetic data."""
    taxonomy_dir = Path(taxonomy_dir)
    taxonomy_dir.mkdir(parents=True, exist_ok=True)
    narratives = [OTHER, *taxonomy.narratives()]
    (taxonomy_dir / "subtask2_narratives.txt").write_text("\n".join(sorted(narratives)) + "\n", encoding="utf-8")
    (taxonomy_dir / "subtask2_subnarratives.txt").write_text(
        "\n".join(sorted(taxonomy.subnarratives())) + "\n", encoding="utf-8"
    )
    payload = {
        "_note": note,
        "subtask1_entity_roles": {main: list(fines) for main, fines in FINE_ROLES_BY_MAIN.items()},
        "subtask2_narratives": taxonomy.tree,
    }
    (taxonomy_dir / "taxonomy_subtask1_2.json").write_text(
        json.dumps(payload, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
    )
