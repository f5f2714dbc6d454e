"""Check a preference dataset before training on it: one line per bad row."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from cai.errors import CaiError

ROLES = {"system", "user", "assistant"}


def iter_rows(path: str | Path) -> Iterator[tuple[str, dict]]:
    """(where, row) from a JSONL file, a saved dataset dir (every split), or a cai run's dataset dir."""
    p = Path(path)
    if p.is_dir():
        hf = p / "hf" if (p / "hf").is_dir() else p
        from datasets import Dataset, DatasetDict, load_from_disk

        try:
            ds = load_from_disk(str(hf))
        except (FileNotFoundError, ValueError) as err:
            raise CaiError(f"{p}: not a saved dataset ({err})") from None
        splits = ds.items() if isinstance(ds, DatasetDict) else [("", ds)]
        for name, split in splits:
            if isinstance(split, Dataset) and "chosen" not in split.column_names and name.endswith("sft"):
                continue
            for i, row in enumerate(split):
                yield (f"{name}[{i}]" if name else f"row {i}"), row
        return
    if not p.exists():
        raise CaiError(f"{p}: file not found")
    with open(p, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                yield f"line {n}", {"__error__": f"invalid JSON ({err.msg})"}
                continue
            yield f"line {n}", row if isinstance(row, dict) else {"__error__": "not a JSON object"}


def _messages_problem(value, field: str, last_role: str) -> str | None:
    if isinstance(value, str):
        return None if value.strip() else f"{field}: empty"
    if not isinstance(value, list) or not value:
        return f"{field}: must be a non-empty list of messages or a string"
    for i, m in enumerate(value):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            return f"{field}[{i}]: must have role and content"
        if m["role"] not in ROLES:
            return f"{field}[{i}].role: unknown role {m['role']!r}"
        if not isinstance(m["content"], str) or not m["content"].strip():
            return f"{field}[{i}].content: empty"
    if value[-1]["role"] != last_role:
        return f"{field}: last message must have role {last_role!r}, not {value[-1]['role']!r}"
    return None


def row_problems(row: dict) -> list[str]:
    if "__error__" in row:
        return [row["__error__"]]
    problems = [f"{f}: missing" for f in ("prompt", "chosen", "rejected") if f not in row]
    if problems:
        return problems
    for field, role in (("prompt", "user"), ("chosen", "assistant"), ("rejected", "assistant")):
        why = _messages_problem(row[field], field, role)
        if why:
            problems.append(why)
    if not problems and json.dumps(row["chosen"], sort_keys=True) == json.dumps(row["rejected"], sort_keys=True):
        problems.append("chosen: identical to rejected")
    return problems


def validate_preferences(path: str | Path) -> tuple[int, list[str]]:
    """(rows checked, one line per problem naming the file, row and field)."""
    lines, count = [], 0
    for where, row in iter_rows(path):
        count += 1
        lines += [f"{path}: {where}: {problem}" for problem in row_problems(row)]
    if count == 0:
        lines.append(f"{path}: no rows")
    return count, lines
