"""One study folder, one set of settings.

A relaunch skips the runs a folder has already finished and resumes the unfinished ones, found by name (arm, task,
seed). That is what makes a killed study cheap to finish, but a name does not say how a run was trained: relaunched
with another learning rate, another corpus or another ``--primary_domain``, a study would report the old runs
under the new settings. So the settings that shape a run's results are written to ``<output_dir>/study_settings.json``
and a relaunch into a folder that holds runs must match them, before any data is loaded.

What may change between launches: the grid's extent (``--seeds``, ``--arms``: more runs, same settings), the
statistics of the report (``--alpha``, ``--p_adjust``), how runs are launched (``--launcher`` and the Ray options,
``--cpu_threads``, ``--cache_frozen_layers``, which gives the same rows), and logging, checkpoint retention and Hub
options.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from enum import Enum
from pathlib import Path
from typing import Any, Sequence

from transformers import TrainingArguments

from .launchers import LauncherArguments
from .results import atomic_write_text

logger = logging.getLogger(__name__)

SETTINGS_FILE = "study_settings.json"
#: Experiment fields that extend the grid or change only the report or the launch, never a run's results.
NOT_RESULT_FIELDS = frozenset({
    "seeds", "arms", "alpha", "p_adjust", "cpu_threads", "cache_frozen_layers", "save_best_model", "card_license",
    *(f.name for f in dataclasses.fields(LauncherArguments)),
})
#: The fields of ``transformers.TrainingArguments`` that cannot change a run's results (logging, saving, Hub,
#: evaluation batching, data-loader workers, the process's rank): every other field counts, so a flag added by a
#: newer transformers counts until it is known harmless. ``seed``, ``data_seed``, ``run_name``,
#: ``metric_for_best_model`` and ``greater_is_better`` are set per run by the study (``--seeds``,
#: ``--primary_metric``) and refused on the command line (``config.refuse_overridden_training_flags``).
HARMLESS_TRAINING_FIELDS = frozenset({
    "output_dir", "run_name", "project", "report_to", "logging_strategy", "logging_steps", "logging_first_step",
    "logging_nan_inf_filter", "log_level", "log_level_replica", "log_on_each_node", "disable_tqdm", "debug",
    "skip_memory_metrics", "include_num_input_tokens_seen", "save_total_limit", "save_on_each_node",
    "push_to_hub", "hub_model_id", "hub_strategy", "hub_token", "hub_private_repo", "hub_always_push", "hub_revision",
    "trackio_space_id", "trackio_bucket_id", "trackio_static_space_id", "resume_from_checkpoint", "local_rank",
    "do_train", "do_eval", "do_predict", "per_device_eval_batch_size", "eval_accumulation_steps",
    "eval_do_concat_batches", "eval_use_gather_object", "batch_eval_metrics", "prediction_loss_only",
    "include_for_metrics", "dataloader_num_workers", "dataloader_pin_memory", "dataloader_persistent_workers",
    "dataloader_prefetch_factor", "dataloader_multiprocessing_context", "ddp_timeout", "ddp_backend",
    "torch_empty_cache_steps", "seed", "data_seed", "metric_for_best_model", "greater_is_better",
    "ddp_find_unused_parameters", "accelerator_config", "restore_callback_states_from_checkpoint",
})
_NOT_RESULT_TRAINING_FIELDS = frozenset({"log_per_label_metrics"})


def _plain(value: Any) -> Any:
    """A JSON value that compares equal across launches (enums by value, paths as absolute strings)."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Path):
        return str(value.resolve())
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in sorted(value.items())}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _counts(name: str, owner: object) -> bool:
    if isinstance(owner, TrainingArguments):
        return name not in HARMLESS_TRAINING_FIELDS and name not in _NOT_RESULT_TRAINING_FIELDS
    return name not in NOT_RESULT_FIELDS


def study_settings(recipe: str, parsed: Sequence[object]) -> dict[str, Any]:
    """``{"recipe": ..., "<Dataclass>.<field>": value}`` of the settings that shape a run's results."""
    from .data import SPLIT_VERSION

    settings: dict[str, Any] = {"recipe": recipe, "split_version": SPLIT_VERSION}
    for owner in parsed:
        for f in dataclasses.fields(owner):
            if not f.name.startswith("_") and _counts(f.name, owner):
                value = getattr(owner, f.name, None)
                if f.name in ("data_dir", "model_name_or_path", "data_file") and isinstance(value, str) and Path(value).exists():
                    value = Path(value)  # the same folder named two ways is the same data
                settings[f"{type(owner).__name__}.{f.name}"] = _plain(value)
                if f.name == "data_file" and isinstance(value, Path) and value.is_file():  # same name, other table?
                    settings[f"{type(owner).__name__}.data_file_sha256"] = _sha256(value)
    return settings


def _sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _holds_runs(output_dir: Path) -> bool:
    results = output_dir / "results.jsonl"
    runs = output_dir / "runs"
    return (results.is_file() and results.stat().st_size > 0) or (runs.is_dir() and any(runs.iterdir()))


def check_study_settings(output_dir: str | Path, settings: dict[str, Any], record: bool = True) -> None:
    """Refuse a launch into a folder whose runs were made with other settings; record the settings otherwise
    (``record``: the main process of a launch writes, every process checks).

    Raises ValueError naming every setting that differs (stored -> now) and what to do.
    """
    output_dir = Path(output_dir)
    path = output_dir / SETTINGS_FILE
    if _holds_runs(output_dir):
        if not path.is_file():
            logger.warning("%s holds runs but no %s (made before settings were recorded): its runs cannot be "
                           "checked against this launch's settings; recording these", output_dir, SETTINGS_FILE)
        else:
            try:
                stored = json.loads(path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                raise ValueError(f"{path}: unreadable ({error}); restore it or use a new --output_dir") from error
            # A setting the folder did not record (an older version did not count it) cannot be checked; but a
            # folder from before the split rules were versioned was split under older ones.
            unrecorded = sorted(set(settings) - set(stored) - {"recipe", "split_version"})
            if unrecorded:
                logger.info("%s was recorded before these settings counted; they are not checked: %s", path,
                            ", ".join(key.split(".", 1)[-1] for key in unrecorded))
            changed = [key for key in sorted({*stored, "recipe", "split_version"}) if stored.get(key) != settings.get(key)]
            if changed:
                shown = "; ".join(f"{key.split('.', 1)[-1]}: {stored.get(key)!r} -> {settings.get(key)!r}"
                                  for key in changed[:8])
                more = f" (and {len(changed) - 8} more)" if len(changed) > 8 else ""
                raise ValueError(
                    f"{output_dir} holds runs made with other settings ({shown}{more}). Relaunching would skip or "
                    "resume those runs and report them under the new settings: use a new --output_dir for these "
                    "settings, or relaunch with the stored ones (in " + str(path) + "). Adding --seeds or --arms, "
                    "or changing the statistics, the launcher or logging, is allowed.")
            return
    if not record:
        return
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(settings, indent=1, sort_keys=True) + "\n")
    except OSError as error:  # an unwritable folder is reported, with its remedy, before the first run
        logger.debug("settings not recorded in %s: %s", path, error)


__all__ = ["SETTINGS_FILE", "study_settings", "check_study_settings"]
