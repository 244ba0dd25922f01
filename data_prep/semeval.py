"""Loader for SemEval-2025 Task 10 ("Multilingual Characterization and Extraction of Narratives from
Online News") in the organisers' layout::

    <data_dir>/<LANG>/raw-documents/<article_id>          one article per file, UTF-8
    <data_dir>/<LANG>/subtask-1-annotations.txt           entity framing, one mention a line:
        article_id <TAB> mention <TAB> start <TAB> end <TAB> main_role <TAB> fine_role [<TAB> fine_role ...]
    <data_dir>/<LANG>/subtask-2-annotations.txt           narratives, one article a line:
        article_id <TAB> narratives (;-separated) <TAB> subnarratives (;-separated)
    <data_dir>/taxonomy/                                  optional narrative taxonomy files

Traps of the real format that this loader handles (all checked on the full release):

* annotation lines end in CRLF;
* subtask-1 offsets count **UTF-16 code units** and ``end`` is **inclusive**: after a character outside
  the Basic Multilingual Plane (an emoji) Python string indices drift by one per such character
  (``EN_UA_002668.txt`` of the shared sample). Mentions are converted to Python indices with ``end``
  exclusive, so ``text[start:end]`` is the mention, and every mention is checked against its text;
* the narrative column repeats a narrative once per subnarrative: it is de-duplicated (order kept);
* ``Other`` is a label in both columns and a subnarrative can be ``"<narrative>: Other"``;
* the domain comes from the article id (``EN_UA_*`` -> URW, ``EN_CC_*`` -> CC, ``RU-URW-*`` -> URW); some URW-id
  articles carry CC narratives (``EN_UA_103011.txt``): the label is kept as annotated and counted in the report.
  Where the id names no domain (``PT_230.txt``, ``BG_670.txt``) it is ``None``: it is not read from the labels,
  which would choose a per-domain task's articles by their gold;
* not every article has subtask-1 lines (``has_entity_annotations`` says which do); every article of a
  labelled release has a subtask-2 line: an article without one is an error (skipped and counted with
  ``on_error="skip"``), so that no article loads without its labels;
* an annotation file that exists but is empty (0 bytes or blank lines only) is an error (with
  ``on_error="skip"``: a loud warning, counted): a task must never silently disappear. An unlabelled release
  simply has no annotation files;
* files in ``raw-documents/`` whose names do not follow ``<LANG>_<id>.txt`` / ``<LANG>-<id>.txt`` (``notes.md``,
  ``.DS_Store``, folders) are not articles: they are skipped with a warning and counted (``"stray file"``);
* a UTF-8 byte order mark at the start of a raw document is an encoding mark, not text: it is removed so
  that offsets count from the first character (counted in ``articles_with_byte_order_mark``); annotation
  files may start with one too.

Bad input raises :class:`SemEvalFormatError` naming the file, line and field. With ``on_error="skip"``
the offending line (or article) is skipped instead and counted in :class:`LoadReport` (``skipped``: reason ->
count, ``problems``: every message); :func:`load_semeval` also stores the report's summary in the dataset's
``info.description``.
The official dev set has the same layout and loads the same way (annotation files are optional, so an
unlabelled test release loads too, with ``narratives=None`` and no mentions).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Iterable, Literal

import datasets

from .semeval_format import _NON_BMP, LoadReport, SemEvalFormatError, parse_offset, utf16_offset_table  # noqa: F401 (public names of this module)

from .taxonomy import (
    OTHER,
    NarrativeTaxonomy,
    check_roles,
    domain_of_article_id,
    domain_of_label,
    is_well_formed_narrative_label,
    load_narrative_taxonomy,
    parent_of_subnarrative,
)

logger = logging.getLogger(__name__)

SUBTASK1_FILE = "subtask-1-annotations.txt"
SUBTASK2_FILE = "subtask-2-annotations.txt"
RAW_DOCUMENTS_DIR = "raw-documents"

# The organisers' names: a language code, optionally a domain code (and a tag such as DEV), then a number:
# EN_UA_002668.txt, EN_CC_100013.txt, EN_UA_DEV_100012.txt, PT_230.txt, BG_670.txt, RU-URW-1004.txt. Anything else
# (notes.txt, my_notes.txt, EN_XX_3.txt) is a stray file, not an article.
_ARTICLE_NAME = re.compile(r"^[A-Z]{2,3}(?:[_-](?:UA|CC|URW)(?:[_-][A-Z]+)*)?[_-]\d[A-Za-z0-9]*\.txt$")
ARTICLE_NAME_FORM = "<LANG>[_<UA|CC>]_<number>.txt or <LANG>-<URW|CC>-<number>.txt, e.g. EN_UA_002668.txt, PT_230.txt"
_BOM = "\ufeff"

ARTICLE_FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),
        "language": datasets.Value("string"),
        "domain": datasets.Value("string"),
        "text": datasets.Value("string"),
        "narratives": datasets.List(datasets.Value("string")),
        "subnarratives": datasets.List(datasets.Value("string")),
        "mentions": datasets.List(
            {
                "start": datasets.Value("int64"),
                "end": datasets.Value("int64"),
                "text": datasets.Value("string"),
                "main_role": datasets.Value("string"),
                "fine_roles": datasets.List(datasets.Value("string")),
            }
        ),
        "has_entity_annotations": datasets.Value("bool"),
    }
)


def _split_line(line: str) -> list[str]:
    return line.rstrip("\r\n").split("\t")


def _read_lines(path: Path) -> list[tuple[int, str]]:
    """Non-blank lines with their 1-based numbers; CRLF or LF endings."""
    try:
        content = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise SemEvalFormatError(f"not valid UTF-8 ({error})", path) from error
    out = []
    for number, line in enumerate(content.split("\n"), start=1):
        line = line.rstrip("\r")
        if line.strip():
            out.append((number, line))
    return out


class _Collector:
    """Raise or skip-and-count, depending on ``on_error``."""

    def __init__(self, on_error: str, report: LoadReport):
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.on_error, self.report = on_error, report

    def __call__(self, reason: str, error: SemEvalFormatError) -> None:
        if self.on_error == "raise":
            raise error
        self.skip(reason, error)

    def skip(self, reason: str, error: SemEvalFormatError) -> None:
        """Count and log a skipped item whatever ``on_error`` says."""
        self.report.skipped[reason] += 1
        self.report.problems.append(str(error))
        logger.warning("skipped: %s", error)


def is_article_file(path: Path) -> bool:
    """Whether ``path`` is an article of a ``raw-documents`` folder (:data:`ARTICLE_NAME_FORM`), not a stray file."""
    return path.is_file() and bool(_ARTICLE_NAME.match(path.name))


def read_article_text(path: Path) -> tuple[str, bool]:
    """An article's text exactly as stored (every character counts for the official offsets, ``"\r"`` included),
    without a leading byte order mark, and whether it had one. Raises UnicodeDecodeError."""
    with open(path, encoding="utf-8", newline="") as handle:
        text = handle.read()
    if text.startswith(_BOM):  # an editor's encoding mark, not text: offsets count from the first character
        return text[len(_BOM):], True
    return text, False


def _read_articles(raw_dir: Path, problem: _Collector) -> dict[str, str]:
    if not raw_dir.is_dir():
        raise FileNotFoundError(f"{raw_dir}: folder of raw documents not found (expected <data_dir>/<LANG>/{RAW_DOCUMENTS_DIR})")
    articles: dict[str, str] = {}
    for path in sorted(raw_dir.iterdir()):
        if not is_article_file(path):
            problem.skip("stray file", SemEvalFormatError(
                f"not an article (article files are named {ARTICLE_NAME_FORM}); ignored", path))
            continue
        try:
            text, had_mark = read_article_text(path)
        except UnicodeDecodeError as error:
            problem("undecodable article", SemEvalFormatError(f"article is not valid UTF-8 ({error})", path))
            continue
        problem.report.articles_with_byte_order_mark += had_mark
        if not text.strip():
            problem("empty article", SemEvalFormatError("article is empty", path))
            continue
        articles[path.name] = text
    return articles


def _has_lines(path: Path, problem: _Collector) -> bool:
    """Whether an annotation file exists with at least one line; an existing empty file is a problem."""
    if not path.is_file():
        return False
    if path.stat().st_size and _read_lines(path):
        return True
    problem("empty annotation file", SemEvalFormatError(
        "annotation file is empty: its task would silently have no labels (restore its lines, or delete the file "
        "for an unlabelled release)", path))
    return False


def _split_labels(value: str) -> list[str]:
    labels = [label.strip() for label in value.split(";")]
    return list(dict.fromkeys(label for label in labels if label))  # de-duplicate, keep order


def _read_subtask2(
    path: Path,
    articles: dict[str, str],
    taxonomy: NarrativeTaxonomy | None,
    problem: _Collector,
    report: LoadReport,
) -> dict[str, tuple[list[str], list[str]]]:
    labels: dict[str, tuple[list[str], list[str]]] = {}
    spellings: dict[str, tuple[str, int]] = {}  # casefolded label -> (first spelling, its line); checked without a taxonomy
    for number, line in _read_lines(path):
        report.subtask2_lines += 1
        fields = _split_line(line)
        if len(fields) != 3:
            problem(
                "malformed subtask-2 line",
                SemEvalFormatError(
                    f"expected 3 tab-separated fields (article_id, narratives, subnarratives), found {len(fields)}",
                    path,
                    number,
                ),
            )
            continue
        article_id, narrative_field, subnarrative_field = (f.strip() for f in fields)
        if article_id not in articles:
            problem(
                "missing article",
                SemEvalFormatError(f"article {article_id!r} is not in {RAW_DOCUMENTS_DIR}/", path, number, "article_id"),
            )
            continue
        if article_id in labels:
            problem("duplicate article id", SemEvalFormatError(f"duplicate line for article {article_id!r}", path, number, "article_id"))
            continue
        narratives, subnarratives = _split_labels(narrative_field), _split_labels(subnarrative_field)
        error = _check_narratives(narratives, subnarratives, taxonomy, path, number)
        if error is None and taxonomy is None:
            error = _second_spelling(narratives, subnarratives, spellings, path, number)
        if error is not None:
            problem("label outside the taxonomy", error)
            continue
        labels[article_id] = (narratives, subnarratives)
    return labels


def _second_spelling(narratives: list[str], subnarratives: list[str], spellings: dict[str, tuple[str, int]],
                     path: Path, number: int) -> SemEvalFormatError | None:
    """Without a taxonomy labels are checked for form only: a label spelled in two cases would become two classes."""
    for column, values in (("narratives", narratives), ("subnarratives", subnarratives)):
        for label in values:
            first, line = spellings.setdefault(label.casefold(), (label, number))
            if first != label:
                return SemEvalFormatError(f"label {label!r} differs only in case from {first!r} (line {line}); without "
                                          "a taxonomy/ folder the loader cannot tell which is right", path, number, column)
    return None


def _check_narratives(
    narratives: list[str], subnarratives: list[str], taxonomy: NarrativeTaxonomy | None, path: Path, number: int
) -> SemEvalFormatError | None:
    for column, values in (("narratives", narratives), ("subnarratives", subnarratives)):
        if not values:
            return SemEvalFormatError(f"no label (use {OTHER!r} for an article without a domain narrative)", path, number, column)
        for label in values:
            if not is_well_formed_narrative_label(label):
                return SemEvalFormatError(
                    f"label {label!r} is neither {OTHER!r} nor prefixed by a domain ('URW: ' or 'CC: ')", path, number, column
                )
            known = taxonomy is None or (
                taxonomy.knows_narrative(label) if column == "narratives" else taxonomy.knows_subnarrative(label)
            )
            if not known:
                return SemEvalFormatError(f"label {label!r} is not in the taxonomy ({taxonomy.source})", path, number, column)
    known_narratives = taxonomy.narratives() if taxonomy is not None else narratives
    for sub in subnarratives:
        try:
            parent = parent_of_subnarrative(sub, known_narratives)
        except ValueError as error:
            return SemEvalFormatError(str(error), path, number, "subnarratives")
        if parent not in narratives:
            return SemEvalFormatError(
                f"subnarrative {sub!r} belongs to narrative {parent!r}, which the narratives column lacks",
                path,
                number,
                "subnarratives",
            )
    return None


def _read_subtask1(
    path: Path, articles: dict[str, str], problem: _Collector, report: LoadReport
) -> dict[str, list[dict]]:
    mentions: dict[str, list[dict]] = {}
    seen_spans: set[tuple[str, int, int]] = set()
    tables: dict[str, list[int | None] | None] = {}
    for number, line in _read_lines(path):
        report.subtask1_lines += 1
        fields = _split_line(line)
        if len(fields) < 6:
            problem(
                "malformed subtask-1 line",
                SemEvalFormatError(
                    "expected at least 6 tab-separated fields (article_id, mention, start, end, main_role, "
                    f"fine_role...), found {len(fields)}",
                    path,
                    number,
                ),
            )
            continue
        article_id, mention_text = fields[0].strip(), fields[1]
        main_role, fine_roles = fields[4].strip(), [f.strip() for f in fields[5:] if f.strip()]
        offsets = []
        for name, value in (("start", fields[2]), ("end", fields[3])):
            try:
                offsets.append(parse_offset(value))
            except ValueError as error:  # parse_offset's message names the value
                offsets.append(None)
                problem("malformed subtask-1 line", SemEvalFormatError(str(error), path, number, name))
                break
        if None in offsets:
            continue
        start16, end16 = offsets
        if article_id not in articles:
            problem(
                "missing article",
                SemEvalFormatError(f"article {article_id!r} is not in {RAW_DOCUMENTS_DIR}/", path, number, "article_id"),
            )
            continue
        text = articles[article_id]
        if article_id not in tables:
            tables[article_id] = utf16_offset_table(text)
        table = tables[article_id]
        length16 = len(text) if table is None else len(table) - 1
        if not 0 <= start16 <= end16 < length16:
            problem(
                "offset out of range",
                SemEvalFormatError(
                    f"span [{start16}, {end16}] (UTF-16 units, end inclusive) is outside the article "
                    f"{article_id!r} of {length16} UTF-16 units",
                    path,
                    number,
                    "start/end",
                ),
            )
            continue
        start, end = (start16, end16 + 1) if table is None else (table[start16], table[end16 + 1])
        if start is None or end is None:
            problem(
                "offset out of range",
                SemEvalFormatError(f"span [{start16}, {end16}] splits a character outside the BMP", path, number, "start/end"),
            )
            continue
        if text[start:end] != mention_text:
            problem(
                "mention text mismatch",
                SemEvalFormatError(
                    f"mention {mention_text!r} does not match the article text {text[start:end]!r} at "
                    f"[{start16}, {end16}] (UTF-16 units, end inclusive)",
                    path,
                    number,
                    "mention",
                ),
            )
            continue
        role_error = check_roles(main_role, fine_roles)
        if role_error is not None:
            problem("label outside the taxonomy", SemEvalFormatError(role_error, path, number, "main_role/fine_roles"))
            continue
        if (article_id, start, end) in seen_spans:
            problem(
                "duplicate mention",
                SemEvalFormatError(f"duplicate annotation of span [{start16}, {end16}] in {article_id!r}", path, number),
            )
            continue
        seen_spans.add((article_id, start, end))
        mentions.setdefault(article_id, []).append(
            {"start": start, "end": end, "text": mention_text, "main_role": main_role, "fine_roles": fine_roles}
        )
    return mentions


def read_semeval_articles(
    data_dir: str | Path,
    languages: Iterable[str] = ("EN",),
    taxonomy_dir: str | Path | None = None,
    on_error: Literal["raise", "skip"] = "raise",
) -> tuple[list[dict], LoadReport]:
    """Read articles as plain dicts (the rows of :func:`load_semeval`) plus a :class:`LoadReport`."""
    data_dir = Path(data_dir)
    if isinstance(languages, str):
        languages = (languages,)
    report = LoadReport()
    problem = _Collector(on_error, report)
    if taxonomy_dir is None and (data_dir / "taxonomy").is_dir():
        taxonomy_dir = data_dir / "taxonomy"
    taxonomy = load_narrative_taxonomy(taxonomy_dir) if taxonomy_dir is not None else None

    rows: list[dict] = []
    seen_ids: dict[str, str] = {}
    for language in languages:
        language_dir = data_dir / language
        if not language_dir.is_dir():
            raise FileNotFoundError(f"{language_dir}: no folder for language {language!r} in {data_dir}")
        articles = _read_articles(language_dir / RAW_DOCUMENTS_DIR, problem)
        for article_id in list(articles):
            if article_id in seen_ids:
                problem(
                    "duplicate article id",
                    SemEvalFormatError(f"article id {article_id!r} also occurs in language {seen_ids[article_id]!r}", language_dir / RAW_DOCUMENTS_DIR / article_id),
                )
                del articles[article_id]
            else:
                seen_ids[article_id] = language
        subtask2_path = language_dir / SUBTASK2_FILE
        labelled = _has_lines(subtask2_path, problem)
        narratives = _read_subtask2(subtask2_path, articles, taxonomy, problem, report) if labelled else {}
        subtask1_path = language_dir / SUBTASK1_FILE
        mentions = _read_subtask1(subtask1_path, articles, problem, report) if _has_lines(subtask1_path, problem) else {}
        if not subtask2_path.is_file():
            logger.warning("%s absent: articles of %s have no narrative labels", subtask2_path, language)
        if labelled:
            for article_id in [a for a in articles if a not in narratives]:
                problem("article without a subtask-2 line", SemEvalFormatError(
                    f"article has no line in {subtask2_path} (every article of a labelled release has one)",
                    language_dir / RAW_DOCUMENTS_DIR / article_id))
                del articles[article_id]

        for article_id, text in articles.items():
            domain = domain_of_article_id(article_id)
            labels = narratives.get(article_id)
            article_mentions = sorted(mentions.get(article_id, []), key=lambda m: (m["start"], m["end"]))
            rows.append(
                {
                    "id": article_id,
                    "language": language,
                    "domain": domain,
                    "text": text,
                    "narratives": labels[0] if labels else None,
                    "subnarratives": labels[1] if labels else None,
                    "mentions": article_mentions,
                    "has_entity_annotations": article_id in mentions,
                }
            )
            report.articles += 1
            report.articles_per_language[language] = report.articles_per_language.get(language, 0) + 1
            report.articles_per_domain[str(domain)] = report.articles_per_domain.get(str(domain), 0) + 1
            report.mentions += len(article_mentions)
            report.articles_with_entity_annotations += article_id in mentions
            report.articles_without_narratives += labels is None
            report.articles_with_non_bmp_characters += bool(_NON_BMP.search(text))
            if domain is not None and labels and any(domain_of_label(n) not in (None, domain) for n in labels[0]):
                report.articles_with_labels_of_other_domain.append(article_id)
    return rows, report


def load_semeval(
    data_dir: str | Path,
    languages: Iterable[str] = ("EN",),
    taxonomy_dir: str | Path | None = None,
    on_error: Literal["raise", "skip"] = "raise",
    return_report: bool = False,
) -> datasets.Dataset | tuple[datasets.Dataset, LoadReport]:
    """Load a SemEval-2025 Task 10 release (train or dev) as a ``datasets.Dataset`` of articles.

    Args:
        data_dir: folder holding one sub-folder per language (``EN/raw-documents/...``).
        languages: language folders to read, in order.
        taxonomy_dir: folder of narrative taxonomy files to check labels against; by default
            ``<data_dir>/taxonomy`` when it exists, otherwise labels are only checked for form.
        on_error: ``"raise"`` (default) stops at the first bad line with a :class:`SemEvalFormatError`
            naming file, line and field; ``"skip"`` drops the bad line/article and counts it in the report.
        return_report: also return the :class:`LoadReport` (it is always logged at INFO level, and its
            summary is the dataset's ``info.description``).

    Columns: ``id`` (file name, the official article id), ``language``, ``domain`` (URW/CC from the id; None where the id names no domain),
    ``text``, ``narratives`` and ``subnarratives`` (de-duplicated label lists, ``None`` without a
    subtask-2 line), ``mentions`` (``start``/``end`` Python indices with ``end`` exclusive, ``text``,
    ``main_role``, ``fine_roles``) and ``has_entity_annotations``.
    """
    rows, report = read_semeval_articles(data_dir, languages, taxonomy_dir, on_error)
    logger.info("loaded %s\n%s", data_dir, report.summary())
    info = datasets.DatasetInfo(description=f"SemEval-2025 Task 10 layout, {data_dir}\n{report.summary()}", features=ARTICLE_FEATURES)
    if rows:
        dataset = datasets.Dataset.from_list(rows, features=ARTICLE_FEATURES, info=info)
    else:
        dataset = datasets.Dataset.from_dict({name: [] for name in ARTICLE_FEATURES}, features=ARTICLE_FEATURES, info=info)
    return (dataset, report) if return_report else dataset

