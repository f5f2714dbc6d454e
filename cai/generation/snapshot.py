"""The constitution and templates a run was generated with, kept inside the run.

`cai generate` copies them to `RUN/snapshot/` (the manifest keeps their hash
too). Everything that reads the run later (`cai data pairs`, `audit`, `stats`,
`report`) reads the snapshot, so the few-shot-copy rule compares the outputs
with the text that produced them even after the user edits the constitution.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from cai.errors import CaiError

SNAPSHOT = "snapshot"
CONSTITUTION_FILE = "constitution.yaml"
PROMPTS_DIR = "prompts"


def write_snapshot(run_dir: str | Path, constitution_path: str | Path, templates) -> dict:
    """Copy the constitution file and every template in use into RUN/snapshot/; return the manifest entry."""
    from cai.generation.templates import TEMPLATE_NAMES

    run_dir = Path(run_dir)
    tmp = run_dir / f".{SNAPSHOT}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / PROMPTS_DIR).mkdir(parents=True)
    shutil.copyfile(constitution_path, tmp / CONSTITUTION_FILE)
    for name in TEMPLATE_NAMES:
        shutil.copyfile(templates.path(name), tmp / PROMPTS_DIR / f"{name}.j2")
    dest = run_dir / SNAPSHOT
    if dest.exists():
        shutil.rmtree(dest)
    tmp.rename(dest)
    return {"constitution": f"{SNAPSHOT}/{CONSTITUTION_FILE}", "prompts_dir": f"{SNAPSHOT}/{PROMPTS_DIR}"}


@dataclass
class RunSources:
    """The constitution and templates of a run, and where they were read from."""

    constitution: object          # cai.constitution.Constitution
    templates: object             # cai.generation.templates.Templates
    path: str                     # the constitution file read
    from_snapshot: bool
    note: str = ""                # set when the run has no snapshot and the file changed since


def run_sources(run_dir: str | Path, manifest: dict) -> RunSources:
    """The run's snapshot; for runs made before snapshots, the files the manifest names (with a note if changed)."""
    from cai.constitution import constitution_hash, load_constitution
    from cai.generation.templates import Templates

    run_dir = Path(run_dir)
    snap = manifest.get("snapshot") or {}
    if snap and (run_dir / snap["constitution"]).is_file():
        path = run_dir / snap["constitution"]
        return RunSources(load_constitution(path), Templates(run_dir / snap["prompts_dir"]), str(path), True)
    path = (manifest.get("constitution") or {}).get("path")
    if not path or not Path(path).is_file():
        raise CaiError(f"{run_dir}: the run has no {SNAPSHOT}/ and its constitution {path!r} is gone")
    constitution = load_constitution(path)
    note = ""
    if constitution_hash(constitution) != (manifest.get("fingerprint") or {}).get("constitution_sha256"):
        note = (f"{path} changed since the run and the run has no {SNAPSHOT}/: "
                "the few-shot-copy rule compares with the current file")
    return RunSources(constitution, Templates((manifest.get("config") or {}).get("prompts_dir")), path, False, note)


def snapshot_status(constitution_meta: dict) -> str:
    """One line on the snapshot a dataset card names: where, and whether the original file changed since."""
    from cai.constitution import constitution_hash

    snap, original, sha = (constitution_meta.get(k) for k in ("snapshot", "path", "sha256"))
    if not snap:
        return "no snapshot recorded"
    if not Path(snap).is_file():
        return f"snapshot {snap} (not found here)"
    line = f"snapshot {snap}"
    if original and Path(original).is_file():
        try:
            changed = constitution_hash(original) != sha
        except CaiError:
            changed = True
        line += f"; {original} {'has changed since' if changed else 'is unchanged'}"
    return line
