"""Where a dataset lies on disk, read row by row with the place of every row.

SOURCE may be:
- a file: `.jsonl` or `.json` (JSON Lines, or one JSON list), either gzipped (`.gz`),
  `.parquet` or `.arrow`;
- a folder of such files, searched recursively (one format per folder: parquet, else
  arrow, else JSON); each file's split is read from its name or folder
  (`train.jsonl.gz`, `data/train_prefs-00000-of-00001.parquet`, `default/test/0000.parquet`);
- a `save_to_disk` folder (a DatasetDict gives one part per split), or a cai dataset
  folder (its `hf/`);
- a dataset id such as `Anthropic/hh-rlhf`, looked up in the local Hugging Face caches:
  the hub cache's snapshot (`datasets--Anthropic--hh-rlhf/snapshots/REV/`) or the
  datasets cache's arrow files (`Anthropic___hh-rlhf/CONFIG/VERSION/HASH/*.arrow`).

Nothing is downloaded. Rows come as (where, row) with `where` = "line N", "index N"
or "row N", so every error can name the file and the row.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cai.errors import located
from cai.generation.prompt_files import _batch_rows, _jsonl_rows, _one_line, load_saved

GENERIC_SPLITS = ("train", "test", "validation", "valid", "dev")
# JSON files that describe a dataset rather than hold its rows.
METADATA_FILES = {"constitution.json", "dataset_info.json", "dataset_infos.json", "dataset_dict.json", "state.json",
                  "config.json"}
JSON_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz")
_FORMATS = (".jsonl, .json (optionally .gz), .parquet, .arrow, a folder of them, a save_to_disk folder "
            "or a cached dataset id")

Rows = Iterator[tuple[str, dict]]


@dataclass
class Part:
    """One file or split of a source."""

    label: str                          # what error messages name: a file, or "DIR[split]"
    split: str | None                   # the source's split name; None when it has none
    rows: Callable[[], Rows]            # (where, row) pairs, read on demand
    folder: str = ""                    # the file's folder inside the source ("harmless-base"), if any
    name: str = "data"                  # unique within the source: the file's path in it, or the split


@dataclass
class Source:
    path: Path                          # what SOURCE resolved to
    parts: list[Part]
    notes: list[str]


def open_source(source: str, splits: tuple[str, ...] = ()) -> Source:
    """The parts of SOURCE; `splits` are split names the format knows besides the generic ones."""
    known = tuple(sorted(set(splits) | set(GENERIC_SPLITS), key=len, reverse=True))
    path = Path(source).expanduser()
    notes: list[str] = []
    if not path.exists():
        path = _cached(source, notes)
    if path.is_file():
        return Source(path, [_file_part(path, path.parent, known)], notes)
    return Source(path, _folder_parts(path, known, notes), notes)


# --- the Hugging Face caches --------------------------------------------------------------

def _hf_home() -> Path:
    return Path(os.environ.get("HF_HOME") or "~/.cache/huggingface").expanduser()


def hub_cache() -> Path:
    return Path(os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
                or _hf_home() / "hub").expanduser()


def datasets_cache() -> Path:
    return Path(os.environ.get("HF_DATASETS_CACHE") or _hf_home() / "datasets").expanduser()


def _cached(source: str, notes: list[str]) -> Path:
    """A dataset id's folder in the hub cache (its snapshot) or the datasets cache; an error naming both."""
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", source):
        raise located(source, "", f"no such file or folder; expected {_FORMATS}")
    org, name = source.split("/")
    repo = hub_cache() / f"datasets--{org}--{name}"
    snapshots = repo / "snapshots"
    if snapshots.is_dir():
        ref = repo / "refs" / "main"
        rev = ref.read_text().strip() if ref.is_file() else ""
        chosen = snapshots / rev if rev and (snapshots / rev).is_dir() else None
        if chosen is None:
            found = sorted((p for p in snapshots.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
            chosen = found[-1] if found else None
        if chosen is not None:
            notes.append(f"{source}: read from the hub cache {chosen}")
            return chosen
    built = datasets_cache() / f"{org}___{name}"
    if built.is_dir():
        notes.append(f"{source}: read from the datasets cache {built}")
        return built
    raise located(source, "", f"no such file or folder, and no cached copy in {repo} or {built} "
                              "(download it once where there is network, or pass a local path)")


# --- folders ----------------------------------------------------------------------------

def _folder_parts(path: Path, known: tuple[str, ...], notes: list[str]) -> list[Part]:
    for folder in (path / "hf", path):
        if (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file():
            return _saved_parts(folder)
    arrow_leaves = sorted({p.parent for p in path.rglob("*.arrow") if (p.parent / "dataset_info.json").is_file()},
                          key=lambda p: p.stat().st_mtime)
    if arrow_leaves:                    # the datasets cache: CONFIG/VERSION/HASH/NAME-SPLIT.arrow
        leaf = arrow_leaves[-1]
        if len(arrow_leaves) > 1:
            notes.append(f"{path}: {len(arrow_leaves)} cached builds; reading the newest, {leaf}")
        files = sorted(leaf.glob("*.arrow"))
    else:
        found = [p for p in sorted(path.rglob("*")) if p.is_file() and _data_file(p)
                 and not any(part.startswith(".") for part in p.relative_to(path).parts)]
        families = {"parquet": [p for p in found if p.suffix == ".parquet"],
                    "arrow": [p for p in found if p.suffix == ".arrow"],
                    "json": [p for p in found if p.name.endswith(JSON_SUFFIXES)]}
        kind = next((k for k, v in families.items() if v), None)
        if kind is None:
            raise located(path, "", f"no data files found; expected {_FORMATS}")
        files = families[kind]
        ignored = sum(len(v) for k, v in families.items() if k != kind)
        if ignored:
            notes.append(f"{path}: read the {kind} files; {ignored} files of other formats ignored")
    return [_file_part(p, path, known) for p in files]


def _data_file(p: Path) -> bool:
    return p.suffix in (".parquet", ".arrow") or (p.name.endswith(JSON_SUFFIXES) and p.name not in METADATA_FILES)


def _saved_parts(folder: Path) -> list[Part]:
    import datasets

    datasets.disable_progress_bars()
    loaded = load_saved(folder)
    if isinstance(loaded, datasets.DatasetDict):
        return [Part(f"{folder}[{name}]", name, _dataset_reader(ds), name=name) for name, ds in loaded.items()]
    return [Part(str(folder), None, _dataset_reader(loaded))]


def _dataset_reader(ds) -> Callable[[], Rows]:
    return lambda: _batch_rows(ds.iter(batch_size=1024))


def split_of(path: Path, root: Path, known: tuple[str, ...]) -> str | None:
    """The split a file holds, from its name, else from its folders: the longest known name found."""
    try:
        parents = [p.lower() for p in path.relative_to(root).parts[:-1]][::-1]
    except ValueError:
        parents = []
    stem = path.name.lower().split(".")[0]
    for text in [stem, *parents]:
        for name in known:
            if re.search(rf"(?<![a-z0-9]){re.escape(name)}(?![a-z0-9])", text):
                return name
    return None


def _file_part(path: Path, root: Path, known: tuple[str, ...]) -> Part:
    try:
        folder = str(path.parent.relative_to(root)) if path.parent != root else ""
    except ValueError:
        folder = ""
    split = split_of(path, root, known)
    name = "/".join(x for x in (folder, path.name.split(".")[0]) if x)
    if path.suffix == ".parquet":
        return Part(str(path), split, lambda: _parquet_rows(path), folder, name)
    if path.suffix == ".arrow":
        return Part(str(path), split, lambda: _arrow_rows(path), folder, name)
    if path.name.endswith(JSON_SUFFIXES):
        return Part(str(path), split, lambda: _json_rows(path), folder, name)
    raise located(path, "", f"unknown format; expected {_FORMATS}")


# --- files ------------------------------------------------------------------------------

def _json_rows(path: Path) -> Rows:
    """JSON Lines, or a single JSON list (sniffed by its first character), gzipped or not."""
    import gzip

    opener = (lambda: gzip.open(path, "rt", encoding="utf-8-sig")) if path.suffix == ".gz" else \
        (lambda: open(path, encoding="utf-8-sig"))
    try:
        with opener() as fh:
            head = fh.read(4096).lstrip()
        if head.startswith("["):
            with opener() as fh:
                try:
                    data = json.load(fh)
                except json.JSONDecodeError as e:
                    raise located(path, f"line {e.lineno}", f"invalid JSON: {e.msg} (column {e.colno})") from None
            for i, row in enumerate(data):
                if not isinstance(row, dict):
                    raise located(path, f"index {i}", "expected a JSON object")
                yield f"index {i}", row
            return
        yield from _jsonl_rows(path)
    except (OSError, EOFError, UnicodeDecodeError) as err:
        raise located(path, "", f"cannot read: {_one_line(err)}") from None


def _parquet_rows(path: Path) -> Rows:
    import pyarrow
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (pyarrow.ArrowException, OSError) as e:
        raise located(path, "", f"not a readable Parquet file: {_one_line(e)}") from None
    yield from _batch_rows(b.to_pydict() for b in parquet.iter_batches(batch_size=1024))


def _arrow_rows(path: Path) -> Rows:
    import datasets
    import pyarrow

    try:
        ds = datasets.Dataset.from_file(str(path))
    except (pyarrow.ArrowException, OSError, ValueError) as e:
        raise located(path, "", f"not a readable Arrow file: {_one_line(e)}") from None
    yield from _batch_rows(ds.iter(batch_size=1024))
