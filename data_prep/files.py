"""Writing files so that a crash or a full disk never leaves one half-written."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same folder + fsync + ``os.replace``.

    Readers see either the old content or the new one, never a half-written file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_settings(path: str | os.PathLike, settings: dict) -> None:
    """Record the settings generated files were made with. Written last, atomically: the file vouches for whole
    files, and a generation cut short by a kill leaves none (so the next launch generates again)."""
    import json

    atomic_write_text(path, json.dumps(settings, indent=1, sort_keys=True) + "\n")


def settings_match(path: str | os.PathLike, settings: dict) -> bool:
    """Whether `path` records exactly `settings` (`write_settings`): the generated files can be reused."""
    import json

    try:
        return json.loads(Path(path).read_text(encoding="utf-8")) == settings
    except (OSError, ValueError):  # missing, unreadable or not JSON: generate again
        return False


__all__ = ["atomic_write_text", "settings_match", "write_settings"]
