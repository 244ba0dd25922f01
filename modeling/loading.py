"""Checks behind `MultiTaskModel.from_pretrained`: name the faulty file of a checkpoint folder, and refuse weights
that would silently start from random values (a configured task whose head is missing from the weights file).

Part of the model code copied next to every saved checkpoint (``trust_remote_code`` loading): imports only
stdlib (and safetensors, a transformers dependency, lazily).
"""

import json
import os
from collections.abc import Collection, Sequence


class MissingWeightsError(OSError):
    """A checkpoint lacks weights the model needs (a task head, or backbone weights); the message names them."""


def allowed_new_heads(allow_new_heads: bool | str | Sequence[str], task_names: Sequence[str]) -> set[str]:
    """The task names whose heads may start from fresh weights (`True`: every task; a name or list of names)."""
    if allow_new_heads is True:
        return set(task_names)
    if allow_new_heads is False or allow_new_heads is None:
        return set()
    names = {allow_new_heads} if isinstance(allow_new_heads, str) else set(allow_new_heads)
    unknown = sorted(names - set(task_names))
    if unknown:
        raise ValueError(f"allow_new_heads: unknown task(s) {unknown}; the config's tasks are {list(task_names)}")
    return names


def check_missing_weights(missing_keys: Collection[str], task_names: Sequence[str], allowed: set[str], where: str) -> None:
    """Raise `MissingWeightsError` when `missing_keys` (of a loaded state dict) hold a head of a task that is not
    in `allowed`, or any backbone weight."""
    missing_heads = sorted(
        {name for name in task_names for key in missing_keys if key.startswith(f"heads.{name}.")} - allowed
    )
    if missing_heads:
        raise MissingWeightsError(
            f"{where}: the weights file has no head for task(s) {missing_heads} (heads.<task>.* missing); they "
            "would start from random weights. Load with from_pretrained(..., allow_new_heads=[...]) to add a task "
            "on purpose."
        )
    backbone = sorted(key for key in missing_keys if not key.startswith("heads."))
    if backbone:
        shown = ", ".join(backbone[:5]) + (f" and {len(backbone) - 5} more" if len(backbone) > 5 else "")
        raise MissingWeightsError(f"{where}: the weights file lacks {len(backbone)} backbone weight(s): {shown}")


def check_saved_labels(config_class, name_or_path, tasks: Sequence[dict], allowed: set[str]) -> None:
    """Refuse tasks given at load time (``config=`` / ``tasks=``) whose labels differ from the saved task's: a head's
    outputs follow the saved label order, so new names or a new order would silently mis-map every class id.

    Tasks in `allowed` (``allow_new_heads``) and tasks the checkpoint does not have are not compared; when the
    saved config cannot be read (a Hub id offline), there is nothing to compare with."""
    try:
        saved = {task["name"]: list(task["labels"]) for task in config_class.from_pretrained(name_or_path).tasks}
    except (OSError, ValueError, KeyError):
        return
    changed = [(task["name"], saved[task["name"]], list(task["labels"])) for task in tasks
               if task["name"] in saved and task["name"] not in allowed and list(task["labels"]) != saved[task["name"]]]
    if changed:
        name, before, after = changed[0]
        raise ValueError(
            f"Cannot load {os.fspath(name_or_path)!r} with other labels for task {name!r}: saved {before}, given {after}"
            f"{f' (and {len(changed) - 1} more task(s))' if len(changed) > 1 else ''}. Its head's outputs follow the "
            "saved labels and order; keep them, or give the task a new name and allow_new_heads=[...] to train a "
            "fresh head.")


def diagnose_checkpoint_folder(folder: str) -> str | None:
    """Name the missing or corrupt file of a local checkpoint folder, or None when the files look fine."""
    config_path = os.path.join(folder, "config.json")
    if not os.path.isfile(config_path):
        return f"{config_path} is missing (save the model with save_pretrained)"
    try:
        with open(config_path, encoding="utf-8") as handle:
            json.load(handle)
    except (OSError, ValueError) as err:
        return f"{config_path} is not valid JSON ({err})"
    single = os.path.join(folder, "model.safetensors")
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.isfile(index):
        try:
            with open(index, encoding="utf-8") as handle:
                shards = sorted(set(json.load(handle)["weight_map"].values()))
        except (OSError, ValueError, KeyError) as err:
            return f"{index} is not a valid safetensors index ({err})"
        files = [os.path.join(folder, shard) for shard in shards]
    elif os.path.isfile(single):
        files = [single]
    elif os.path.isfile(os.path.join(folder, "pytorch_model.bin")):
        return None
    else:
        return f"no weights file in {folder!r} (expected model.safetensors)"
    for path in files:
        if not os.path.isfile(path):
            return f"weights shard {path} is missing"
        try:
            from safetensors import safe_open

            with safe_open(path, framework="pt") as handle:
                list(handle.keys())
        except Exception as err:
            return f"weights file {path} is corrupt or truncated ({err})"
    return None


__all__ = ["MissingWeightsError", "allowed_new_heads", "check_missing_weights", "diagnose_checkpoint_folder"]
