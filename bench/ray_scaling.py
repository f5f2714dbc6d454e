"""`cai generate --ray`: what Ray costs on one machine, and where the driver would stop at 64 GPUs.

    python bench/ray_scaling.py [--prompts 16] [--batch-size 4] [--max-new-tokens 64] [--repeats 1]

Throughput (the embedded SmolLM2, transformers engine, greedy, 1 round, the
same prompts in each run, engine start excluded: completion tokens over the
time batches ran):

  local    one `cai generate` process with two threads (OMP_NUM_THREADS=2)
  ray      `cai generate --ray ADDRESS --replicas 2 --cpus-per-replica 1`: two replicas of one thread each,
           on a 2-CPU Ray cluster this script starts (its start is not timed)
  shards   two plain processes of one thread each, `--shard 0/2` and `--shard 1/2` at once: what two
           replicas give with no Ray at all, so ray / shards is Ray's own cost

The runs alternate (local, ray, shards, local, ...) and the figures are medians.
The Ray run's records must equal the local run's, text for text.

The driver at scale (the real records of the Ray run, repeated):

  - bytes a batch sends to a replica (its prompts) and gets back (its records), as pickled;
  - the driver's write rate: batches of records through `RunWriter.write` (JSON lines, flush + fsync);
  - the driver's whole loop with replicas that answer at once: actors hand back ready-made outcomes of
    16 and 256 records through the object store; the driver waits, gets and writes them;
  - the resume scan: `RunStore.done_ids()` over a run of 20,000 records.

Prints JSON lines and markdown tables for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

CAI = [sys.executable, "-m", "cai.cli.main"]


def _generate(args: list[str], threads: int) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    return subprocess.Popen(CAI + args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _summary(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"cai generate failed: {err.strip()[-800:]}")
    return json.loads(out.splitlines()[-1])


def _common(prompts: Path, out: Path, args) -> list[str]:
    return ["generate", "-c", "constitution/hhh.yaml", "--prompts", str(prompts), "--out", str(out),
            "--rounds", "1", "--few-shot", "1", "--max-new-tokens", str(args.max_new_tokens),
            "--batch-size", str(args.batch_size), "--no-pairs", "--quiet"]


def throughput(args, work: Path, address: str) -> tuple[list[dict], Path]:
    prompts = work / "prompts.jsonl"
    lines = (ROOT / "data" / "red_team.jsonl").read_text().splitlines()
    prompts.write_text("\n".join(lines[:args.prompts]) + "\n")
    rows = []
    for k in range(args.repeats):
        local = _summary(_generate(_common(prompts, work / f"local{k}", args), threads=2))
        spread = _summary(_generate(_common(prompts, work / f"ray{k}", args)
                                    + ["--ray", address, "--replicas", "2", "--cpus-per-replica", "1"], threads=1))
        halves = [_generate(_common(prompts, work / f"shard{k}-{i}", args) + ["--shard", f"{i}/2"], threads=1)
                  for i in range(2)]
        shards = [_summary(p) for p in halves]
        rows.append({
            "local_tok_s": local["completion_tokens"] / local["batch_seconds"],
            "ray_tok_s": spread["completion_tokens"] / spread["batch_seconds"],
            # each shard's own rate, summed: the split by id hash is uneven, and the longer shard would
            # otherwise be charged for the time the other sat finished
            "shards_tok_s": sum(s["completion_tokens"] / s["batch_seconds"] for s in shards),
            "local_s": local["batch_seconds"], "ray_s": spread["batch_seconds"],
            "tokens": local["completion_tokens"],
        })
        if _texts(work / f"ray{k}") != _texts(work / f"local{k}"):
            raise SystemExit("the Ray run's records differ from the local run's")
    return rows, work / "ray0"


def _texts(run: Path) -> dict:
    from cai.generation.store import RunStore

    return {r["id"]: (r["initial_response"], r["final_response"]) for r in RunStore(run).iter_records()}


# --- the driver at scale -------------------------------------------------------------------

def _records(run: Path, n: int) -> list[dict]:
    from cai.generation.store import RunStore

    real = [json.dumps(r) for r in RunStore(run).iter_records()]
    # each a fresh object (json.loads), so pickle cannot share the repeated texts between records
    return [{**json.loads(real[i % len(real)]), "id": f"r{i:07d}"} for i in range(n)]


def transfer_sizes(run: Path) -> dict:
    from cai.generation.loop import BatchResult
    from cai.generation.prompt_files import PromptRecord
    from cai.generation.worker import BatchOutcome

    out = {}
    for size in (16, 256):
        records = _records(run, size)
        batch = [PromptRecord(r["id"], r["prompt"], r["source"], r["category"]) for r in records]
        outcome = BatchOutcome(results=[BatchResult(records)])
        out[size] = {"to_replica_kb": len(pickle.dumps(batch)) / 1024,
                     "from_replica_kb": len(pickle.dumps(outcome)) / 1024,
                     "record_json_kb": sum(len(json.dumps(r)) for r in records) / size / 1024}
    return out


def _writer(store):
    from cai.generation.job import RunWriter
    from cai.progress import Reporter

    return RunWriter(store, Reporter(["answer", "critique r1", "revise r1"], quiet=True))


def write_rate(run: Path, work: Path, batch: int, batches: int) -> dict:
    from cai.generation.loop import BatchResult
    from cai.generation.prompt_files import PromptRecord
    from cai.generation.store import RunStore
    from cai.generation.worker import BatchOutcome

    records = _records(run, batch * batches)
    store = RunStore(work / f"write-{batch}")
    with store.locked():
        writer = _writer(store)
        start = time.perf_counter()
        for b in range(batches):
            part = records[b * batch:(b + 1) * batch]
            prompts = [PromptRecord(r["id"], r["prompt"], r["source"], r["category"]) for r in part]
            writer.write(prompts, BatchOutcome(results=[BatchResult(part)]))
        seconds = time.perf_counter() - start
    size = sum(p.stat().st_size for p in store.parts())
    return {"batch": batch, "batches_per_s": batches / seconds, "records_per_s": batch * batches / seconds,
            "mb_per_s": size / seconds / 2**20}


def driver_loop(run: Path, work: Path, batch: int, batches: int) -> dict:
    """The driver's whole loop (wait, get through the object store, write) when replicas answer at once."""
    import ray

    from cai.generation.loop import BatchResult
    from cai.generation.prompt_files import PromptRecord
    from cai.generation.store import RunStore
    from cai.generation.worker import BatchOutcome

    @ray.remote(num_cpus=0.5)
    class Instant:
        def __init__(self, outcome):
            self.outcome = outcome

        def run(self, batch):
            return self.outcome

    records = _records(run, batch)
    outcome = BatchOutcome(results=[BatchResult(records)])
    prompts = [PromptRecord(r["id"], r["prompt"], r["source"], r["category"]) for r in records]
    actors = [Instant.remote(outcome) for _ in range(2)]
    ray.get([a.run.remote([]) for a in actors])
    store = RunStore(work / f"loop-{batch}")
    with store.locked():
        writer = _writer(store)
        start = time.perf_counter()
        running = {a.run.remote(prompts): a for a in actors}
        for n in range(batches):
            ready, _ = ray.wait(list(running), num_returns=1)
            actor = running.pop(ready[0])
            got = ray.get(ready[0])
            for r in got.results[0].records:          # new ids, as a real run's batches would have
                r["id"] = f"{r['id']}-{n}"
            writer.written.clear()
            writer.write(prompts, got)
            running[actor.run.remote(prompts)] = actor
        seconds = time.perf_counter() - start
    for a in actors:
        ray.kill(a)
    return {"batch": batch, "batches_per_s": batches / seconds, "records_per_s": batch * batches / seconds}


def resume_scan(run: Path, work: Path, n: int) -> dict:
    from cai.generation.store import RunStore

    store = RunStore(work / "scan")
    with store.locked():
        store.append(_records(run, n))
    start = time.perf_counter()
    done = RunStore(work / "scan").done_ids()
    seconds = time.perf_counter() - start
    return {"records": len(done), "records_per_s": n / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--driver-batches", type=int, default=400)
    args = parser.parse_args()

    import ray

    from cai.models import resolve_model

    resolve_model(None)                          # convert the embedded model once, outside the timings
    work = Path(tempfile.mkdtemp(prefix="cai-bench-ray-"))
    load_before = os.getloadavg()[0]
    ray.init(num_cpus=2, log_to_driver=False, include_dashboard=False)
    try:
        address = ray.get_runtime_context().gcs_address
        rows, ray_run = throughput(args, work, address)
        sizes = transfer_sizes(ray_run)
        writes = [write_rate(ray_run, work, b, max(args.driver_batches // (b // 16), 10)) for b in (16, 256)]
        loops = [driver_loop(ray_run, work, b, max(args.driver_batches // (b // 16), 10)) for b in (16, 256)]
        scan = resume_scan(ray_run, work, 20000)
    finally:
        ray.shutdown()
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    result = {"prompts": args.prompts, "batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens,
              "repeats": args.repeats, **{k: round(v, 2) for k, v in med.items()},
              "ray_vs_local": round(med["ray_tok_s"] / med["local_tok_s"], 3),
              "ray_vs_shards": round(med["ray_tok_s"] / med["shards_tok_s"], 3),
              "load_avg_1m": [round(load_before, 1), round(os.getloadavg()[0], 1)]}
    print(json.dumps(result))
    print(json.dumps({"transfer_kb": sizes, "write": writes, "driver_loop": loops, "resume_scan": scan},
                     default=lambda x: round(x, 2)))
    print()
    print("| run | completion tok/s | batch seconds |")
    print("| --- | --- | --- |")
    print(f"| local, 1 process x 2 threads | {med['local_tok_s']:.1f} | {med['local_s']:.1f} |")
    print(f"| ray, 2 replicas x 1 thread | {med['ray_tok_s']:.1f} | {med['ray_s']:.1f} |")
    print(f"| shards, 2 processes x 1 thread, no Ray | {med['shards_tok_s']:.1f} | - |")
    print()
    print("| target | measured | goal |")
    print("| --- | --- | --- |")
    print(f"| ray / local throughput | {result['ray_vs_local']:.3f} | >= 0.9 (overhead <= 10%) |")
    print(f"| ray / shards throughput (Ray's own cost) | {result['ray_vs_shards']:.3f} | (reported) |")
    print()
    print("| driver, batch of | to replica KB | from replica KB | record JSON KB | write records/s | "
          "write MB/s | whole loop batches/s | whole loop records/s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for w, loop in zip(writes, loops):
        s = sizes[w["batch"]]
        print(f"| {w['batch']} | {s['to_replica_kb']:.1f} | {s['from_replica_kb']:.1f} | {s['record_json_kb']:.2f} | "
              f"{w['records_per_s']:,.0f} | {w['mb_per_s']:.1f} | {loop['batches_per_s']:,.0f} | "
              f"{loop['records_per_s']:,.0f} |")
    print()
    print(f"| resume scan | {scan['records']:,} records | {scan['records_per_s']:,.0f} records/s |")
    print("| --- | --- | --- |")


if __name__ == "__main__":
    main()
