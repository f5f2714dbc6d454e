"""A run directory on disk: append-only shards, resume, a lock, and the manifest.

Layout of `runs/NAME/`:
    manifest.json            config, hashes, model, versions, counts (rewritten atomically)
    generations/part-*.jsonl one generation record a line, appended as batches finish
    failed.jsonl             prompts that could not be answered (too long, refused, engine fault), with the reason
    events.jsonl             one JSON line per stage, for scripts
    snapshot/                the constitution and templates the run was made with
    run.lock                 held (flock) by the process writing the run

Each process appends to a new part file, so a killed run never leaves a file
half-rewritten; on resume a torn last line is cut off and its id redone.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from cai.errors import CaiError
from cai.io import read_jsonl_records, write_atomic, write_jsonl

# What must match for two runs (or a run and its resume) to hold comparable records.
FINGERPRINT_KEYS = (
    "constitution_sha256", "templates_sha256", "model", "engine", "rounds", "seed",
    "temperature", "top_p", "max_new_tokens", "few_shot", "strategy",
)


class RunStore:
    """One run directory. Use `with store.locked():` around any writing."""

    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir)
        self.generations = self.dir / "generations"
        self.manifest_path = self.dir / "manifest.json"
        self.failed_path = self.dir / "failed.jsonl"
        self.events_path = self.dir / "events.jsonl"
        self._lock_fh = None
        self._part = None

    # --- locking -------------------------------------------------------------
    @contextmanager
    def locked(self):
        self.dir.mkdir(parents=True, exist_ok=True)
        lock_path = self.dir / "run.lock"
        fh = open(lock_path, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            owner = fh.read().strip() or "another process"
            fh.close()
            raise CaiError(f"{self.dir}: run is in use by pid {owner} ({lock_path}); wait for it to finish") from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._lock_fh = fh
        try:
            yield self
        finally:
            if self._part:
                self._part.close()
                self._part = None
            fh.close()
            self._lock_fh = None

    # --- manifest ------------------------------------------------------------
    def read_manifest(self) -> dict | None:
        if not self.manifest_path.exists():
            return None
        try:
            return json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise CaiError(f"{self.manifest_path}: not valid JSON ({err})") from None

    def write_manifest(self, manifest: dict) -> None:
        write_atomic(self.manifest_path, json.dumps(manifest, indent=2, sort_keys=False) + "\n")

    def check_compatible(self, fingerprint: dict, *, force_new: bool) -> None:
        """Refuse to mix records made under another constitution, model or setting."""
        old = self.read_manifest()
        if old is None or not self.has_records():
            return
        before = old.get("fingerprint", {})
        changed = [k for k in FINGERPRINT_KEYS if before.get(k) != fingerprint.get(k)]
        if not changed:
            return
        if not force_new:
            detail = ", ".join(f"{k} ({before.get(k)!r} -> {fingerprint.get(k)!r})" for k in changed)
            raise CaiError(
                f"{self.manifest_path}: fingerprint: this run was made with another {detail}; "
                "use another --out, or --force-new to start over (old records are kept under previous/)"
            )
        self._archive_previous()

    def _archive_previous(self) -> None:
        dest = self.dir / "previous" / time.strftime("%Y%m%d-%H%M%S")
        dest.mkdir(parents=True)
        for name in ("generations", "manifest.json", "failed.jsonl", "events.jsonl", "snapshot"):
            if (self.dir / name).exists():
                shutil.move(str(self.dir / name), str(dest / name))

    # --- records -------------------------------------------------------------
    def parts(self) -> list[Path]:
        return sorted(self.generations.glob("part-*.jsonl")) if self.generations.is_dir() else []

    def has_records(self) -> bool:
        return any(p.stat().st_size for p in self.parts())

    def iter_records(self, *, repair: bool = False) -> Iterator[dict]:
        for part in self.parts():
            yield from read_jsonl_records(part, repair=repair)

    def done_ids(self) -> set[str]:
        """Ids already written; repairs torn last lines so appends start clean."""
        return {r["id"] for r in self.iter_records(repair=self._lock_fh is not None)}

    def append(self, records: list[dict]) -> None:
        """Append finished records durably (flush + fsync) before moving on."""
        if not records:
            return
        if self._part is None:
            self.generations.mkdir(parents=True, exist_ok=True)
            self._part = open(self.generations / f"part-{len(self.parts()):05d}.jsonl", "a", encoding="utf-8")
        self._part.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        self._part.flush()
        os.fsync(self._part.fileno())

    def failed_ids(self) -> set[str]:
        """Ids in failed.jsonl (some may have been done since: callers subtract done_ids())."""
        if not self.failed_path.exists():
            return set()
        return {r["id"] for r in read_jsonl_records(self.failed_path)}

    def compact_failed(self) -> int:
        """Rewrite failed.jsonl with the last failure of each prompt not done since; returns how many remain.

        A resumed run tries failed prompts again and appends their new failures, so without this the file
        would list prompts that are done and count others twice.
        """
        if not self.failed_path.exists():
            return 0
        done = self.done_ids()
        latest = {r["id"]: r for r in read_jsonl_records(self.failed_path) if r["id"] not in done}
        write_jsonl(self.failed_path, latest.values())
        return len(latest)

    def append_line(self, path: Path, row: dict) -> None:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
