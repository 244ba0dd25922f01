"""Data preparation for multi-task learning: SemEval-2025 Task 10 loading, label taxonomies and task specs,
windowed encoding of long texts, splits and ablation sets, tables of labelled texts, label-leakage audit,
shift statistics and synthetic corpora.

Everything is importable from here (lazily); the heavier pieces (model forward passes, ``modeling.windowing``) are
only imported when used.
"""

import importlib
from typing import TYPE_CHECKING

# name -> submodule that defines it. Imported on first access, so that `python -m data_prep.synthetic` (and
# the other commands) do not import their own module twice, and `import data_prep` stays cheap.
_LAZY_EXPORTS = {
    "DuplicationReport": "ablations",
    "cross_domain_examples": "ablations",
    "duplication_control": "ablations",
    "per_domain_eval_sets": "ablations",
    "single_task_examples": "ablations",
    "token_count": "ablations",
    "encode_for_model": "encoding",
    "encoded_features": "encoding",
    "label_column": "encoding",
    "windows_by_document": "encoding",
    "LabelLeakageWarning": "leakage",
    "LeakageReport": "leakage",
    "PairLeakage": "leakage",
    "audit_label_leakage": "leakage",
    "TextOverlap": "overlap",
    "text_overlap": "overlap",
    "LoadReport": "semeval",
    "SemEvalFormatError": "semeval",
    "load_semeval": "semeval",
    "read_semeval_articles": "semeval",
    "utf16_offset_table": "semeval",
    "ShiftReport": "shift",
    "compute_shift": "shift",
    "domain_shift": "shift",
    "jensen_shannon_divergence": "shift",
    "shift_between": "shift",
    "split_articles": "splits",
    "SyntheticConfig": "synthetic",
    "generate_synthetic_corpus": "synthetic",
    "SyntheticTicketsConfig": "synthetic_tickets",
    "generate_tickets": "synthetic_tickets",
    "write_tickets": "synthetic_tickets",
    "TextGenerator": "synthetic_text",
    "LabelledTable": "tables",
    "TableFormatError": "tables",
    "load_table": "tables",
    "SemEvalTask": "tasks",
    "entity_framing_task": "tasks",
    "multitask_features": "tasks",
    "narrative_task": "tasks",
    "semeval_tasks": "tasks",
    "task_specs": "tasks",
    "to_multitask_examples": "tasks",
    "FINE_ROLES": "taxonomy",
    "FINE_ROLES_BY_MAIN": "taxonomy",
    "FINE_TO_MAIN": "taxonomy",
    "MAIN_ROLES": "taxonomy",
    "OTHER": "taxonomy",
    "NarrativeTaxonomy": "taxonomy",
    "domain_of_article_id": "taxonomy",
    "load_narrative_taxonomy": "taxonomy",
}

__all__ = sorted(_LAZY_EXPORTS)


def __getattr__(name):
    if name in _LAZY_EXPORTS:
        module = importlib.import_module(f".{_LAZY_EXPORTS[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_LAZY_EXPORTS])


if TYPE_CHECKING:  # pragma: no cover
    from .ablations import (
        DuplicationReport,
        cross_domain_examples,
        duplication_control,
        per_domain_eval_sets,
        single_task_examples,
        token_count,
    )
    from .encoding import encode_for_model, encoded_features, label_column, windows_by_document
    from .leakage import LabelLeakageWarning, LeakageReport, PairLeakage, audit_label_leakage
    from .overlap import TextOverlap, text_overlap
    from .semeval import LoadReport, SemEvalFormatError, load_semeval, read_semeval_articles, utf16_offset_table
    from .shift import ShiftReport, compute_shift, domain_shift, jensen_shannon_divergence, shift_between
    from .splits import split_articles
    from .synthetic import SyntheticConfig, generate_synthetic_corpus
    from .synthetic_text import TextGenerator
    from .synthetic_tickets import SyntheticTicketsConfig, generate_tickets, write_tickets
    from .tables import LabelledTable, TableFormatError, load_table
    from .tasks import (
        SemEvalTask,
        entity_framing_task,
        multitask_features,
        narrative_task,
        semeval_tasks,
        task_specs,
        to_multitask_examples,
    )
    from .taxonomy import (
        FINE_ROLES,
        FINE_ROLES_BY_MAIN,
        FINE_TO_MAIN,
        MAIN_ROLES,
        OTHER,
        NarrativeTaxonomy,
        domain_of_article_id,
        load_narrative_taxonomy,
    )
