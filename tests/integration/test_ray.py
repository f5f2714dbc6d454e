"""`cai generate --ray` and the judge of `cai data pairs --ray` on a local Ray cluster (2 CPUs, no network).

One cluster serves the whole module (Ray takes ~10 s to start): commands run in this process reuse its
connection, and the subprocess drivers attach to it by address.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from support import REPO, cli
from support.runs import numbered_prompts, resume_completes, run_records, wait_for

ray = pytest.importorskip("ray", reason="needs ray: pip install -e '.[ray]' (make test installs it)")

from cai.generation.store import RunStore  # noqa: E402 - after the skip

pytestmark = pytest.mark.slow

CAI = [sys.executable, "-m", "cai.cli.main"]
HHH = str(REPO / "constitution" / "hhh.yaml")


@pytest.fixture(scope="module")
def cluster():
    """A local 2-CPU Ray cluster for the module; its address, for drivers in other processes."""
    ray.init(num_cpus=2, log_to_driver=False, include_dashboard=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def _args(model, prompts, out, *extra):
    return ["generate", "--constitution", HHH, "--prompts", str(prompts), "--model", str(model), "--out", str(out),
            "--few-shot", "1", "--no-pairs", *extra]


def _manifest(run) -> dict:
    return json.loads((Path(run) / "manifest.json").read_text())


def test_two_replicas_of_the_embedded_model_write_what_a_local_run_writes(tmp_path, cluster, embedded_model_dir):
    common = ("--prompts", str(REPO / "data" / "red_team.jsonl"), "--limit", "4", "--batch-size", "2",
              "--rounds", "1", "--max-new-tokens", "24")
    model = str(embedded_model_dir)
    cli(["generate", "-c", HHH, "--model", model, "--out", tmp_path / "local", "--few-shot", "1", "--no-pairs",
         *common])
    result = cli(["generate", "-c", HHH, "--model", model, "--out", tmp_path / "ray", "--few-shot", "1", "--no-pairs",
                  "--ray", "--replicas", "2", "--quiet", *common])
    local, spread = run_records(tmp_path / "local"), run_records(tmp_path / "ray")
    assert len(spread) == 4 and spread == local             # greedy: text for text

    manifest = _manifest(tmp_path / "ray")
    replicas = manifest["ray"]["replicas"]
    assert len(replicas) == 2 and len({r["pid"] for r in replicas}) == 2 and all(r["died"] is None for r in replicas)
    assert manifest["ray"]["address"] == cluster and manifest["ray"]["nodes"][0]["cpus"] == 2
    assert manifest["fingerprint"] == _manifest(tmp_path / "local")["fingerprint"]
    assert manifest["totals"]["records"] == 4 and manifest["engine_info"]["name"] == "transformers"
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    progress = [x for x in lines if x.get("event") == "progress"]
    assert [p["prompts"] for p in progress] == [2, 4] and progress[-1]["replicas"] == 2
    assert progress[-1]["tokens_per_second"] > 0
    summary = lines[-1]
    assert summary["done"] == 4 and summary["replicas"] == 2


def test_a_run_moves_between_local_and_ray_and_keeps_the_same_records(tmp_path, cluster, tiny_model_dir):
    prompts = numbered_prompts(tmp_path, 8)
    flags = ("--rounds", "1", "--max-new-tokens", "8", "--batch-size", "2")
    cli(_args(tiny_model_dir, prompts, tmp_path / "local", *flags))
    cli(_args(tiny_model_dir, prompts, tmp_path / "a", *flags, "--limit", "4", "--ray"))      # Ray, then local
    cli(_args(tiny_model_dir, prompts, tmp_path / "a", *flags))
    cli(_args(tiny_model_dir, prompts, tmp_path / "b", *flags, "--limit", "4"))              # local, then Ray
    cli(_args(tiny_model_dir, prompts, tmp_path / "b", *flags, "--ray"))
    local = run_records(tmp_path / "local")
    assert len(local) == 8 and run_records(tmp_path / "a") == local and run_records(tmp_path / "b") == local
    # b ended on Ray. (Its manifest lists the replicas that loaded: with 2 batches left, the second may still
    # be loading when the first has done both, on a loaded machine.)
    ray_b = _manifest(tmp_path / "b")["ray"]
    assert _manifest(tmp_path / "a")["ray"] is None and ray_b["replicas_started"] == 2 and ray_b["replicas"]


def _driver(cluster, model, prompts, run, *extra) -> list[str]:
    """A `cai generate` driver in its own process, attached to the module's cluster, busy for several seconds."""
    return CAI + _args(model, prompts, run, "--rounds", "2", "--max-new-tokens", "48", "--batch-size", "2",
                       "--quiet", "--ray", cluster, *extra)


def _locked_by_another_process(run: Path) -> bool:
    import fcntl

    with open(run / "run.lock", "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
        return False


def test_a_killed_replica_stops_nothing_and_every_prompt_is_written_once(tmp_path, cluster, tiny_model_dir):
    prompts, run = numbered_prompts(tmp_path, 40), tmp_path / "run"
    proc = subprocess.Popen(_driver(cluster, tiny_model_dir, prompts, run), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: len(RunStore(run).done_ids()) >= 2, timeout=300.0), "no batch landed"
        victim = _manifest(run)["ray"]["replicas"][0]["pid"]
        os.kill(victim, signal.SIGKILL)
        out, err = proc.communicate(timeout=600)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert sorted(run_records(run)) == [f"q{i:02d}" for i in range(40)]
    assert not (run / "failed.jsonl").exists() or not (run / "failed.jsonl").read_text().strip()
    manifest = _manifest(run)["ray"]
    assert manifest["deaths"] == 1 and manifest["replicas_started"] == 3
    assert [r["pid"] for r in manifest["replicas"] if r["died"]] == [victim]
    assert json.loads(out.splitlines()[-1])["done"] == 40


def test_a_driver_killed_with_sigkill_resumes_with_nothing_lost_or_doubled(tmp_path, cluster, tiny_model_dir):
    prompts, run = numbered_prompts(tmp_path, 40), tmp_path / "run"
    args = _driver(cluster, tiny_model_dir, prompts, run)
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        assert wait_for(lambda: len(RunStore(run).done_ids()) >= 2, timeout=300.0), "no batch landed"
        assert _locked_by_another_process(run) and (run / "run.lock").read_text() == str(proc.pid)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    resume_completes(args, run, 40)
    assert not _locked_by_another_process(run)                  # the resumed driver took the lock and let it go


def _poison_worker():
    """A replica whose process dies on any batch holding a prompt with POISON in it (a crash no real engine
    offers on demand); every other batch runs on the real engine. Defined in a function, so Ray ships the
    class by value to its workers."""
    from cai.generation.ray_replicas import ReplicaWorker

    class PoisonWorker(ReplicaWorker):
        def run(self, batch):
            if any("POISON" in p.prompt for p in batch):
                os._exit(1)
            return super().run(batch)

    return PoisonWorker


def test_a_prompt_that_kills_replicas_is_failed_with_the_reason_and_the_rest_is_done(tmp_path, cluster,
                                                                                    tiny_model_dir, monkeypatch):
    from cai.generation.config import GenerateConfig
    from cai.generation.job import run
    from cai.generation.ray_replicas import RayBatches

    prompts = numbered_prompts(tmp_path, 8)
    lines = prompts.read_text().splitlines()
    lines[5] = json.dumps({"id": "q05", "prompt": "POISON: this one crashes the engine."})
    prompts.write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(RayBatches, "worker", _poison_worker())
    summary = run(GenerateConfig(constitution=HHH, prompts=str(prompts), model=str(tiny_model_dir),
                                 out=str(tmp_path / "run"), few_shot=1, rounds=1, max_new_tokens=8, batch_size=4,
                                 ray="local", quiet=True))
    assert summary.done == 7 and summary.failed == 1
    assert sorted(run_records(tmp_path / "run")) == [f"q{i:02d}" for i in range(8) if i != 5]
    failed = [json.loads(line) for line in (tmp_path / "run" / "failed.jsonl").read_text().splitlines()]
    assert [f["id"] for f in failed] == ["q05"]
    assert failed[0]["error"].startswith("the Ray replica running it died 2 times (last: pid ")
    # 4 -> 2 -> 1 prompts, then the one prompt once more: four replicas died, each was replaced
    assert _manifest(tmp_path / "run")["ray"]["deaths"] == 4


def test_the_judge_spreads_over_replicas_and_labels_as_it_does_locally(tmp_path, cluster, tiny_model_dir):
    run = tmp_path / "run"
    cli(_args(tiny_model_dir, numbered_prompts(tmp_path, 6), run, "--rounds", "1", "--max-new-tokens", "8"))
    labels = {}
    for name, extra in (("local", []), ("ray", ["--ray", "--replicas", "2"])):
        out = tmp_path / name
        cli(["data", "pairs", run, "--strategy", "ai-feedback", "--feedback-margin", "0", "--no-filter",
             "--out", out, *extra])
        rows = [json.loads(line) for f in out.glob("*_prefs.jsonl") for line in f.read_text().splitlines()]
        rows += [json.loads(line) for line in (out / "dropped.jsonl").read_text().splitlines()]
        labels[name] = {r["pair_id"]: r["feedback_label"] for r in rows if "feedback_label" in r}
    assert len(labels["local"]) == 6 and labels["ray"].keys() == labels["local"].keys()
    assert all(abs(labels["ray"][k] - labels["local"][k]) < 1e-4 for k in labels["local"])


@pytest.mark.parametrize("extra,line", [
    (["--replicas", "0"], "error: --replicas: must be at least 1, got 0"),
    (["--gpus-per-replica", "1"], "error: --gpus-per-replica: a replica needs 1 GPUs, but no node of the Ray cluster "
                                  "has that many (the largest has 0; 0 in all on 1 nodes)"),
    (["--cpus-per-replica", "3"], "error: --cpus-per-replica: a replica needs 3 CPUs, but no node of the Ray cluster "
                                  "has that many (the largest has 2; 2 in all on 1 nodes)"),
])
def test_a_replica_the_cluster_cannot_hold_is_one_line(tmp_path, cluster, tiny_model_dir, extra, line):
    result = cli(_args(tiny_model_dir, numbered_prompts(tmp_path, 2), tmp_path / "run", "--ray", *extra), code=2)
    assert result.stderr.strip() == line
    assert not (tmp_path / "run").exists()                      # refused before the run directory is touched


@pytest.mark.parametrize("from_env", [False, True], ids=["--ray ADDRESS", "RAY_ADDRESS"])
def test_an_unreachable_address_is_one_line(tmp_path, tiny_model_dir, from_env):
    from support.vllm_env import free_port

    address = f"127.0.0.1:{free_port()}"
    env = {**os.environ, "RAY_ADDRESS": address} if from_env else {k: v for k, v in os.environ.items()
                                                                    if k != "RAY_ADDRESS"}
    flags = ["--ray"] if from_env else ["--ray", address]
    out = subprocess.run(CAI + _args(tiny_model_dir, numbered_prompts(tmp_path, 2), tmp_path / "run", *flags),
                         capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 2
    named = "RAY_ADDRESS=" if from_env else ""
    assert out.stderr.strip() == f"error: --ray: {named}{address}: no Ray cluster answers there (connection refused)"
    assert not (tmp_path / "run").exists()
