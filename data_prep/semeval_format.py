"""The SemEval-2025 Task 10 loader's error type, its load report, and the UTF-16 offset table.

Kept apart from :mod:`data_prep.semeval` (the reading itself) so that the official-format writers and the
recipes can use them without the loader.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

_NON_BMP = re.compile("[\U00010000-\U0010ffff]")


class SemEvalFormatError(ValueError):
    """A problem in a SemEval-layout file; the message starts with ``<file>, line <n>, field <name>:``."""

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None, field: str | None = None):
        self.path, self.line, self.field, self.reason = path, line, field, message
        location = [str(path)] if path is not None else []
        if line is not None:
            location.append(f"line {line}")
        if field is not None:
            location.append(f"field {field!r}")
        super().__init__(f"{', '.join(location)}: {message}" if location else message)


@dataclass
class LoadReport:
    """Counts of what :func:`load_semeval` read, kept and skipped."""

    articles: int = 0
    articles_per_language: dict[str, int] = field(default_factory=dict)
    articles_per_domain: dict[str, int] = field(default_factory=dict)
    articles_with_entity_annotations: int = 0
    articles_without_narratives: int = 0
    mentions: int = 0
    subtask1_lines: int = 0
    subtask2_lines: int = 0
    articles_with_non_bmp_characters: int = 0
    articles_with_labels_of_other_domain: list[str] = field(default_factory=list)
    articles_with_byte_order_mark: int = 0
    skipped: Counter = field(default_factory=Counter)
    """reason -> number of lines/articles/files skipped (``on_error="skip"``; ``"stray file"`` always)."""
    problems: list[str] = field(default_factory=list)
    """The error message of every skipped item."""

    def summary(self) -> str:
        lines = [
            f"articles: {self.articles} {dict(self.articles_per_language)} by domain {dict(self.articles_per_domain)}",
            f"subtask-1: {self.subtask1_lines} lines -> {self.mentions} mentions in "
            f"{self.articles_with_entity_annotations} articles",
            f"subtask-2: {self.subtask2_lines} lines; articles without a narrative line: "
            f"{self.articles_without_narratives}",
            f"articles with characters outside the BMP (UTF-16 offsets differ): {self.articles_with_non_bmp_characters}",
            f"articles with narratives of the other domain: {len(self.articles_with_labels_of_other_domain)} "
            f"{self.articles_with_labels_of_other_domain[:5]}",
        ]
        if self.articles_with_byte_order_mark:
            lines.append(f"articles starting with a byte order mark (removed): {self.articles_with_byte_order_mark}")
        if self.skipped:
            lines.append(f"skipped: {dict(self.skipped)}")
        return "\n".join(lines)


_OFFSET = re.compile(r"-?[0-9]+")


def parse_offset(value: str) -> int:
    """A mention offset written in ASCII digits (a minus is read, and refused later as out of range); ValueError
    otherwise. Python's ``int()`` would also read ``"2_30"``, ``"+230"`` and full-width digits as 230."""
    if not _OFFSET.fullmatch(value.strip()):
        raise ValueError(f"{value!r} is not an integer offset")
    return int(value.strip())


def utf16_offset_table(text: str) -> list[int | None] | None:
    """Map UTF-16 code-unit offsets of ``text`` to Python string indices.

    Returns ``None`` when the text is all in the BMP (offsets agree). Otherwise entry ``u`` is the Python
    index at UTF-16 offset ``u`` (``len(table) == utf16 length + 1``); offsets that fall inside a surrogate
    pair map to ``None``.
    """
    if not _NON_BMP.search(text):
        return None
    table: list[int | None] = []
    for index, char in enumerate(text):
        table.append(index)
        if ord(char) > 0xFFFF:
            table.append(None)
    table.append(len(text))
    return table
