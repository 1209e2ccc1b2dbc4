"""Results files that several processes add to: pytest-xdist workers, or runs one after another.

A JSON object file keyed by test (or measurement) name is merged, not overwritten: under an
exclusive lock on a sibling `<name>.lock` file, the current content is read, the new entries
laid over it and the result written atomically (temporary file, then rename), so two workers
finishing at the same moment both keep their entries and a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from filelock import FileLock

LOCK_TIMEOUT_S = 60.0


class ResultsFileError(RuntimeError):
    """A results file that is not a JSON object, or a lock not obtained in time."""


def merge_json_entries(path: Path, entries: Mapping[str, object]) -> dict[str, object]:
    """Lay entries over the JSON object in path (created if missing); returns the merged whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path.with_name(path.name + ".lock")), timeout=LOCK_TIMEOUT_S)
    try:
        with lock:
            merged = read_json_object(path) | dict(entries)
            _write_atomically(path, json.dumps(merged, indent=1, sort_keys=True))
    except TimeoutError as exc:  # filelock.Timeout is one
        raise ResultsFileError(f"{path}: no lock within {LOCK_TIMEOUT_S:.0f} s") from exc
    return merged


def read_json_object(path: Path) -> dict[str, object]:
    if not path.is_file():
        return {}
    try:
        content = json.loads(path.read_text())
    except ValueError as exc:
        raise ResultsFileError(f"{path}: not JSON ({exc})") from exc
    if not isinstance(content, dict):
        raise ResultsFileError(f"{path}: holds a {type(content).__name__}, not a JSON object")
    return content


def _write_atomically(path: Path, text: str) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
