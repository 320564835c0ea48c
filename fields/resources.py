"""resources.py
============
Where the files shipped beside the code live: the kernel sources (``cuda/``) and the built-in inputs (``assets/``).

In the repository they are top-level folders next to ``fields/``; an installed wheel carries them inside the
package (``fieldstudio/cuda``, ``fieldstudio/assets``). Both layouts are looked up here, once.
"""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent


def resource_dir(name: str) -> Path:
    """The folder ``name`` (``"cuda"`` or ``"assets"``): inside the installed package, else beside it."""
    for candidate in (_HERE / name, _HERE.parent / name):
        if candidate.is_dir():
            return candidate
    return _HERE / name  # missing in both: callers report it by path


def kernel_sources() -> Path:
    return resource_dir("cuda")


def assets() -> Path:
    return resource_dir("assets")
