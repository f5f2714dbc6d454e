"""Reading small YAML config files (gate, filter rules) with one-line errors."""

from __future__ import annotations

from pathlib import Path

from cai.errors import CaiError


def load_mapping(path: str | Path, what: str, shape: str) -> dict:
    """The top-level mapping of the YAML file `path` (empty file: {}).

    `what` names the file in messages ("gate file"); `shape` says what the top
    level should hold, for the message when it is not a mapping.
    """
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        data = YAML(typ="safe").load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CaiError(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise CaiError(f"{path}: is a directory, not a {what}") from None
    except (YAMLError, UnicodeDecodeError) as err:
        raise CaiError(f"{path}: not valid YAML: {str(err).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise CaiError(f"{path}: top level must be {shape}")
    return data


def build(model, data: dict, where: str, prefix: str = ""):
    """`model(**data)` for a pydantic config class; a bad value is one line naming `where` and the key."""
    from pydantic import ValidationError

    try:
        return model(**data)
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        raise CaiError(f"{where}: {prefix}{key}: {first['msg']}") from None
