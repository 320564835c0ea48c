"""shipping.py
===========
Run folders that travel, for Ray clusters without a shared file system: a node that cannot see the batch's output
folder fits its item in a scratch folder of its own and returns the folder packed (an uncompressed tar: checkpoints
do not compress); the head unpacks it under the output folder. An interrupted item travels the other way, so that
it resumes from its checkpoint wherever it lands.

A node sees the output folder when it can read the marker the head wrote there with this batch's token.
"""

from __future__ import annotations

import io
import secrets
import shutil
import tarfile
from pathlib import Path

MARKER = ".fieldstudio-batch"


def write_marker(out_dir: Path) -> str:
    """Write a fresh token into ``out_dir``'s marker; returns it."""
    from fieldstudio.io import atomic_write_text

    token = secrets.token_hex(8)
    atomic_write_text(out_dir / MARKER, token)
    return token


def sees(out_dir: Path, token: str | None) -> bool:
    """Whether this process sees the head's ``out_dir`` (the marker holds ``token``)."""
    try:
        return token is not None and (out_dir / MARKER).read_text() == token
    except OSError:
        return False


def pack_folder(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                tar.add(path, arcname=str(path.relative_to(folder)), recursive=False)
    return buffer.getvalue()


def unpack_folder(data: bytes, folder: Path) -> None:
    """Replace ``folder`` with the packed one: unpacked next to it first, then swapped in by renames, so a kill
    leaves either the old folder or the new one."""
    incoming = folder.with_name(f".{folder.name}.incoming")
    old = folder.with_name(f".{folder.name}.old")
    shutil.rmtree(incoming, ignore_errors=True)
    incoming.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
        for member in tar.getmembers():  # only plain files, inside the folder
            target = (incoming / member.name).resolve()
            if not member.isfile() or incoming.resolve() not in target.parents:
                raise ValueError(f"a shipped run folder holds {member.name!r}, which is not a file inside it")
        tar.extractall(incoming, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)
    incoming.rename(folder)
    shutil.rmtree(old, ignore_errors=True)
