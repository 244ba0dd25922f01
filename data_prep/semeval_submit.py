"""Write SemEval-2025 Task 10 submission files for a folder of raw documents with a saved multi-task model.

::

    python -m data_prep.semeval_submit --model MODEL_DIR --documents EN/raw-documents \\
        [--mentions EN/subtask-1-entity-mentions.txt] --out OUT_DIR

``--mentions`` gives the entity mentions to classify (the organisers' ``subtask-1-entity-mentions.txt``,
``article_id<TAB>mention<TAB>start<TAB>end`` in UTF-16 units with inclusive end, or an annotation file whose
extra columns are ignored); it is required when the model has an entity-framing task. Every input is checked
before the model is loaded: a missing folder, an empty or undecodable document, an unknown article, an offset out
of range or a mention text that differs from the document fail with a message naming the file and line.
Writes ``OUT_DIR/subtask-1-annotations.txt`` and/or ``OUT_DIR/subtask-2-annotations.txt``.

Narratives are decoded within the article's domain (from its id, ``EN_UA_*`` / ``EN_CC_*`` / ``RU-URW-*``: labels
of the other domain are dropped, ``Other`` stays; an id that names no domain, such as ``PT_230.txt``, is decoded
over both domains; see :func:`data_prep.semeval_official.constrain_to_domain`), parent first
when the model carries the narrative threshold a study tuned on validation (``--no-parent-first``: every
subnarrative on its own threshold; :mod:`data_prep.narrative_decoding`); ``--no-domain-constraint`` writes the
model's plain predictions instead. Each mention gets its best fine role (``--fine-roles``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Sequence

from .narrative_decoding import PARENT_THRESHOLD_ATTRIBUTE
from .semeval import ARTICLE_NAME_FORM, SUBTASK1_FILE, SUBTASK2_FILE, SemEvalFormatError, is_article_file, parse_offset, read_article_text, utf16_offset_table
from .semeval_official import (
    FINE_ROLE_DECODINGS,
    Submission,
    check_fine_role_decoding,
    constrain_predictions_to_domain,
    read_tsv_lines,
    submission_from_predictions,
    task_roles,
)

logger = logging.getLogger(__name__)


def read_documents(folder: str | Path) -> list[dict]:
    """Articles of a ``raw-documents`` folder as ``{"id", "text", "mentions": []}``, sorted by file name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: folder of raw documents not found")
    articles, stray = [], []
    for path in sorted(folder.iterdir()):
        if not is_article_file(path):  # the loader's rule: a stray file would get a line the scorer rejects
            if path.is_file() and not path.name.startswith("."):
                stray.append(path.name)
            continue
        try:
            text, _ = read_article_text(path)  # as the loader reads it: byte order mark dropped, "\r" kept
        except UnicodeDecodeError as error:
            raise SemEvalFormatError(f"document is not valid UTF-8 ({error})", path) from error
        if not text.strip():
            raise SemEvalFormatError("document is empty", path)
        articles.append({"id": path.name, "text": text, "mentions": []})
    if stray:
        logger.warning("%s: %d file(s) not named like an article (%s) skipped: %s", folder, len(stray),
                       ARTICLE_NAME_FORM, ", ".join(stray[:5]) + (" ..." if len(stray) > 5 else ""))
    if not articles:
        raise FileNotFoundError(f"{folder}: no documents in the folder (article files are named {ARTICLE_NAME_FORM})")
    return articles


def attach_mentions(articles: list[dict], path: str | Path) -> int:
    """Add the mentions of ``path`` (official offsets) to ``articles`` as Python ``start``/``end`` (end exclusive).

    Returns the number of mentions; mentions of an article keep the file's order.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: mentions file not found")
    by_id = {article["id"]: article for article in articles}
    tables: dict[str, list[int | None] | None] = {}
    seen: dict[tuple[str, int, int], int] = {}
    count = 0
    for number, fields in read_tsv_lines(path):
        if len(fields) < 4:
            raise SemEvalFormatError(
                f"expected at least 4 tab-separated fields (article_id, mention, start, end), found {len(fields)}", path, number
            )
        article_id, mention = fields[0].strip(), fields[1]
        if article_id not in by_id:
            raise SemEvalFormatError(f"article {article_id!r} is not among the documents", path, number, "article_id")
        try:
            start16, end16 = parse_offset(fields[2]), parse_offset(fields[3])
        except ValueError:
            message = f"offsets {fields[2]!r}, {fields[3]!r} are not integers"
            raise SemEvalFormatError(message, path, number, "start/end") from None
        text = by_id[article_id]["text"]
        if article_id not in tables:
            tables[article_id] = utf16_offset_table(text)
        table = tables[article_id]
        length16 = len(text) if table is None else len(table) - 1
        if not 0 <= start16 <= end16 < length16:
            raise SemEvalFormatError(
                f"span [{start16}, {end16}] (UTF-16 units, end inclusive) is outside {article_id!r} of {length16} UTF-16 units",
                path,
                number,
                "start/end",
            )
        start, end = (start16, end16 + 1) if table is None else (table[start16], table[end16 + 1])
        if start is None or end is None:
            raise SemEvalFormatError(f"span [{start16}, {end16}] splits a character outside the BMP", path, number, "start/end")
        if text[start:end] != mention:
            raise SemEvalFormatError(
                f"mention {mention!r} differs from the document text {text[start:end]!r} at [{start16}, {end16}]",
                path,
                number,
                "mention",
            )
        key = (article_id, start16, end16)
        if key in seen:
            raise SemEvalFormatError(f"same span as line {seen[key]}", path, number, "start/end")
        seen[key] = number
        by_id[article_id]["mentions"].append({"start": start, "end": end})
        count += 1
    return count


def _model_tasks(model_dir: Path) -> list[dict]:
    """The task specs of a saved model, read from its config.json without loading weights."""
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} not found: --model must be a folder saved with save_pretrained")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{config_path}: not valid JSON ({error})") from error
    tasks = config.get("tasks") if isinstance(config, dict) else None
    if not tasks:
        raise ValueError(f"{config_path}: no 'tasks' field: not a MultiTaskModel checkpoint")
    if not isinstance(tasks, list) or not all(isinstance(task, dict) and isinstance(task.get("name"), str) for task in tasks):
        raise ValueError(f"{config_path}: field 'tasks' must be a list of task specs (objects with a 'name'), got "
                         f"{str(tasks)[:100]!r}: not a MultiTaskModel checkpoint")
    return tasks


def _check_output_folder(out: Path, writes: dict[str, bool], keep_existing: bool) -> None:
    """``out`` is (or can be made) a writable folder, and holds no subtask file that this run would not rewrite."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} is a file: give a folder for the submission files")
    out.mkdir(parents=True, exist_ok=True)
    if not os.access(out, os.W_OK):
        raise PermissionError(f"--out {out}: the folder is not writable")
    stale = [name for name, written in writes.items() if not written and (out / name).exists()]
    if stale and not keep_existing:
        raise FileExistsError(f"--out {out} holds {', '.join(stale)} from an earlier run, which this model does not "
                              "rewrite: a scorer would read it as this model's. Remove it, choose another --out, or "
                              "pass --keep-existing to combine two models' files in one folder")


def write_submission(
    model_dir: str | Path,
    documents: str | Path,
    out: str | Path,
    mentions: str | Path | None = None,
    batch_size: int = 16,
    domain_constraint: bool = True,
    fine_roles: str = "best",
    parent_first: bool = True,
    keep_existing: bool = False,
) -> Submission:
    """Validate the inputs, predict with the saved model and write the submission files to ``out``; narratives are
    constrained to each article's domain unless ``domain_constraint`` is False, and decoded parent first when the
    model carries a tuned ``narrative_parent_threshold`` (`data_prep.narrative_decoding`) unless ``parent_first`` is
    False; ``fine_roles`` as in `submission_from_predictions`.

    Every input and the output folder are checked before the model is loaded. A subtask file already in ``out`` that
    this model would not rewrite (an entity file next to a narratives-only model) is refused, since a scorer would
    read it as this model's, unless ``keep_existing`` (to combine two models' files in one folder)."""
    check_fine_role_decoding(fine_roles)  # before the model is loaded
    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    model_dir, out = Path(model_dir), Path(out)
    tasks = _model_tasks(model_dir)
    roles = task_roles(tasks)
    has_entity_task = roles.entity_fine is not None or roles.entity_coarse is not None
    if not has_entity_task and not (roles.narrative_fine or roles.narrative_coarse):
        names = [task.get("name") for task in tasks]
        raise ValueError(f"{model_dir}: none of the tasks {names} predicts SemEval entity roles or narratives")
    articles = read_documents(documents)
    if has_entity_task and mentions is None:
        raise ValueError(f"the model {model_dir} has an entity-framing task: give --mentions (subtask-1-entity-mentions.txt)")
    count = attach_mentions(articles, mentions) if mentions is not None else 0
    if mentions is not None and count == 0:
        raise ValueError(f"{mentions}: no mention lines (article_id, mention, start, end): nothing to predict roles for")
    _check_output_folder(out, writes={SUBTASK1_FILE: has_entity_task and count > 0,
                                      SUBTASK2_FILE: bool(roles.narrative_fine or roles.narrative_coarse)},
                         keep_existing=keep_existing)
    logger.info("%d documents, %d mentions: predicting with %s", len(articles), count, model_dir)

    # heavy (torch): only once the inputs are known to be good. Imported before the tokenizer is read: it registers
    # the model type, so transformers neither asks to trust the folder's copied code nor runs it.
    from transformers import AutoTokenizer

    from modeling import MultiTaskModel

    try:  # before the weights: the folder must carry the tokenizer the model was trained with
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
    except (OSError, ValueError) as error:
        raise ValueError(f"--model {model_dir}: no tokenizer could be loaded from the folder ({error}); save the "
                         "tokenizer with the model (tokenizer.save_pretrained(folder))") from error

    model = MultiTaskModel.from_pretrained(model_dir)
    span_mentions = [[(m["start"], m["end"]) for m in article["mentions"]] for article in articles]
    predictions = model.predict(
        [article["text"] for article in articles],
        mentions=span_mentions if has_entity_task else None,
        tokenizer=tokenizer,
        batch_size=batch_size,
        return_scores=True,
    )
    if domain_constraint and (roles.narrative_fine or roles.narrative_coarse):
        parent_threshold = getattr(model.config, PARENT_THRESHOLD_ATTRIBUTE, None) if parent_first else None
        predictions = constrain_predictions_to_domain(articles, predictions, model.config.tasks, model.config.thresholds_of,
                                                      model.config.relative_threshold, parent_threshold)
    submission = submission_from_predictions(articles, predictions, model.config.tasks, fine_roles)
    for path in submission.write(out):
        logger.info("wrote %s", path)
    return submission


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data_prep.semeval_submit", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, type=Path, help="folder of a saved MultiTaskModel (with its tokenizer)")
    parser.add_argument("--documents", required=True, type=Path, help="folder of raw documents (<LANG>/raw-documents)")
    parser.add_argument("--mentions", type=Path, help="subtask-1-entity-mentions.txt (or an annotation file)")
    parser.add_argument("--out", required=True, type=Path, help="folder to write the submission files to")
    parser.add_argument("--batch-size", type=int, default=16, help="windows per forward pass")
    parser.add_argument("--no-domain-constraint", dest="domain_constraint", action="store_false",
                        help="write the model's narratives as predicted, without restricting them to the article's domain")
    parser.add_argument("--keep-existing", action="store_true",
                        help="keep a subtask file already in --out that this model does not write (to combine an "
                             "entity-framing model's and a narratives model's files); refused by default")
    parser.add_argument("--no-parent-first", dest="parent_first", action="store_false",
                        help="decode every subnarrative on its own threshold even when the model carries a tuned "
                             "narrative_parent_threshold (parent-first decoding: data_prep.narrative_decoding)")
    parser.add_argument("--fine-roles", choices=FINE_ROLE_DECODINGS, default="best",
                        help="best: one fine role per mention, the best pair of fine and main role (default); "
                             "thresholded: every fine role above its threshold within the main role")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        submission = write_submission(args.model, args.documents, args.out, args.mentions, args.batch_size,
                                      args.domain_constraint, args.fine_roles, args.parent_first,
                                      args.keep_existing)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{len(submission.mentions)} subtask-1 lines, {len(submission.narratives)} subtask-2 lines -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
