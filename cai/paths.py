"""Where cai finds its shipped files and keeps its cache."""

from __future__ import annotations

import os
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
_REPO = _PACKAGE.parent


def shipped_dir(name: str) -> Path:
    """A folder shipped with cai (`prompts`, `constitution`).

    In a wheel it lives under `cai/_data/`; in a source checkout it is the
    top-level folder of the same name.
    """
    packaged = _PACKAGE / "_data" / name
    return packaged if packaged.is_dir() else _REPO / name


def cache_dir() -> Path:
    """The user cache (`CAI_CACHE_DIR`, else `~/.cache/cai`)."""
    root = os.environ.get("CAI_CACHE_DIR")
    if root:
        return Path(root).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "cai"
