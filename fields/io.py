"""io.py
=====
Atomic file writes: a file either appears complete under its final name or not at all.

Every writer here writes to a temporary file in the destination's own folder (same file system), flushes it
to disk, then ``os.replace``-s it over the destination. On any error the temporary file is removed and the
destination is left as it was. The final file gets ordinary permissions (``0o666`` minus the umask), not
the ``0o600`` that temporary files are created with.

A kill (SIGKILL, power loss) between creating a temporary file and renaming it leaves the temporary file
behind, named ``.{destination name}.{random}.tmp{destination suffix}``; :func:`remove_stale_temporaries`
deletes such leftovers from a folder the caller owns.

A destination that cannot be created or written (missing permissions, a parent that is a file, a read-only
or full disk) raises :class:`~fieldstudio.errors.FieldStudioError`; errors raised by the caller's own ``writer``
are re-raised unchanged.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from fieldstudio.errors import FieldStudioError

__all__ = [
    "atomic_write",
    "atomic_open",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_save_torch",
    "ensure_writable_dir",
    "json_ready",
    "remove_stale_temporaries",
]

# OS errors during a write that the user can fix (space, permissions, read-only media).
_USER_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR, errno.EISDIR}


def _cannot_write(folder: Path, err: BaseException) -> FieldStudioError:
    reason = getattr(err, "strerror", None) or str(err)
    return FieldStudioError(
        f"cannot write to {folder}: {reason}. Choose another output folder or fix its permissions."
    )


def _default_mode() -> int:
    """``0o666`` minus the process umask, read without changing it (``os.umask`` is racy across threads)."""
    umask = 0o022
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                umask = int(line.split()[1], 8)
                break
    return 0o666 & ~umask


# Our temporary files: "." + destination name + "." + mkstemp's random letters + ".tmp" + destination suffix
# (see _make_temp), and ensure_writable_dir's probe.
_TEMP_NAME = re.compile(r"\.(?P<dest>.+)\.[a-z0-9_]+\.tmp(?P<suffix>(\.[^.]*)?)")
_PROBE_NAME = ".write-test"


def _is_our_temporary(name: str) -> bool:
    if name == _PROBE_NAME:
        return True
    m = _TEMP_NAME.fullmatch(name)
    return m is not None and Path(m["dest"]).suffix == m["suffix"]


def _make_temp(dest: Path) -> tuple[Path, int, Path]:
    """Create the destination folder and an empty temp file in it; returns (folder, fd, temp path)."""
    folder = dest.parent
    try:
        if dest.is_dir():
            raise IsADirectoryError(errno.EISDIR, "the destination is a folder", str(dest))
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=f".tmp{dest.suffix}", dir=folder)
    except OSError as err:
        raise _cannot_write(folder, err) from err
    return folder, fd, Path(tmp_name)


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, writer: Callable[[Path], Any]) -> Path:
    """Write ``path`` atomically by letting ``writer`` fill a temporary file next to it.

    Parameters
    ----------
    path : str or PathLike
        Final destination. Its parent folders are created if missing.
    writer : callable(Path) -> Any
        Called once with the temporary file's path (same folder, same suffix as ``path``, so libraries
        that pick a format from the suffix still work). It must write the whole file there.

    Returns
    -------
    Path
        The destination path.

    Raises
    ------
    FieldStudioError
        If the destination folder cannot be created or written to.
    """
    dest = Path(path)
    with _replacing(dest) as (fd, tmp):
        os.close(fd)
        writer(tmp)
        _fsync_path(tmp)
    return dest


@contextlib.contextmanager
def _replacing(dest: Path) -> Iterator[tuple[int, Path]]:
    """Yield ``(fd, tmp)`` of a temp file beside ``dest``; rename it over ``dest`` if the block succeeds.

    On any error the temp file is removed and ``dest`` is untouched; OS errors a user can fix become
    FieldStudioError.
    """
    folder, fd, tmp = _make_temp(dest)
    try:
        yield fd, tmp
        os.chmod(tmp, _default_mode())
        os.replace(tmp, dest)
    except BaseException as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(err, OSError) and err.errno in _USER_ERRNOS:
            raise _cannot_write(folder, err) from err
        raise


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", encoding: str | None = None) -> Iterator[Any]:
    """Context manager yielding an open file whose content replaces ``path`` only if the block succeeds.

    Parameters
    ----------
    path : str or PathLike
        Final destination.
    mode : {"wb", "w"}
        Binary or text.
    encoding : str, optional
        Text encoding (text mode only; default UTF-8).
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open supports mode 'wb' or 'w', got {mode!r}")
    if mode == "w" and encoding is None:
        encoding = "utf-8"
    with _replacing(Path(path)) as (fd, _):
        with os.fdopen(fd, mode, encoding=encoding) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically. Returns the path."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (UTF-8 by default). Returns the path."""
    with atomic_open(path, "w", encoding=encoding) as fh:
        fh.write(text)
    return Path(path)


def json_ready(value: Any) -> Any:
    """``value`` with numpy scalars and arrays (at any depth of dicts, lists, tuples) turned into Python values."""
    if isinstance(value, dict):
        return {k: json_ready(x) for k, x in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(x) for x in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> Path:
    """Serialise ``obj`` (numpy values allowed, see :func:`json_ready`) as JSON and write it atomically.

    The object is serialised *before* anything is written, so an unserialisable object raises
    ``TypeError`` and leaves no file behind. NaN/inf are written as JSON's non-standard ``NaN``/``Infinity``.
    """
    text = json.dumps(json_ready(obj), indent=indent, sort_keys=False) + "\n"
    return atomic_write_text(path, text)


def ensure_writable_dir(folder: str | os.PathLike) -> Path:
    """Create ``folder`` and prove it is writable before long work starts (FieldStudioError if not)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / _PROBE_NAME
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise _cannot_write(folder, err) from None
    return folder


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that writers of this module left in ``folder`` when a kill stopped them.

    Only files named as this module names them are deleted: ``.{name}.{random}.tmp{suffix}`` where ``{suffix}``
    is ``{name}``'s own suffix (e.g. ``.checkpoint.pt.k2x9a_0q.tmp.pt``), and :func:`ensure_writable_dir`'s
    ``.write-test`` probe. Other files, hidden or not, subfolders, links and the contents of subfolders are left
    alone. A missing folder has nothing to clean.

    The caller must own ``folder`` while this runs (e.g. a run folder at the start of its job): a temporary file
    of a write still in progress there, by another thread or process, would be deleted and that write would fail.

    Returns
    -------
    list of Path
        The deleted files, sorted.

    Raises
    ------
    FieldStudioError
        If a leftover cannot be deleted (e.g. the folder is read-only).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if not _is_our_temporary(entry.name) or not entry.is_file(follow_symlinks=False):
            continue
        try:
            os.unlink(entry.path)
        except FileNotFoundError:
            continue
        except OSError as err:
            raise _cannot_write(folder, err) from err
        removed.append(folder / entry.name)
    return removed


def atomic_save_torch(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj, path)`` atomically (checkpoints are never left half-written)."""
    import torch  # local: fields.io must stay importable without touching torch

    with atomic_open(path, "wb") as fh:
        torch.save(obj, fh)
    return Path(path)
