"""Join the runs of several shards (or machines) into one run directory."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from cai.errors import CaiError
from cai.generation.snapshot import SNAPSHOT
from cai.generation.store import FINGERPRINT_KEYS, RunStore


def merge_runs(run_dirs: list[str | Path], out: str | Path) -> dict:
    """Copy every record of `run_dirs` into `out`; the runs must share their settings."""
    stores = [RunStore(d) for d in run_dirs]
    manifests = []
    for store in stores:
        manifest = store.read_manifest()
        if manifest is None:
            raise CaiError(f"{store.dir}: not a cai run (no manifest.json)")
        manifests.append(manifest)
    first = manifests[0]["fingerprint"]
    for store, manifest in zip(stores[1:], manifests[1:]):
        for key in FINGERPRINT_KEYS:
            if manifest["fingerprint"].get(key) != first.get(key):
                raise CaiError(
                    f"{store.manifest_path}: fingerprint.{key}: {manifest['fingerprint'].get(key)!r} differs from "
                    f"{first.get(key)!r} in {stores[0].manifest_path}; only runs with the same settings merge"
                )
    target = RunStore(out)
    if target.has_records():
        raise CaiError(f"{target.dir}: already holds records; merge into a new directory")

    seen: dict[str, tuple[str, str]] = {}
    counts = {"records": 0, "duplicates": 0}
    with target.locked():
        for store in stores:
            for record in store.iter_records():
                digest = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()
                if record["id"] in seen:
                    other_digest, other_dir = seen[record["id"]]
                    if other_digest != digest:
                        raise CaiError(f"{store.dir}: id {record['id']!r}: also in {other_dir} with different content")
                    counts["duplicates"] += 1
                    continue
                seen[record["id"]] = (digest, str(store.dir))
                target.append([record])
                counts["records"] += 1
        totals: dict = {}
        for manifest in manifests:
            for key, value in manifest.get("totals", {}).items():
                if isinstance(value, (int, float)) and key != "tokens_per_second":
                    totals[key] = round(totals.get(key, 0) + value, 3)
        snapshot = stores[0].dir / SNAPSHOT           # same constitution hash in every run: one copy serves
        if snapshot.is_dir():
            shutil.copytree(snapshot, target.dir / SNAPSHOT, dirs_exist_ok=True)
        target.write_manifest({
            **manifests[0],
            "run": str(target.dir),
            "merged_from": [str(s.dir) for s in stores],
            "config": {**manifests[0]["config"], "shard": None},
            "totals": totals,
        })
    return counts
