"""Rerun every benchmark of the project and gather the figures in bench/RESULTS.md (`make bench`).

    .venv/bin/python bench/run_all.py [--only NAME,...] [--skip NAME,...] [--quick] [--dry-run] [--no-write]

Each benchmark runs as its own process (`python bench/<script>.py ARGS`) with a
time limit; its JSON lines and markdown tables are kept. Scripts in bench/ that
this file does not list are discovered and run with no arguments, so a new
benchmark joins `make bench` by being added to the folder. The built-in `eval`
benchmark (this file, `--internal eval`) times `cai eval` and `cai report`.

The figures go into one section of bench/RESULTS.md between the markers
`<!-- bench/run_all.py: begin -->` and `<!-- bench/run_all.py: end -->`:
replaced on each run, appended at the end the first time. Nothing else in the
file is touched. The raw results (last run of each benchmark) are kept in
runs/bench/results.json, saved after every benchmark: an interrupted run keeps
what it measured, and `--only NAME` reruns one benchmark and keeps the others.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "RESULTS.md"
RAW = ROOT / "runs" / "bench" / "results.json"
BEGIN = "<!-- bench/run_all.py: begin -->"
END = "<!-- bench/run_all.py: end -->"


@dataclass
class Bench:
    name: str
    script: str                 # file in bench/, or "run_all.py" for the built-in eval benchmark
    args: list[str] = field(default_factory=list)
    quick_args: list[str] | None = None
    what: str = ""
    timeout: int = 3600


# vLLM is measured when it is installed here or in .venv-vllm (`make install-vllm`).
_HAS_VLLM = (ROOT / ".venv-vllm" / "bin" / "python").exists() or importlib.util.find_spec("vllm") is not None
_ENGINES = ["--engines", "transformers,vllm" if _HAS_VLLM else "transformers"]

BENCHES = [
    Bench("generate", "generate_throughput.py", _ENGINES,
          ["--prompts", "4", "--max-new-tokens", "16", "--few-shot", "0", "--no-plain", *_ENGINES],
          "cai generate at 160 and 256 new tokens, both engines, vs plain vLLM and the fp32 compute bound "
          "(embedded SmolLM2)", timeout=7200),
    Bench("openai-servers", "openai_servers.py", [], ["--prompts", "8", "--max-new-tokens", "16"],
          "cai generate --engine openai at the defaults: two vLLM servers pinned to a core each vs one "
          "(target >= 1.7x), one server on all cores vs the in-process vLLM engine (target >= 0.9x)", timeout=5400),
    Bench("generate-memory", "generate_memory.py", [], ["--small", "50", "--large", "200"],
          "cai generate: peak RSS for a small vs a large prompt file (records stream to disk)"),
    Bench("ray", "ray_scaling.py", [], ["--prompts", "8", "--max-new-tokens", "16", "--driver-batches", "40"],
          "cai generate --ray: 2 replicas x 1 thread vs 1 process x 2 threads (target: overhead <= 10%); the "
          "driver's write rate and per-batch transfer sizes, for the 64-GPU estimate (embedded SmolLM2)"),
    Bench("score", "score_throughput.py", [], ["--n", "200"], "toxicity scorer throughput (toxic-bilstm)"),
    Bench("quality-rules", "quality_rules.py", [], ["--pairs", "1000", "--repeats", "1"],
          "pair quality rules vs the toxicity scorer on the same 10,000 pairs (target: rules under 10%)"),
    Bench("filter-precision", "filter_precision.py", [], ["--hh-limit", "300"],
          "quality rules and safety filters: how often each fires on the hand-written keep-set, HH-RLHF and failures "
          "(targets: keep-set dropped <= 3%, every failure dropped)"),
    Bench("toxicity-spread", "toxicity_spread.py", [], [],
          "the toxicity classifier's spread on paraphrases and harm-naming text: the safety rule's margin"),
    Bench("train-dpo", "train_dpo.py", [], ["--repeats", "1", "--steps", "4", "--memory-steps", "1",
                                               "--memory-repeats", "1", "--memory-models", "135m"],
          "cai train dpo vs TRL's DPO script; LoRA DPO memory with vs without a reference copy", timeout=7200),
    Bench("train-grpo", "train_grpo.py", [], ["--repeats", "1", "--steps", "4", "--tokens", "32",
                                               "--judge-completions", "4", "--judge-repeats", "1",
                                               "--plumbing-steps", "2", "--eval-limit", "2"],
          "cai train grpo vs TRL's GRPO script; judge reward cost vs generation; 30-step plumbing run + cai eval "
          "(embedded SmolLM2)", timeout=14400),
    Bench("judge", "judge_throughput.py", [], ["--pairs", "16", "--rounds", "1"],
          "AI-feedback judge: pairs per second over vLLM's OpenAI server vs the in-process vLLM engine, same pairs "
          "and model (target >= 0.8x); label agreement of the two and of the server's top_logprobs reading",
          timeout=3600),
    Bench("alignment", "alignment.py", [], ["--quick", "--no-write", "--work", "runs/bench/alignment-quick"],
          "does training move the model? reward model, DPO and GRPO on HH-RLHF harmless-base, each evaluated "
          "against its start model on held-out prompts (embedded SmolLM2, recipes/small)", timeout=4 * 3600),
    Bench("eval", "run_all.py", ["--internal", "eval"], ["--internal", "eval", "--quick"],
          "cai eval (adapter-free model vs baseline, judge on) and cai report on the embedded SmolLM2"),
]


def discover() -> list[Bench]:
    """The listed benchmarks, then any other bench/*.py (run with no arguments)."""
    known = {b.script for b in BENCHES}
    extra = [Bench(p.stem.replace("_", "-"), p.name, what=f"{p.name} (discovered; default arguments)")
             for p in sorted(BENCH.glob("*.py")) if p.name not in known and not p.name.startswith("_")]
    return BENCHES + extra


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    versions = {}
    for name in ("torch", "transformers", "trl", "peft"):
        try:
            from importlib.metadata import version

            versions[name] = version(name)
        except Exception:
            pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": mem, "os": platform.platform(terse=True),
            "python": platform.python_version(), **versions}


def run_bench(bench: Bench, quick: bool, timeout: int | None) -> dict:
    args = (bench.quick_args if quick and bench.quick_args is not None else bench.args)
    cmd = [sys.executable, str(BENCH / bench.script), *args]
    shown = " ".join(["python", f"bench/{bench.script}", *args])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    print(f"[bench] {bench.name}: {shown}", file=sys.stderr, flush=True)
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=timeout or bench.timeout)
        out, err, code = proc.stdout, proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err, code = f"timed out after {timeout or bench.timeout} s", None
    seconds = time.perf_counter() - start
    results, tables, table = [], [], []
    for line in out.splitlines():
        stripped = line.strip()
        if stripped.startswith("{") and stripped.endswith("}"):
            try:
                results.append(json.loads(stripped))
            except json.JSONDecodeError:
                pass
        if stripped.startswith("|"):
            table.append(stripped)
        elif table:
            tables.append(table)
            table = []
    if table:
        tables.append(table)
    status = "ok" if code == 0 else ("timeout" if code is None else f"exit {code}")
    print(f"[bench] {bench.name}: {status} in {seconds:.0f} s", file=sys.stderr, flush=True)
    return {"name": bench.name, "what": bench.what, "command": shown, "status": status, "quick": quick,
            "date": time.strftime("%Y-%m-%d %H:%M %Z"), "load_avg_1m": round(os.getloadavg()[0], 1),
            "seconds": round(seconds, 1), "results": results, "tables": tables,
            "error": None if code == 0 else (err.strip().splitlines() or [""])[-1][:300]}


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))[:80]
    return str(value).replace("|", "\\|")


def section(runs: list[dict], info: dict) -> str:
    lines = [BEGIN, "", "## All benchmarks (`make bench`, bench/run_all.py)", "",
             "Each benchmark below was last run on the date shown with it; the 1-minute load average at its end "
             "says how busy the machine was (other jobs share this 2-core machine, so wall times are noisy; "
             "the ratio figures are measured with interleaved runs where the script supports it).", "",
             f"- machine: {info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB RAM, {info['os']}, "
             + ("a CUDA GPU" if _has_gpu() else "no GPU"),
             "- software: " + ", ".join(f"{k} {v}" for k, v in info.items() if k in ("python", "torch", "transformers",
                                                                                  "trl", "peft")),
             "- rerun: `make bench` (or `.venv/bin/python bench/run_all.py --only NAME`); raw output in "
             "`runs/bench/results.json`",
             "", "| benchmark | command | date | status | wall s | load avg |", "| --- | --- | --- | --- | --- | --- |"]
    for r in runs:
        quick = " (quick)" if r.get("quick") else ""
        lines.append(f"| {r['name']}{quick} | `{r['command']}` | {r.get('date', '?')} | {r['status']} | "
                     f"{r['seconds']} | {'-' if r.get('load_avg_1m') is None else r['load_avg_1m']} |")
    for r in runs:
        lines += ["", f"### {r['name']}", "", r["what"], "",
                  f"`{r['command']}` on {r.get('date', '?')}: {r['status']}, {r['seconds']} s", ""]
        if r["error"]:
            lines += [f"error: `{r['error']}`", ""]
        for table in r["tables"]:
            lines += table + [""]
        # a script's own markdown tables are its summary; otherwise show its JSON result lines
        # (lines with an "event" key are progress logs of the commands it ran, not results)
        for row in ([] if r["tables"] else [x for x in r["results"] if "event" not in x]):
            keys = list(row)
            lines += ["| " + " | ".join(keys) + " |", "|" + " --- |" * len(keys),
                      "| " + " | ".join(_cell(row[k]) for k in keys) + " |", ""]
    lines.append(END)
    return "\n".join(lines) + "\n"


def _has_gpu() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:
        return False


def write_section(text: str) -> None:
    """Replace our marked section of RESULTS.md, or append it; the rest of the file stays as it is."""
    current = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else "# Benchmarks\n"
    if BEGIN in current and END in current:
        head, rest = current.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        new = head + text.rstrip("\n") + tail
    else:
        new = current.rstrip("\n") + "\n\n" + text
    tmp = RESULTS.with_name(f".{RESULTS.name}.tmp")
    tmp.write_text(new, encoding="utf-8")
    os.replace(tmp, RESULTS)


# ----------------------------------------------------------------------------- built-in: cai eval + cai report

def bench_eval(quick: bool) -> None:
    """Time `cai eval` (model vs baseline, judge on) against the raw generation it contains, and `cai report`.

    Raw generation and eval alternate (raw, eval, raw, eval, ...) so background load hits both alike; the
    figures are medians. The 1-minute load average before and after is printed with them.
    """
    import statistics

    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from typer.testing import CliRunner

    from cai.cli.main import app
    from cai.engines.base import SamplingParams
    from cai.engines.transformers import TransformersEngine
    from cai.generation.prompt_files import load_prompts
    from cai.models import resolve_model

    n, tokens, repeats = (3, 16, 1) if quick else (8, 48, 2)
    model = resolve_model(None)
    work = Path(tempfile.mkdtemp(prefix="cai-bench-eval-"))
    runner = CliRunner()
    prompts = [r.prompt for p in ("data/eval_red_team.jsonl", "data/eval_helpful.jsonl") for r in load_prompts(p)[:n]]
    chats = [[{"role": "user", "content": p}] for p in prompts]
    load_before = os.getloadavg()[0]
    raw, evals, gens, judge, classifiers = [], [], [], [], []
    for k in range(repeats):
        engine = TransformersEngine(model.path, batch_size=16)
        engine.load()
        start = time.perf_counter()
        for _ in range(2):                                  # the model's and the baseline's answers
            engine.generate(chats, SamplingParams(max_new_tokens=tokens))
        raw.append(time.perf_counter() - start)
        engine.close()
        out = work / f"run{k}" / "eval"
        start = time.perf_counter()
        result = runner.invoke(app, ["eval", "--prompts", "data/eval_red_team.jsonl", "--helpful-prompts",
                                     "data/eval_helpful.jsonl", "--limit", str(n), "--max-new-tokens", str(tokens),
                                     "--baseline", model.path, "--quiet", "--out", str(out)])
        evals.append(time.perf_counter() - start)
        if result.exit_code not in (0, 1):
            raise SystemExit(f"cai eval failed: {result.output[-500:]}")
        timing = json.loads((out / "metrics.json").read_text())["timing"]
        gens.append(timing["generate_model_s"] + timing.get("generate_baseline_s", 0))
        judge.append(timing.get("judge_s", 0.0))
        classifiers.append(timing.get("classifiers_s", 0.0))
    start = time.perf_counter()
    report = runner.invoke(app, ["report", str(work / "run0")])
    report_s = time.perf_counter() - start
    if report.exit_code != 0:
        raise SystemExit(f"cai report failed: {report.output[-500:]}")
    med = statistics.median
    print(json.dumps({
        "prompts": len(prompts), "max_new_tokens": tokens, "repeats": repeats,
        "eval_wall_s": round(med(evals), 1), "eval_generate_s": round(med(gens), 1),
        "raw_generate_s": round(med(raw), 1), "judge_s": round(med(judge), 1),
        "classifiers_s": round(med(classifiers), 2),
        "eval_generate_vs_raw": round(med(gens) / med(raw), 2),
        "eval_wall_vs_raw_generate": round(med(evals) / med(raw), 2),
        "report_s": round(report_s, 1), "report_kib": round(Path(report.output.strip()).stat().st_size / 1024),
        "load_avg_1m": [round(load_before, 1), round(os.getloadavg()[0], 1)],
    }))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated benchmark names")
    parser.add_argument("--skip", help="comma-separated benchmark names")
    parser.add_argument("--quick", action="store_true", help="small inputs: checks the plumbing, not for figures")
    parser.add_argument("--dry-run", action="store_true", help="list the commands, run nothing")
    parser.add_argument("--no-write", action="store_true", help="print the section instead of writing RESULTS.md")
    parser.add_argument("--timeout", type=int, default=None, help="seconds per benchmark (default: its own)")
    parser.add_argument("--render", action="store_true", help="rewrite the RESULTS.md section from the stored "
                                                              "results (runs/bench/results.json), run nothing")
    parser.add_argument("--internal", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.internal == "eval":
        bench_eval(args.quick)
        return
    benches = discover()
    names = [b.name for b in benches]
    for flag in (args.only, args.skip):
        unknown = [n for n in (flag or "").split(",") if n and n not in names]
        if unknown:
            raise SystemExit(f"unknown benchmark {unknown[0]!r}; known: {', '.join(names)}")
    if args.only:
        benches = [b for b in benches if b.name in args.only.split(",")]
    if args.skip:
        benches = [b for b in benches if b.name not in args.skip.split(",")]
    if args.dry_run:
        for b in benches:
            a = b.quick_args if args.quick and b.quick_args is not None else b.args
            print(" ".join(["python", f"bench/{b.script}", *a]))
        return
    info = machine()
    stored = load_raw()
    if args.render:
        write_section(section(_ordered(stored), info))
        print(f"wrote {RESULTS.relative_to(ROOT)} from {RAW.relative_to(ROOT)}")
        return
    failed = False
    for bench in benches:
        run = run_bench(bench, args.quick, args.timeout)
        failed |= run["status"] != "ok"
        if args.no_write:
            print(section([run], info))
            continue
        # saved after every benchmark, so an interrupted `make bench` keeps what it measured
        stored[bench.name] = run
        save_raw(stored, info)
        write_section(section(_ordered(stored), info))
    if not args.no_write:
        print(f"wrote {RESULTS.relative_to(ROOT)} (section of bench/run_all.py) and {RAW.relative_to(ROOT)}")
    if failed:
        raise SystemExit(1)


def _ordered(stored: dict) -> list[dict]:
    order = [b.name for b in discover()]
    return sorted(stored.values(), key=lambda r: order.index(r["name"]) if r["name"] in order else len(order))


def load_raw() -> dict:
    """Last result per benchmark from earlier runs (a benchmark rerun with --only replaces only its own)."""
    try:
        data = json.loads(RAW.read_text())
        runs = data.get("runs")
        return dict(runs) if isinstance(runs, dict) else {}
    except (OSError, json.JSONDecodeError, AttributeError):
        return {}


def save_raw(runs: dict, info: dict) -> None:
    RAW.parent.mkdir(parents=True, exist_ok=True)
    tmp = RAW.with_name(f".{RAW.name}.tmp")
    tmp.write_text(json.dumps({"machine": info, "runs": runs}, indent=1) + "\n")
    os.replace(tmp, RAW)


if __name__ == "__main__":
    main()
