"""SemEval-2025 Task 10 submission files, both ways: model predictions -> official files, official files -> rows.

The organisers' formats (the same as their annotation files, which is what their scorers read)::

    subtask 1 (entity framing), one line per mention:
        article_id <TAB> entity_mention <TAB> start <TAB> end <TAB> main_role <TAB> fine_role [<TAB> fine_role ...]
    subtask 2 (narratives), one line per article:
        article_id <TAB> narrative;narrative... <TAB> subnarrative;subnarrative...

Offsets of subtask 1 count **UTF-16 code units** and ``end`` is **inclusive** (the convention that
:mod:`data_prep.semeval`'s loader converts *from*); :func:`utf16_span` converts Python indices back.

Subtask 2 lines respect the narrative hierarchy: every predicted subnarrative brings its narrative, a
narrative predicted without a subnarrative gets ``"<narrative>: Other"``, and an article with no domain
narrative is ``Other`` in both columns (``Other`` is dropped where a domain label is predicted, since it
means "no domain narrative").

:func:`submission_from_predictions` turns ``MultiTaskModel.predict`` output into a :class:`Submission`,
given the model's task specs (which task is entity framing or narratives, fine or coarse, is read from
their labels: see :func:`task_roles`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .files import atomic_write_text
from .semeval import SUBTASK1_FILE, SUBTASK2_FILE, SemEvalFormatError, parse_offset
from .taxonomy import FINE_ROLES, FINE_TO_MAIN, MAIN_ROLES, OTHER, domain_of_article_id, domain_of_label, parent_of_subnarrative

logger = logging.getLogger(__name__)

# The header line that the organisers' subtask-1 scorer tolerates (and skips) at the top of a file.
SUBTASK1_HEADER = ["article_id", "entity_mention", "start_offset", "end_offset", "main_role", "fine_grained_roles"]


@dataclass(frozen=True)
class MentionLine:
    """One subtask-1 line; ``start``/``end`` in UTF-16 code units, ``end`` inclusive (the official convention)."""

    article_id: str
    mention: str
    start: int
    end: int
    main_role: str
    fine_roles: tuple[str, ...]

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.article_id, self.start, self.end)


@dataclass(frozen=True)
class NarrativeLine:
    """One subtask-2 line: de-duplicated narratives and subnarratives of an article."""

    article_id: str
    narratives: tuple[str, ...]
    subnarratives: tuple[str, ...]


@dataclass
class Submission:
    """The lines of one language's subtask-1 and subtask-2 files (either may be empty)."""

    mentions: list[MentionLine] = field(default_factory=list)
    narratives: list[NarrativeLine] = field(default_factory=list)

    def write(self, folder: str | Path) -> list[Path]:
        """Write ``subtask-1-annotations.txt`` / ``subtask-2-annotations.txt`` (the lines present) into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        written = []
        if self.mentions:
            written.append(write_subtask1(self.mentions, folder / SUBTASK1_FILE))
        if self.narratives:
            written.append(write_subtask2(self.narratives, folder / SUBTASK2_FILE))
        return written

    @classmethod
    def read(cls, folder: str | Path) -> "Submission":
        """Read the subtask files found in ``folder`` (a missing file gives no lines; no file at all is an error)."""
        folder = Path(folder)
        paths = [folder / SUBTASK1_FILE, folder / SUBTASK2_FILE]
        if not any(path.is_file() for path in paths):
            raise FileNotFoundError(f"{folder}: neither {SUBTASK1_FILE} nor {SUBTASK2_FILE} found")
        return cls(
            mentions=read_subtask1(paths[0]) if paths[0].is_file() else [],
            narratives=read_subtask2(paths[1]) if paths[1].is_file() else [],
        )


# ---------------------------------------------------------------------------------------------- offsets
def utf16_span(text: str, start: int, end: int) -> tuple[int, int]:
    """Python indices ``[start, end)`` of ``text`` -> the official ``(start, end)``: UTF-16 units, end inclusive."""
    if not 0 <= start < end <= len(text):
        raise ValueError(f"span [{start}, {end}) is empty or outside a text of {len(text)} characters")
    start16 = len(text[:start].encode("utf-16-le")) // 2
    end16 = start16 + len(text[start:end].encode("utf-16-le")) // 2 - 1
    return start16, end16


# ---------------------------------------------------------------------------------------------- writing
def _check_field(value: str, what: str) -> str:
    if "\t" in value or "\n" in value or "\r" in value:
        raise ValueError(f"{what} {value!r} contains a tab or line break: it cannot be written as one TSV field")
    return value


def write_subtask1(lines: Iterable[MentionLine], path: str | Path) -> Path:
    path = Path(path)
    rows = []
    for line in lines:
        fields = [line.article_id, line.mention, str(line.start), str(line.end), line.main_role, *line.fine_roles]
        rows.append("\t".join(_check_field(value, "field") for value in fields))
    atomic_write_text(path, "".join(row + "\n" for row in rows))
    logger.info("wrote %d subtask-1 lines to %s", len(rows), path)
    return path


def write_subtask2(lines: Iterable[NarrativeLine], path: str | Path) -> Path:
    path = Path(path)
    rows = []
    for line in lines:
        for label in (*line.narratives, *line.subnarratives):
            if ";" in label:
                raise ValueError(f"label {label!r} of {line.article_id!r} contains ';', the label separator")
        fields = [line.article_id, ";".join(line.narratives) or OTHER, ";".join(line.subnarratives) or OTHER]
        rows.append("\t".join(_check_field(value, "field") for value in fields))
    atomic_write_text(path, "".join(row + "\n" for row in rows))
    logger.info("wrote %d subtask-2 lines to %s", len(rows), path)
    return path


# ---------------------------------------------------------------------------------------------- reading
def read_tsv_lines(path: Path) -> list[tuple[int, list[str]]]:
    """Non-blank lines of a UTF-8 TSV file as (1-based line number, fields); CRLF or LF endings; a leading byte
    order mark is dropped (as the loader does), not read into the first article id."""
    try:
        content = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise SemEvalFormatError(f"not valid UTF-8 ({error})", path) from error
    return [(number, line.rstrip("\r").split("\t")) for number, line in enumerate(content.split("\n"), 1) if line.strip()]


def read_subtask1(path: str | Path, min_fields: int = 5) -> list[MentionLine]:
    """Subtask-1 lines of a submission/gold file (offsets kept in the official convention).

    ``min_fields=4`` reads the organisers' unlabelled ``subtask-1-entity-mentions.txt`` (no roles).
    """
    path = Path(path)
    out: list[MentionLine] = []
    seen: dict[tuple[str, int, int], int] = {}
    for number, fields in read_tsv_lines(path):
        if number == 1 and fields == SUBTASK1_HEADER:
            continue
        if len(fields) < min_fields:
            raise SemEvalFormatError(f"expected at least {min_fields} tab-separated fields, found {len(fields)}", path, number)
        offsets = []
        for name, value in (("start", fields[2]), ("end", fields[3])):
            try:
                offsets.append(parse_offset(value))
            except ValueError as error:
                raise SemEvalFormatError(str(error), path, number, name) from None
        main_role = fields[4] if len(fields) > 4 else ""
        _refuse_padded(fields[4:], "role", path, number, "roles")
        fine_roles = tuple(role for role in fields[5:] if role)
        line = MentionLine(fields[0].strip(), fields[1], offsets[0], offsets[1], main_role, fine_roles)
        if line.key in seen:
            raise SemEvalFormatError(f"same mention span as line {seen[line.key]}", path, number, "start/end")
        seen[line.key] = number
        out.append(line)
    return out


def _refuse_padded(values: Sequence[str], what: str, path: Path, number: int, name: str) -> None:
    """A role or label with white space around it is refused, not stripped: the organisers' scorer compares the
    values as they are (it splits on ';' without stripping), so ' URW: X' would count as no class there."""
    padded = next((value for value in values if value != value.strip()), None)
    if padded is not None:
        raise SemEvalFormatError(f"{what} {padded!r} has white space around it (write 'A;B', not 'A; B')", path,
                                 number, name)


def _labels(value: str, path: Path, number: int, name: str) -> tuple[str, ...]:
    """The ;-separated labels of a field (see `_refuse_padded`)."""
    labels = value.split(";")
    _refuse_padded(labels, "label", path, number, name)
    return tuple(dict.fromkeys(label for label in labels if label))


def read_subtask2(path: str | Path) -> list[NarrativeLine]:
    path = Path(path)
    out: list[NarrativeLine] = []
    seen: dict[str, int] = {}
    for number, fields in read_tsv_lines(path):
        if len(fields) != 3:
            raise SemEvalFormatError(
                f"expected 3 tab-separated fields (article_id, narratives, subnarratives), found {len(fields)}", path, number
            )
        article_id = fields[0].strip()
        if article_id in seen:
            raise SemEvalFormatError(f"article already on line {seen[article_id]}", path, number, "article_id")
        seen[article_id] = number
        out.append(NarrativeLine(article_id, _labels(fields[1], path, number, "narratives"),
                                 _labels(fields[2], path, number, "subnarratives")))
    return out


# ---------------------------------------------------------------------------------------------- predictions
@dataclass
class TaskRoles:
    """Which model tasks carry which SemEval output (by task name)."""

    entity_fine: str | None = None
    entity_coarse: str | None = None
    narrative_fine: list[str] = field(default_factory=list)
    narrative_coarse: list[str] = field(default_factory=list)
    parents: dict[str, dict[str, str]] = field(default_factory=dict)
    """fine narrative task -> subnarrative -> narrative."""
    domains: dict[str, str | None] = field(default_factory=dict)
    """narrative task -> the one label domain it covers (``None``: both)."""


def _spec(task: Any) -> dict:
    return task.spec if hasattr(task, "spec") else dict(task)


def task_roles(tasks: Sequence[Mapping | Any]) -> TaskRoles:
    """Classify task specs: span tasks over the 22 fine roles / the 3 main roles are entity framing fine / coarse;
    document tasks whose labels are ``Other`` or domain-prefixed (``URW: ``/``CC: ``) are narratives, fine when a
    label is a subnarrative (has ``parents``, or a third ``": "``-separated part). Other tasks are ignored."""
    roles = TaskRoles()
    for spec in map(_spec, tasks):
        name, labels = spec["name"], list(spec["labels"])
        if spec.get("level") == "span":
            slot = "entity_fine" if set(labels) <= set(FINE_ROLES) else "entity_coarse" if set(labels) <= set(MAIN_ROLES) else None
            if slot is None:
                logger.info("task %r: span task with non-SemEval labels, not written", name)
                continue
            if getattr(roles, slot) is not None:
                raise ValueError(f"tasks {getattr(roles, slot)!r} and {name!r} both predict {slot}: give one of each")
            setattr(roles, slot, name)
            continue
        domain_labels = [label for label in labels if label != OTHER]
        if not domain_labels or any(domain_of_label(label) is None for label in domain_labels):
            logger.info("task %r: document task with non-narrative labels, not written", name)
            continue
        domains = {domain_of_label(label) for label in domain_labels}
        roles.domains[name] = domains.pop() if len(domains) == 1 else None
        parents = spec.get("parents") or {}
        if parents or any(len(label.split(": ")) >= 3 for label in domain_labels):
            known = {n for n in parents.values()}
            roles.parents[name] = {
                label: parents.get(label) or parent_of_subnarrative(label, known) for label in labels
            }
            roles.narrative_fine.append(name)
        else:
            roles.narrative_coarse.append(name)
    return roles


def _prediction(value: Any) -> tuple[Any, dict[str, float] | None]:
    """Labels and optional scores of one ``predict`` entry (plain, or ``return_scores=True`` form)."""
    if isinstance(value, Mapping) and "prediction" in value:
        return value["prediction"], dict(value.get("scores") or {})
    return value, None


#: how a mention's fine roles are chosen (see `submission_from_predictions`)
FINE_ROLE_DECODINGS = ("best", "thresholded")


def check_fine_role_decoding(fine_roles: str) -> str:
    """`fine_roles` if it names one of `FINE_ROLE_DECODINGS`, else a ValueError (callers check before any prediction)."""
    if fine_roles not in FINE_ROLE_DECODINGS:
        raise ValueError(f"fine_roles must be one of {FINE_ROLE_DECODINGS}, got {fine_roles!r}")
    return fine_roles


def _entity_line(article: Mapping, index: int, fine_value: Any, coarse_value: Any,
                 fine_roles: str = "best") -> tuple[str, tuple[str, ...]]:
    fine, fine_scores = _prediction(fine_value) if fine_value is not None else (None, None)
    coarse, coarse_scores = _prediction(coarse_value) if coarse_value is not None else (None, None)
    where = f"article {article['id']!r}, mention {index}"
    if fine is not None and fine_scores and fine_roles == "best":
        # One (main role, fine role) pair: the highest P(fine) * P(main), P(main) from the coarse head when there is
        # one. 91 % of the release's mentions have one fine role, and a second role above threshold more often
        # breaks the exact match than completes it (recipes/configs/SEMEVAL_SETTING.md, "Third round").
        def joint(role: str) -> float:
            return fine_scores[role] * (coarse_scores.get(FINE_TO_MAIN[role], 0.0) if coarse_scores else 1.0)

        candidates = [role for role in fine_scores if role in FINE_TO_MAIN]
        if coarse is not None and not coarse_scores:  # a plain coarse label: the best fine role inside it
            candidates = [role for role in candidates if FINE_TO_MAIN[role] == coarse] or candidates
        if candidates:
            best = max(candidates, key=joint)
            main = FINE_TO_MAIN[best]
            # Only an exact tie adds a role (an oracle, or scores of 1.0, for the 9 % of mentions with two roles):
            # keeping roles within 0.99 / 0.95 of the best already cost exact match (0.188 / 0.181 vs 0.189, 6 runs).
            ties = [role for role in fine if role != best and role in FINE_TO_MAIN and FINE_TO_MAIN[role] == main
                    and fine_scores.get(role, 0.0) >= fine_scores[best]]
            return main, (best, *ties)
    if fine is not None:
        fine = [role for role in fine if role in FINE_TO_MAIN]
        if not fine and coarse is None:
            if not fine_scores:
                raise ValueError(
                    f"{where}: no fine role above its threshold and no scores to pick one; predict with return_scores=True"
                )
            fine = [max(fine_scores, key=fine_scores.get)]
    if coarse is not None:
        main = coarse
    else:
        # One main role per mention: the best-scoring fine role's (or the most frequent) decides; the official
        # annotations never mix main roles.
        mains = [FINE_TO_MAIN[role] for role in fine]
        main = FINE_TO_MAIN[max(fine, key=fine_scores.get)] if fine_scores else max(mains, key=mains.count)
    if fine is None:
        return main, ()
    kept = [role for role in fine if FINE_TO_MAIN[role] == main]
    if not kept and fine_scores:
        kept = [max((r for r in fine_scores if FINE_TO_MAIN.get(r) == main), key=fine_scores.get)]
    return main, tuple(kept)


def _narrative_line(article_id: str, prediction: Mapping, roles: TaskRoles) -> NarrativeLine:
    article_domain = domain_of_article_id(article_id)
    subnarratives: dict[str, str] = {}  # subnarrative -> narrative, in prediction order
    narratives: dict[str, None] = {}
    for name in [*roles.narrative_fine, *roles.narrative_coarse]:
        task_domain = roles.domains.get(name)
        if task_domain is not None and article_domain is not None and task_domain != article_domain:
            continue  # a per-domain head never saw articles of the other domain
        labels, _ = _prediction(prediction[name])
        for label in labels:
            if name in roles.parents:
                subnarratives[label] = roles.parents[name][label]
            else:
                narratives[label] = None
    for parent in subnarratives.values():
        narratives[parent] = None
    if any(label != OTHER for label in narratives):
        narratives.pop(OTHER, None)
        subnarratives = {sub: parent for sub, parent in subnarratives.items() if sub != OTHER}
    if not narratives:
        return NarrativeLine(article_id, (OTHER,), (OTHER,))
    subs = list(subnarratives)
    for narrative in narratives:
        if narrative != OTHER and narrative not in subnarratives.values():
            subs.append(f"{narrative}: {OTHER}")
    return NarrativeLine(article_id, tuple(narratives), tuple(subs) or (OTHER,))


def submission_from_predictions(
    articles: Sequence[Mapping], predictions: Sequence[Mapping], tasks: Sequence[Mapping | Any], fine_roles: str = "best"
) -> Submission:
    """Official lines from ``MultiTaskModel.predict`` output.

    Args:
        articles: per text, ``{"id", "text", "mentions": [{"start", "end"}, ...]}`` with Python indices (end
            exclusive): the rows of ``load_semeval`` or :func:`data_prep.semeval_submit.read_documents`.
        predictions: ``predict``'s list (plain labels or ``return_scores=True`` entries), one per article.
        tasks: the model's task specs (``model.config.tasks``) or ``SemEvalTask`` objects.
        fine_roles: ``"best"`` (default): with scores, each mention gets one fine role and its main role, the pair
            with the highest P(fine role) x P(main role) (P(main role) from a coarse task's scores, 1 without one),
            plus any other fine role of that main role above its threshold that ties with the best's score;
            ``"thresholded"``: every fine role above its threshold within the main role (below).

    Entity framing, ``"thresholded"`` or plain labels: with a fine task the main role is that of the fine roles (the
    best-scoring one decides a mix); with a coarse task its prediction is the main role (and the fine roles outside
    it are dropped). A mention with no fine role above threshold gets the best-scoring one (scores needed).
    Narratives: see the module docstring.
    """
    check_fine_role_decoding(fine_roles)
    if len(articles) != len(predictions):
        raise ValueError(f"{len(articles)} articles but {len(predictions)} predictions")
    roles = task_roles(tasks)
    if roles.entity_fine is None and roles.entity_coarse is None and not (roles.narrative_fine or roles.narrative_coarse):
        raise ValueError(f"none of the tasks {[_spec(t)['name'] for t in tasks]} predicts SemEval entity roles or narratives")
    submission = Submission()
    for article, prediction in zip(articles, predictions):
        text, mentions = article["text"], article.get("mentions") or []
        if roles.entity_fine or roles.entity_coarse:
            fine = prediction[roles.entity_fine] if roles.entity_fine else [None] * len(mentions)
            coarse = prediction[roles.entity_coarse] if roles.entity_coarse else [None] * len(mentions)
            if len(fine) != len(mentions) or len(coarse) != len(mentions):
                raise ValueError(f"article {article['id']!r}: {len(mentions)} mentions but {len(fine)} entity predictions")
            for index, (mention, fine_value, coarse_value) in enumerate(zip(mentions, fine, coarse)):
                main, roles_of_mention = _entity_line(article, index, fine_value, coarse_value, fine_roles)
                start16, end16 = utf16_span(text, mention["start"], mention["end"])
                span_text = text[mention["start"] : mention["end"]]
                submission.mentions.append(MentionLine(article["id"], span_text, start16, end16, main, roles_of_mention))
        if roles.narrative_fine or roles.narrative_coarse:
            submission.narratives.append(_narrative_line(article["id"], prediction, roles))
    return submission


def constrain_to_domain(article_id: str, scored: Mapping, labels: Sequence[str], thresholds: Sequence[float],
                        relative_threshold: float = 0.0, parents: Mapping[str, str] | None = None,
                        parent_threshold: float | None = None) -> list[str]:
    """Narrative labels of one article from ``predict``'s ``{"scores": ...}`` entry: those passing their thresholds
    (and ``relative_threshold`` x the best allowed score, as the model's own decisions), keeping only the article's
    domain (known from its id, ``EN_UA_*`` / ``EN_CC_*``) and ``Other``; when nothing is left, the best-scoring
    allowed label. An id that names no domain leaves every label allowed.

    An article's narratives come from its own domain's taxonomy (or ``Other``): measured on held-out splits of the
    English release this never lowered samples-F1 and raised it by up to 0.03 (``recipes/configs/SEMEVAL_SETTING.md``).

    With `parents` (subnarrative -> narrative) and `parent_threshold`, the allowed labels are decoded parent first
    (:func:`data_prep.narrative_decoding.parent_first_labels`; ``Other`` when no narrative is kept).
    """
    domain = domain_of_article_id(article_id)
    allowed = [label for label in labels if label == OTHER or domain is None or domain_of_label(label) == domain]
    if parents and parent_threshold is not None:
        from .narrative_decoding import parent_first_labels

        return parent_first_labels(scored["scores"], [label for label in allowed if label != OTHER],
                                   {label: parent for label, parent in parents.items() if parent and label != OTHER},
                                   dict(zip(labels, thresholds)), parent_threshold, relative_threshold, fallback=OTHER)
    floor = relative_threshold * max(scored["scores"][label] for label in allowed)
    kept = [label for label, t in zip(labels, thresholds)
            if label in allowed and scored["scores"][label] >= max(t, floor)]
    return kept or [max(allowed, key=scored["scores"].__getitem__)]


def constrain_predictions_to_domain(articles: Sequence[Mapping], predictions: Sequence[Mapping],
                                    tasks: Sequence[Mapping | Any], thresholds_of, relative_threshold: float = 0.0,
                                    parent_threshold: float | None = None) -> list[dict]:
    """``predict(..., return_scores=True)`` output with every narrative task's prediction passed through
    :func:`constrain_to_domain` (``thresholds_of(task_name)``: e.g. ``model.config.thresholds_of``;
    ``relative_threshold``: the model's ``config.relative_threshold``; ``parent_threshold``: the model's
    ``narrative_parent_threshold``, which decodes the fine narrative tasks parent first)."""
    roles = task_roles(tasks)
    specs = {spec["name"]: spec for spec in map(_spec, tasks)}
    names = [*roles.narrative_fine, *roles.narrative_coarse]
    constrained = []
    for article, prediction in zip(articles, predictions):
        entry = dict(prediction)
        for name in names:
            scored = prediction[name]
            if not isinstance(scored, Mapping) or "scores" not in scored:
                raise ValueError(f"article {article['id']!r}: task {name!r} has no scores: predict with return_scores=True")
            entry[name] = {**scored, "prediction": constrain_to_domain(
                article["id"], scored, specs[name]["labels"], thresholds_of(name), relative_threshold,
                roles.parents.get(name), parent_threshold)}
        constrained.append(entry)
    return constrained


def submission_from_articles(articles: Iterable[Mapping]) -> Submission:
    """The gold lines of loaded articles (``load_semeval`` rows): the inverse of the loader's conversion.

    Articles without entity annotations give no subtask-1 line; articles without narratives no subtask-2 line.
    """
    submission = Submission()
    for article in articles:
        for mention in article.get("mentions") or []:
            start16, end16 = utf16_span(article["text"], mention["start"], mention["end"])
            submission.mentions.append(
                MentionLine(
                    article["id"], mention["text"], start16, end16, mention["main_role"], tuple(mention["fine_roles"])
                )
            )
        if article.get("narratives") is not None:
            submission.narratives.append(
                NarrativeLine(article["id"], tuple(article["narratives"]), tuple(article["subnarratives"] or ()))
            )
    return submission
