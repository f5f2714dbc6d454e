"""Shared by the import tests: the fixture files in each public format and the caches they are read from."""

from __future__ import annotations

import json
from pathlib import Path

from support import REPO

FIXTURES = REPO / "tests" / "fixtures" / "imports"


def said(result) -> str:
    """A command's output with rich's line wrapping undone."""
    return " ".join(result.output.split())


def rows(dataset: Path, split: str) -> list[dict]:
    return jsonl_rows(dataset / f"{split}.jsonl")


def jsonl_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def card(dataset: Path) -> dict:
    from cai.preferences.export import read_card

    return read_card(dataset)


def hub_snapshot(cache: Path, repo: str, files: dict[str, bytes]) -> Path:
    """The hub cache layout: blobs, a snapshot of symlinks to them, refs/main naming the snapshot."""
    org, name = repo.split("/")
    root = cache / f"datasets--{org}--{name}"
    snapshot = root / "snapshots" / "0123abcd"
    for i, (rel, data) in enumerate(files.items()):
        blob = root / "blobs" / f"{i:040x}"
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        (snapshot / rel).parent.mkdir(parents=True, exist_ok=True)
        (snapshot / rel).symlink_to(blob)
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text("0123abcd")
    return snapshot


def cai_harmless_hub(cache: Path) -> None:
    """HuggingFaceH4/cai-conversation-harmless as the hub holds it: parquet splits under data/ with hashed names,
    constitution.json at the root."""
    from datasets import Dataset

    files = {"constitution.json": (FIXTURES / "cai-harmless" / "constitution.json").read_bytes(),
             "README.md": b"---\nlicense: apache-2.0\n---\n"}
    for split in ("train_sft", "train_prefs", "test_sft", "test_prefs"):
        path = cache.parent / f"{split}.parquet"
        Dataset.from_list(jsonl_rows(FIXTURES / "cai-harmless" / "data" / f"{split}.jsonl")).to_parquet(str(path))
        files[f"data/{split}-00000-of-00001-5e6f7a8b9c0d1e2f.parquet"] = path.read_bytes()
    hub_snapshot(cache, "HuggingFaceH4/cai-conversation-harmless", files)
