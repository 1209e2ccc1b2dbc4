"""File writes that never leave a torn file behind."""

from __future__ import annotations

import contextlib
import glob
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

TEMP_SUFFIX = ".tmp"
# A temp file is named after its target, cut to this many characters: with the dots, mkstemp's
# eight random characters and the suffix it stays within the 255 a file name may have, however
# long the target's name is.
_NAME_IN_TEMP = 200


def _temp_prefix(target: Path) -> str:
    return f".{target.name[:_NAME_IN_TEMP]}."


def atomic_write(
    path: Path,
    data: bytes,
    mode: int = 0o600,
    validate: Callable[[Path], None] | None = None,
    *,
    durable: bool = True,
) -> None:
    """Write data to path so that readers see either the old file or the whole new one.

    validate, when given, is called with the complete temp file before it replaces path; if it
    raises, the temp file is removed, path is left untouched and the exception propagates.

    The data is always on disk before the rename, so even a power loss never leaves a torn or
    empty file under path. durable=False skips the directory's fsync after the rename (half
    the cost): a power loss right after may then bring the previous version back. That is for
    what the controller uploads and uploads again (haproxy configs, certificates); the agent's
    own state (what runs, its config, its server certificate) stays durable.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path), suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        if validate is not None:
            validate(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if not durable:
        return
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_text_if_changed(path: Path, text: str, mode: int = 0o600, *,
                          durable: bool = True) -> Path:
    """atomic_write text to path unless path already holds exactly that text (a small file the
    agent derives and may write on every start or reload: unchanged, it is only read); the
    path."""
    with contextlib.suppress(OSError):
        if path.read_text() == text:
            return path
    atomic_write(path, text.encode(), mode, durable=durable)
    return path


def remove_stale_temp_files(directory: Path) -> None:
    """Remove the temp files a crash may have left anywhere under directory, one of the agent's
    own (they are never read by anyone)."""
    if not directory.is_dir():
        return
    for leftover in directory.rglob(f".*{TEMP_SUFFIX}"):
        with contextlib.suppress(OSError):
            leftover.unlink()


def remove_stale_temp_files_of(path: Path) -> None:
    """Remove the temp files a crash may have left beside path, in a directory the agent does
    not own (e.g. /etc/octavia): only those atomic_write names after path."""
    pattern = glob.escape(_temp_prefix(path)) + "*" + TEMP_SUFFIX
    for leftover in path.parent.glob(pattern):
        with contextlib.suppress(OSError):
            leftover.unlink()
