"""Job settings: one dataclass per job, each field carrying its default and its help.

The library reads defaults from these classes, and the CLI builds its options
from the same fields (`cai.cli.options.option`), so a default or a help text
is written once. Validation lives in each class's `__post_init__` and raises
`SettingError` naming the field; the CLI shows it as the flag.
This module imports nothing heavy: `cai --help` reads it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable

from cai.errors import SettingError

REQUIRED = dataclasses.MISSING


def setting(default: Any = REQUIRED, help: str = "", *, factory: Callable[[], Any] | None = None) -> Any:
    """A dataclass field with its help text (`default` REQUIRED: the caller must give a value)."""
    meta = {"help": help}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def spec(cls: type, name: str) -> tuple[Any, str]:
    """(default, help) of the field `name` of the settings class `cls`; REQUIRED when it has no default."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory(), f.metadata.get("help", "")
            return f.default, f.metadata.get("help", "")
    raise KeyError(f"{cls.__name__} has no setting {name!r}")


def default(cls: type, name: str) -> Any:
    return spec(cls, name)[0]


# --- checks used by the settings classes -------------------------------------------------

def at_least(field: str, value: float | None, low: float) -> None:
    if value is not None and value < low:
        raise SettingError(field, f"must be at least {low:g}, got {value:g}")


def between(field: str, value: float | None, low: float, high: float) -> None:
    if value is not None and not low <= value <= high:
        raise SettingError(field, f"must be between {low:g} and {high:g}, got {value:g}")


def one_of(field: str, value: str | None, choices: Iterable[str], what: str = "value") -> None:
    choices = list(choices)
    if value is not None and value not in choices:
        raise SettingError(field, f"unknown {what} {value!r}; choose one of {', '.join(choices)}")
