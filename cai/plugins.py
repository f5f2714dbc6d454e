"""Classes registered by name as "module:Class", imported only when chosen.

Engines and scorers both live in such tables, so optional packages (vllm,
detoxify) are imported only by the users who pick them.
"""

from __future__ import annotations

import importlib

from cai.errors import CaiError


def load_class(kind: str, name: str, table: dict[str, str], install_hint: str | None = None) -> type:
    """The class `table[name]`; an unknown name or a missing package is one CaiError line."""
    target = table.get(name)
    if target is None:
        raise CaiError(f"unknown {kind} {name!r}; choose one of: {', '.join(table)}")
    module_name, class_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise CaiError(f"{kind} {name} is not available in this version of cai") from exc
        raise CaiError(f"{kind} {name} needs the {exc.name} package: "
                       f"{install_hint or f'pip install {exc.name}'}") from exc
    return getattr(module, class_name)
