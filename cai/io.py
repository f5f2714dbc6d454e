"""Reading and writing the files cai keeps: atomic writes, JSON, JSONL, small YAML configs, versions.

Everything a run leaves on disk goes through here, so a killed process never
leaves half a file and a torn last JSONL line never stops a resume.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from cai.errors import CaiError


def write_atomic(path: str | Path, text: str) -> None:
    """Temp file in the same folder, fsync, os.replace: readers see the old file or the new one, never half."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, path.stat().st_mode & 0o7777 if path.exists() else 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def write_json(path: str | Path, data: Any, indent: int = 2) -> None:
    write_atomic(path, json.dumps(data, indent=indent, ensure_ascii=False) + "\n")


def write_jsonl(path: str | Path, rows) -> None:
    write_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def read_json(path: str | Path) -> dict | None:
    """The JSON object in `path`, or None when it is missing, unreadable or not an object."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def load_json(path: str | Path, what: str = "file") -> Any:
    """The JSON in `path` that the user named; a missing or broken file is a one-line CaiError."""
    from cai.errors import CaiError

    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CaiError(f"{path}: {what} not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CaiError(f"{path}: not valid JSON ({err})") from None


def read_jsonl(path: str | Path, limit: int | None = None) -> list[dict]:
    """The JSON objects of a JSONL file; bad or torn lines are skipped, never fatal."""
    rows: list[dict] = []
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if limit is not None and len(rows) >= limit:
                    break
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(row, dict):
                    rows.append(row)
    except OSError:
        pass
    return rows


def read_jsonl_records(path: Path, *, repair: bool = False) -> Iterator[dict]:
    """Yield the complete records of an append-only JSONL file; a torn last line is skipped (and cut if repair)."""
    good_end = 0
    with open(path, "rb") as fh:
        for raw in fh:
            if not raw.endswith(b"\n"):
                break
            try:
                record = json.loads(raw)
            except json.JSONDecodeError:
                break
            good_end += len(raw)
            yield record
    if repair and good_end < path.stat().st_size:
        with open(path, "r+b") as fh:
            fh.truncate(good_end)


def plain(node: Any) -> Any:
    """ruamel's scalar and container subclasses -> plain Python, so models and hashes hold ordinary values."""
    if isinstance(node, dict):
        return {str(k) if isinstance(k, str) else k: plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [plain(v) for v in node]
    for kind in (bool, str, int, float):
        if isinstance(node, kind):
            return kind(node)
    return node


def load_mapping(path: str | Path, what: str, shape: str) -> dict:
    """The top-level mapping of the small YAML config file `path` (empty file: {}).

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


def versions(*dists: str) -> dict:
    """Installed versions of `dists` (and Python), for manifests and model cards; missing ones are left out."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for dist in dists:
        try:
            found[dist] = version(dist)
        except PackageNotFoundError:
            pass
    return found
