"""Run directories: durable appends, torn-line repair, the lock, and the settings fingerprint."""

import json
import subprocess
import sys

import pytest

from cai.errors import CaiError
from cai.generation.store import RunStore


def _fingerprint(**over):
    base = {"constitution_sha256": "a", "templates_sha256": "t", "model": "m", "engine": "transformers",
            "rounds": 1, "seed": 0, "temperature": 0.0, "top_p": 1.0, "max_new_tokens": 8, "few_shot": None,
            "strategy": "uniform"}
    return {**base, **over}


def test_appends_survive_and_a_torn_last_line_is_cut(tmp_path):
    store = RunStore(tmp_path / "run")
    with store.locked():
        store.append([{"id": "a"}, {"id": "b"}])
    part = store.parts()[0]
    with open(part, "a") as fh:
        fh.write('{"id": "c", "prompt": "half wr')       # a process killed mid-write
    assert RunStore(tmp_path / "run").done_ids() == {"a", "b"}   # reading alone does not modify
    with store.locked():
        assert store.done_ids() == {"a", "b"}
        store.append([{"id": "c"}])
    ids = [r["id"] for r in store.iter_records()]
    assert ids == ["a", "b", "c"]
    assert all(json.loads(line) for p in store.parts() for line in p.read_text().splitlines())


def test_second_process_is_refused_with_the_owner_pid(tmp_path):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from cai.generation.store import RunStore\n"
        f"with RunStore({str(run)!r}).locked():\n"
        "    print('locked', flush=True); time.sleep(30)")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(CaiError) as err:
            with RunStore(run).locked():
                pass
        assert f"in use by pid {holder.pid}" in str(err.value)
    finally:
        holder.kill()
        holder.wait()
    with RunStore(run).locked():      # a killed owner leaves no stale lock behind
        pass


def test_changed_settings_are_refused_then_archived_with_force_new(tmp_path):
    store = RunStore(tmp_path / "run")
    with store.locked():
        store.write_manifest({"fingerprint": _fingerprint()})
        store.append([{"id": "a"}])
    with store.locked():
        store.check_compatible(_fingerprint(), force_new=False)      # same settings: resume is fine
        with pytest.raises(CaiError) as err:
            store.check_compatible(_fingerprint(model="other"), force_new=False)
        assert "model ('m' -> 'other')" in str(err.value) and "--force-new" in str(err.value)
        store.check_compatible(_fingerprint(model="other"), force_new=True)
    assert store.done_ids() == set()
    archived = list((tmp_path / "run" / "previous").glob("*/generations/part-*.jsonl"))
    assert len(archived) == 1 and '"a"' in archived[0].read_text()
