"""Generation runs in tests: numbered prompt files, a run's records (each written once), waiting on a run being
written, and the resume of a killed one."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

TOPICS = ["bread", "locks", "taxes", "gardening", "chess", "poems", "rust", "tea", "maps", "knots", "owls", "clay"]


def numbered_prompts(tmp_path: Path, n: int) -> Path:
    """prompts.jsonl with ids q00, q01, ... on harmless topics."""
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"id": f"q{i:02d}", "prompt": f"Tell me about {TOPICS[i % 12]} ({i}).",
                                        "category": "test"}) + "\n" for i in range(n)))
    return path


def run_records(run) -> dict[str, dict]:
    """The run's records by id; a prompt written twice fails the test."""
    from cai.generation.store import RunStore

    rows = list(RunStore(run).iter_records())
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)), "a prompt was written twice"
    return {r["id"]: r for r in rows}


def wait_for(predicate, timeout: float = 120.0) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def resume_completes(args: list[str], run, n: int) -> dict[str, dict]:
    """After a kill mid-run: the same command skips what was written, writes the rest, and every prompt is there
    once; returns the records."""
    from cai.generation.store import RunStore

    partial = RunStore(run).done_ids()
    assert 2 <= len(partial) < n
    resumed = subprocess.run(args, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout.splitlines()[-1])
    assert summary["skipped_done"] == len(partial) and summary["done"] == n - len(partial)
    records = run_records(run)
    assert sorted(records) == [f"q{i:02d}" for i in range(n)]
    return records
