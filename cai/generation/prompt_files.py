"""Read prompt sets from JSONL, text, CSV, Parquet or a saved Hugging Face dataset.

Readers stream rows, so a large file costs memory only for the ids already
seen (kept to catch duplicates, which would break resume-by-id). Every problem
is one CaiError line, `FILE: line N: field: what is wrong`, because users fix
prompt files by hand and need to land on the right line.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cai.errors import CaiError, located

_BATCH = 1024
_FORMATS = ".jsonl, .txt, .csv, .parquet or a saved Hugging Face dataset directory"

Rows = Iterator[tuple[str, dict[str, Any]]]  # (where, row), where is "line N" or "row N"


@dataclass(frozen=True)
class PromptRecord:
    """One prompt to answer; `id` keys resume, sharding and provenance downstream."""

    id: str
    prompt: str
    source: str
    category: str = ""


def iter_prompts(
    path: str | os.PathLike[str],
    *,
    column: str | None = None,
    id_column: str = "id",
    category_column: str = "category",
    split: str | None = None,
) -> Iterator[PromptRecord]:
    """Stream the prompts of one file or saved dataset, checked row by row.

    The prompt is read from `column` (default `prompt`) and nowhere else, so a
    file with the text under another name fails loudly instead of being guessed.
    Rows without an id get `p-<sha256(prompt)[:12]>`, stable across runs.
    `split` picks a split of a saved DatasetDict (default `train`); it is an
    error anywhere else, so a `--split test` never silently reads everything.
    """
    field = column or "prompt"
    source, rows = _open(Path(path), field, (id_column, category_column), split)
    seen: dict[str, str] = {}
    for where, row in rows:
        record = _record(source, where, row, field, id_column, category_column)
        first = seen.get(record.id)
        if first is not None:
            if id_column in row:
                raise located(source, where, f"{id_column}: duplicate id {record.id!r} (first at {first})")
            raise located(source, where, f"{field}: duplicate prompt (same text as {first})")
        seen[record.id] = where
        yield record
    if not seen:
        raise located(source, "", "no prompts found")


def load_prompts(path: str | os.PathLike[str], **options: Any) -> list[PromptRecord]:
    """All prompts of a file at once; see `iter_prompts` for the options."""
    return list(iter_prompts(path, **options))


def stable_id(prompt: str) -> str:
    """The id of a prompt that has none: the same text always gets the same id."""
    return "p-" + hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:12]


def parse_shard(text: str) -> tuple[int, int]:
    """Parse `INDEX/COUNT` (e.g. `0/4`) as given on the command line."""
    index_text, _, count_text = text.strip().partition("/")
    try:
        index, count = int(index_text), int(count_text)
    except ValueError:
        raise CaiError(f"shard {text!r}: expected INDEX/COUNT such as 0/4") from None
    _check_shard(index, count, f"shard {text!r}")
    return index, count


def split_shard(records: Iterable[PromptRecord], index: int, count: int) -> Iterator[PromptRecord]:
    """The records of shard `index` of `count`, chosen by a hash of the id.

    Hashing the id (not the position) means every machine agrees on the split
    whatever the file order, and the shards together hold each record once.
    """
    _check_shard(index, count, "shard")
    return (r for r in records if _shard_of(r.id, count) == index)


def _shard_of(record_id: str, count: int) -> int:
    digest = hashlib.sha256(record_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count


def _check_shard(index: int, count: int, label: str) -> None:
    if count < 1:
        raise CaiError(f"{label}: shard count must be at least 1, got {count}")
    if not 0 <= index < count:
        raise CaiError(f"{label}: shard index must satisfy 0 <= index < {count}, got {index}")


def _open(path: Path, field: str, extra: tuple[str, ...], split: str | None) -> tuple[str, Rows]:
    """Pick the reader for `path`; return the source label and its rows."""
    if not path.exists():
        raise located(path, "", "no such file or directory")
    if path.is_dir():
        return _dataset_rows(path, field, extra, split)
    if split is not None:
        raise located(path, "", f"split {split!r} given, but only a saved DatasetDict directory has splits")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return str(path), _jsonl_rows(path)
    if suffix == ".txt":
        return str(path), ((where, {field: line}) for where, line in _text_lines(path) if line.strip())
    if suffix == ".csv":
        return str(path), _csv_rows(path, field)
    if suffix == ".parquet":
        return str(path), _parquet_rows(path, field, extra)
    raise located(path, "", f"unknown format {suffix or '(no extension)'!r}; expected {_FORMATS}")


def _text_lines(path: Path) -> Iterator[tuple[str, str]]:
    """Decode line by line, so a bad byte is reported with its line number (gzip files read as they stream)."""
    import gzip

    with (gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")) as f:
        for number, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise located(path, f"line {number}", f"not valid UTF-8 (bad byte at offset {e.start})") from None
            yield f"line {number}", line.removeprefix("\ufeff") if number == 1 else line


def _jsonl_rows(path: Path) -> Rows:
    for where, line in _text_lines(path):
        if not line.strip():
            continue
        try:
            row = json.loads(line.rstrip("\r\n"))
        except json.JSONDecodeError as e:
            raise located(path, where, f"invalid JSON: {e.msg} (column {e.colno})") from None
        if not isinstance(row, dict):
            raise located(path, where, f"expected a JSON object, got {_kind(row)}")
        yield where, row


def _csv_rows(path: Path, field: str) -> Rows:
    # Each item fed to csv is one physical line, so line_num counts file lines.
    reader = csv.DictReader(line for _, line in _text_lines(path))
    try:
        if reader.fieldnames is None:
            return
        if field not in reader.fieldnames:
            columns = ", ".join(reader.fieldnames)
            raise located(path, "line 1", f"{field}: no such column; the columns are: {columns}")
        start = reader.line_num + 1
        for row in reader:
            yield f"line {start}", row
            start = reader.line_num + 1
    except csv.Error as e:
        raise located(path, f"line {reader.line_num}", f"invalid CSV: {e}") from None


def _parquet_rows(path: Path, field: str, extra: tuple[str, ...]) -> Rows:
    import pyarrow
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (pyarrow.ArrowException, OSError) as e:
        raise located(path, "", f"not a readable Parquet file: {_one_line(e)}") from None
    names = parquet.schema_arrow.names
    columns = _columns(path, names, field, extra)
    batches = (b.to_pydict() for b in parquet.iter_batches(batch_size=_BATCH, columns=columns))
    return _batch_rows(batches)


def _dataset_rows(path: Path, field: str, extra: tuple[str, ...], split: str | None) -> tuple[str, Rows]:
    """A `save_to_disk` directory: a Dataset, or one split of a DatasetDict."""
    if not ((path / "state.json").is_file() or (path / "dataset_dict.json").is_file()):
        raise located(path, "", "directory is not a saved Hugging Face dataset (no state.json or dataset_dict.json); "
                                f"expected {_FORMATS}")
    import datasets

    loaded = load_saved(path)
    if isinstance(loaded, datasets.DatasetDict):
        name = split or "train"
        if name not in loaded:
            raise located(path, "", f"split {name!r} not found; the splits are: {', '.join(loaded)}")
        dataset, source = loaded[name], f"{path}[{name}]"
    elif split is not None:
        raise located(path, "", f"split {split!r} given, but this is a single Dataset without splits")
    else:
        dataset, source = loaded, str(path)
    columns = _columns(source, dataset.column_names, field, extra)
    return source, _batch_rows(dataset.select_columns(columns).iter(batch_size=_BATCH))


def load_saved(path: Path):
    """A `save_to_disk` folder as a Dataset or DatasetDict; a folder that does not load is one line."""
    import datasets

    try:
        return datasets.load_from_disk(str(path))
    except (OSError, ValueError) as e:
        raise located(path, "", f"cannot load the saved dataset: {_one_line(e)}") from None


def _columns(source: Any, names: list[str], field: str, extra: tuple[str, ...]) -> list[str]:
    """The columns worth reading: the prompt (required), id and category (if present)."""
    if field not in names:
        raise located(source, "", f"{field}: no such column; the columns are: {', '.join(names)}")
    return list(dict.fromkeys([field, *(c for c in extra if c in names)]))


def _batch_rows(batches: Iterable[dict[str, list[Any]]]) -> Rows:
    number = 0
    for batch in batches:
        for values in zip(*batch.values()):
            yield f"row {number}", dict(zip(batch, values))
            number += 1


def _record(source: str, where: str, row: dict[str, Any], field: str, id_column: str,
            category_column: str) -> PromptRecord:
    """Check one row and turn it into a record."""
    if field not in row:
        fields = ", ".join(map(str, row)) or "none"
        raise located(source, where, f"{field}: missing (prompts are read from {field!r} only, unless another column "
                                     f"is named; this row has: {fields})")
    prompt = row[field]
    if not isinstance(prompt, str):
        raise located(source, where, f"{field}: must be a string, got {_kind(prompt)}")
    prompt = prompt.strip()
    if not prompt:
        raise located(source, where, f"{field}: empty")

    if id_column in row:
        value = row[id_column]
        if isinstance(value, bool) or not isinstance(value, (str, int, type(None))):
            raise located(source, where, f"{id_column}: must be a string or integer, got {_kind(value)}")
        record_id = "" if value is None else str(value).strip()
        if not record_id:
            raise located(source, where, f"{id_column}: empty (leave the field out to derive an id from the prompt)")
    else:
        record_id = stable_id(prompt)

    category = row.get(category_column)
    if category is not None and not isinstance(category, str):
        raise located(source, where, f"{category_column}: must be a string, got {_kind(category)}")
    return PromptRecord(id=record_id, prompt=prompt, source=source, category=(category or "").strip())


def _kind(value: Any) -> str:
    """A JSON-flavoured type name for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _one_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
