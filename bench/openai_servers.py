"""`cai generate --engine openai` against real vLLM servers: many servers, and one server at the defaults.

    python bench/openai_servers.py [--prompts 64] [--max-new-tokens 128] [--rounds 1] [--only balance,default]
                                   [--concurrency N] [--vllm-python .venv-vllm/bin/python]

Two measures, each arm one `cai generate` run of the same held-out prompts (the first human turns of the
HH-RLHF harmless-base test split), greedy, at cai's default settings (no --concurrency, no --batch-size):

- balance: one vLLM server pinned to core 0 (`taskset -c 0`), then two servers pinned to cores 0 and 1,
  both URLs given to one `cai generate`. Target: two servers at least 1.7x the tokens/s of one.
- default: one vLLM server on every core against the in-process vLLM engine (`--engine vllm`). Target:
  the server at least 0.9x the in-process engine's tokens/s.

Every server runs as cai's in-process engine does on this CPU (float32 where bf16 would be emulated, no
core reserved, eager, prefix caching, 1 GiB of KV cache), so the arms differ only in where the engine runs.
Engine start is excluded: a run's time is its manifest's wall_seconds minus engine_load_seconds. With each
arm: the CPU seconds of the cai process and of the servers' processes, each server's requests, the range
of its limit on requests in flight, and how full it was kept (its running requests, sampled from vLLM's
/metrics every 0.25 s: the mean, and the share of samples with none running), so the figures say where
the time went.

vLLM pins an older transformers, so the servers and the cai runs use `--vllm-python` (.venv-vllm by
default). Prints one JSON line per arm and markdown tables for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _sampling import Sampler  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")

HH_TEST = ROOT / "data" / "hh-rlhf" / "harmless-base-test.jsonl.gz"
SERVED = "bench-model"


def held_out_prompts(n: int, path: Path) -> Path:
    """The first human turn of the first `n` distinct HH-RLHF harmless-base test conversations, as JSONL."""
    seen: list[str] = []
    with gzip.open(HH_TEST, "rt", encoding="utf-8") as lines:
        for line in lines:
            first = json.loads(line)["chosen"].split("\n\nHuman: ")[1].split("\n\nAssistant:")[0].strip()
            if first and first not in seen:
                seen.append(first)
            if len(seen) == n:
                break
    path.write_text("".join(json.dumps({"id": f"hh{i}", "prompt": p}) + "\n" for i, p in enumerate(seen)))
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """A vLLM OpenAI-compatible server in its own process group, optionally pinned to some cores."""

    def __init__(self, python: str, model: str, work: Path, cores: str | None):
        self.port, self.cores = free_port(), cores
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.log = work / f"server-{self.port}.log"
        cmd = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--served-model-name", SERVED,
               "--host", "127.0.0.1", "--port", str(self.port), "--dtype", engine_dtype(),
               "--enforce-eager", "--enable-prefix-caching"]
        if cores is not None:
            cmd = ["taskset", "-c", cores, *cmd]
        env = {**os.environ, "VLLM_CPU_NUM_OF_RESERVED_CPU": "0", "VLLM_CPU_KVCACHE_SPACE": "1",
               "VLLM_CACHE_ROOT": str(work / "vllm-cache"), "TORCHINDUCTOR_CACHE_DIR": str(work / "inductor"),
               "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait(self, timeout: float = 600) -> None:
        import httpx2 as httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"vLLM server exited ({self.proc.returncode}): {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(self.url.removesuffix("/v1") + "/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(1)
        sys.exit(f"vLLM server not up after {timeout} s: {self.log}")

    def cpu_seconds(self) -> float:
        import psutil

        total = 0.0
        try:
            for p in [psutil.Process(self.proc.pid), *psutil.Process(self.proc.pid).children(recursive=True)]:
                times = p.cpu_times()
                total += times.user + times.system
        except psutil.Error:
            pass
        return total

    def stop(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
                self.proc.wait(30)
                return
            except ProcessLookupError:
                return
            except subprocess.TimeoutExpired:
                continue


def engine_dtype() -> str:
    """What cai's in-process vLLM engine resolves on this CPU."""
    from cai.engines.vllm import _read_cpu_flags, cpu_dtype

    return cpu_dtype(_read_cpu_flags())


def cai_generate(python: str, args, prompts: Path, out: Path, engine_args: list[str]) -> dict:
    """One `cai generate` run; its figures from the manifest, and the CPU seconds of the cai process tree."""
    cmd = [python, "-m", "cai.cli.main", "generate", "-c", "constitution/hhh.yaml", "--prompts", str(prompts),
           "--rounds", str(args.rounds), "--max-new-tokens", str(args.max_new_tokens), "--out", str(out),
           "--no-pairs", "--quiet", *engine_args]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"cai generate failed ({proc.returncode}): {proc.stderr[-2000:]}")
    manifest = json.loads((out / "manifest.json").read_text())
    totals = manifest["totals"]
    seconds = totals["wall_seconds"] - manifest.get("engine_load_seconds", 0.0)
    return {"records": totals["records"], "completion_tokens": totals["completion_tokens"],
            "seconds": round(seconds, 1), "tokens_per_s": round(totals["completion_tokens"] / seconds, 1),
            "engine_load_s": manifest.get("engine_load_seconds"),
            "cai_cpu_s": round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 1),
            "concurrency": manifest["engine_info"]["extra"].get("concurrency")}


class Occupancy(Sampler):
    """Samples each server's running requests (vLLM's /metrics gauge) while a run goes: how full it was kept."""

    def __init__(self, servers: list[Server], every: float = 0.25):
        super().__init__(every)
        self.servers = servers
        self.samples: list[list[float]] = [[] for _ in servers]

    def sample(self) -> None:
        import httpx2 as httpx

        for server, samples in zip(self.servers, self.samples):
            try:
                text = httpx.get(server.url.removesuffix("/v1") + "/metrics", timeout=2).text
            except httpx.TransportError:
                continue
            running = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                       if line.startswith("vllm:num_requests_running")]
            if running:
                samples.append(sum(running))

    def summary(self) -> list[dict]:
        """Per server: mean requests running, and the share of samples with none running (idle)."""
        return [{"mean_running": round(sum(s) / len(s), 1) if s else None,
                 "idle_share": round(sum(v == 0 for v in s) / len(s), 2) if s else None} for s in self.samples]


def server_arm(name: str, python: str, args, prompts: Path, work: Path, servers: list[Server]) -> dict:
    cpu_before = [s.cpu_seconds() for s in servers]
    urls = [a for s in servers for a in ("--base-url", s.url)]
    if args.concurrency:
        urls += ["--concurrency", str(args.concurrency)]
    with Occupancy(servers) as occupancy:
        row = cai_generate(python, args, prompts, work / name, ["--engine", "openai", "--model", SERVED, *urls])
    row["server_cpu_s"] = [round(s.cpu_seconds() - b, 1) for s, b in zip(servers, cpu_before)]
    row["servers"] = [{"cores": s.cores or "all", "requests": c["requests"], "limit_range": c["limit_range"], **o,
                       "limit_changes": c.get("limit_changes", [])}
                      for s, c, o in zip(servers, row.pop("concurrency")["servers"], occupancy.summary())]
    return {"arm": name, **row}


def bench_balance(python: str, model: str, args, prompts: Path, work: Path) -> list[dict]:
    first = Server(python, model, work, "0")
    second = None
    try:
        first.wait()
        one = server_arm("one server, core 0", python, args, prompts, work, [first])
        second = Server(python, model, work, "1")
        second.wait()
        two = server_arm("two servers, cores 0 and 1", python, args, prompts, work, [first, second])
    finally:
        for server in (first, second):
            if server is not None:
                server.stop()
    ratio = round(two["tokens_per_s"] / one["tokens_per_s"], 2)
    return [one, two, {"measure": "balance", "two_over_one": ratio, "target": 1.7, "met": ratio >= 1.7}]


def bench_default(python: str, model: str, args, prompts: Path, work: Path) -> list[dict]:
    server = Server(python, model, work, None)
    try:
        server.wait()
        remote = server_arm("one server, all cores", python, args, prompts, work, [server])
    finally:
        server.stop()
    local = cai_generate(python, args, prompts, work / "in-process", ["--engine", "vllm", "--model", model])
    local = {"arm": "in-process vLLM engine", **local}
    local.pop("concurrency", None)
    ratio = round(remote["tokens_per_s"] / local["tokens_per_s"], 2)
    return [remote, local, {"measure": "default", "server_over_in_process": ratio, "target": 0.9,
                            "met": ratio >= 0.9}]


def print_tables(rows: list[dict], args) -> None:
    print(f"\n{args.prompts} held-out prompts, {args.rounds} round, {args.max_new_tokens} new tokens, greedy, "
          "cai defaults; engine start excluded\n")
    print("| arm | s | tokens/s | cai CPU s | server CPU s | requests per server | limit range per server "
          "| mean running per server | idle share per server |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        if "arm" not in r:
            continue
        servers = r.get("servers", [])
        print(f"| {r['arm']} | {r['seconds']} | {r['tokens_per_s']} | {r['cai_cpu_s']} | "
              f"{', '.join(map(str, r.get('server_cpu_s', []))) or '-'} | "
              f"{', '.join(str(s['requests']) for s in servers) or '-'} | "
              f"{', '.join(f'{lo}-{hi}' for lo, hi in (s['limit_range'] for s in servers)) or '-'} | "
              f"{', '.join(str(s['mean_running']) for s in servers) or '-'} | "
              f"{', '.join(str(s['idle_share']) for s in servers) or '-'} |")
    print("\n| target | measured | goal |\n| --- | --- | --- |")
    for r in rows:
        if r.get("measure") == "balance":
            print(f"| two servers / one server, tokens/s | {r['two_over_one']}x | >= 1.7x |")
        elif r.get("measure") == "default":
            print(f"| one server at the defaults / in-process vLLM, tokens/s | {r['server_over_in_process']}x "
                  "| >= 0.9x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--only", default="balance,default", help="balance, default or both (comma list)")
    parser.add_argument("--concurrency", type=int, help="a fixed limit per server instead of the adaptive one")
    parser.add_argument("--vllm-python", default=str(ROOT / ".venv-vllm" / "bin" / "python"))
    args = parser.parse_args()
    python = args.vllm_python
    if not Path(python).exists():
        print(json.dumps({"skipped": f"no {python}: run `make install-vllm` or pass --vllm-python"}))
        return
    from cai.models import resolve_model

    model = str(resolve_model(None).path)
    work = Path(tempfile.mkdtemp(prefix="cai-bench-servers-"))
    prompts = held_out_prompts(args.prompts, work / "prompts.jsonl")
    rows: list[dict] = []
    for measure in args.only.split(","):
        bench = {"balance": bench_balance, "default": bench_default}[measure]
        for row in bench(python, model, args, prompts, work):
            print(json.dumps(row), flush=True)
            rows.append(row)
    print_tables(rows, args)


if __name__ == "__main__":
    main()
