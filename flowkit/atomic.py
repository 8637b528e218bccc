"""Atomic, durable file writes: a file is either its old content or its complete new content.

:func:`atomic_write` lets a writer fill a temporary file next to the target, flushes it to disk,
moves it onto the target with ``os.replace`` and flushes the directory entry, so neither an
exception nor a crash leaves a partial file under the target's name. Checkpoints, reflow pair
stores and run directories all write through it.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from flowkit.atomic import atomic_write_text
    >>> target = Path(tempfile.mkdtemp()) / "latest"
    >>> atomic_write_text(target, "step_00000100").read_text()
    'step_00000100'
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

#: Names of temporary files and directories a killed writer may leave behind:
#: ``.{stem}.tmp-{12 hex}{suffix}`` (:func:`temporary_path`) and the ``.{name}.{random}.tmp``
#: staging and ``.{name}.{random}.old`` trash directories of checkpoints.
STALE_PATTERN = re.compile(r"^\..+(\.tmp-[0-9a-f]{12}(\.[^.]*)?|\.tmp|\.old)$")


def current_umask() -> int:
    """The process's umask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def honour_umask(path: str | os.PathLike, directory: bool = False) -> None:
    """Give ``path`` the mode a plain ``open``/``mkdir`` would have under the current umask
    (``tempfile`` and some writers, e.g. safetensors, create files 0600 and directories 0700)."""
    os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())


def remove_stale_temporaries(root: str | os.PathLike) -> list[Path]:
    """Delete the temporary files and directories killed writers left under ``root``.

    Only call this while no other process writes under ``root`` (e.g. holding the run's lock).

    Returns:
        The paths removed.
    """
    removed = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*filenames, *dirnames]:
            if STALE_PATTERN.match(name):
                path = Path(dirpath) / name
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
                removed.append(path)
        dirnames[:] = [d for d in dirnames if not STALE_PATTERN.match(d)]
    return removed


def fsync_directory(directory: str | os.PathLike) -> None:
    """Flush a directory entry to disk (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temporary_path(path: Path) -> Path:
    """A fresh hidden name next to ``path`` with the same suffix (writers such as ``np.save``
    or ``savefig`` read the format from it), e.g. ``.flow.tmp-1a2b3c4d.safetensors``."""
    return path.with_name(f".{path.stem}.tmp-{uuid.uuid4().hex[:12]}{path.suffix}")


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Write ``path`` through ``write(tmp)``, atomically and durably.

    ``write`` creates the temporary file ``tmp`` (in ``path``'s directory, so the final rename
    stays on one file system); it is then fsynced, moved onto ``path`` with ``os.replace`` and
    the directory is fsynced. On any error (in ``write`` or after) the temporary file is removed
    and ``path`` keeps its previous content (or stays absent).

    Args:
        path: the file to write; its directory must exist.
        write: called once with the temporary path; its return value is ignored.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    tmp = temporary_path(path)
    try:
        write(tmp)
        honour_umask(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` with :func:`atomic_write`."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` with :func:`atomic_write`."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding=encoding))
