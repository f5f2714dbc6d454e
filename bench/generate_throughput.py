"""Generation throughput: cai batched vs one prompt at a time vs the raw engine calls.

    python bench/generate_throughput.py [--prompts 32] [--rounds 2] [--max-new-tokens 32] [--few-shot K]
                                        [--engines transformers,vllm] [--skip-single]

(a) `cai generate` with all prompts in one batch, (b) the same run one prompt at
a time through the same engine, (c) the engine calls of (a) replayed alone with
the same inputs. One (a) run warms up first and is not counted. Engine start is timed separately and excluded from (a)-(c).
vLLM pins an older transformers, so it usually lives in its own environment
(`.venv-vllm`, made by `make install-vllm`): when this interpreter lacks vllm,
the vllm engine is measured by `--vllm-python` running this script, each
engine with its own best transformers, in the same bench run.
Few-shot dialogues as `cai generate` uses them (all of hhh.yaml's) unless
`--few-shot K`. Prints one JSON line per engine and a markdown table for bench/RESULTS.md.
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
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

os.environ.setdefault("HF_HUB_OFFLINE", "1")


class Recording:
    """Passes calls to a loaded engine and keeps their inputs; load/close are no-ops so one engine serves all runs."""

    def __init__(self, engine):
        self.engine, self.calls = engine, []
        self.name = engine.name

    def load(self):
        pass

    def close(self):
        pass

    def generate(self, conversations, params):
        self.calls.append(([list(c) for c in conversations], params))
        return self.engine.generate(conversations, params)


def cai_run(recording, prompts_path, out, *, batch_size, rounds, max_new_tokens, engine_name, few_shot):
    import cai.engines.registry as registry
    from cai.generation.job import GenerateConfig, run

    registry.create_engine = lambda *a, **k: recording
    start = time.perf_counter()
    summary = run(GenerateConfig(constitution="constitution/hhh.yaml", prompts=prompts_path, out=out,
                                 rounds=rounds, max_new_tokens=max_new_tokens, few_shot=few_shot, batch_size=batch_size,
                                 engine=engine_name), quiet=True)
    return time.perf_counter() - start, summary


def bench_engine(name: str, args) -> dict:
    from cai.engines.registry import create_engine
    from cai.models import resolve_model

    model = resolve_model(None)
    options = {"batch_size": args.prompts} if name == "transformers" else {}
    engine = create_engine(name, model.path, **options)
    start = time.perf_counter()
    engine.load()
    load_s = time.perf_counter() - start
    tmp = tempfile.mkdtemp(prefix="cai-bench-")
    prompts_path = "data/red_team.jsonl"
    sel = os.path.join(tmp, "prompts.jsonl")
    with open(prompts_path) as src, open(sel, "w") as dst:
        dst.writelines(src.readlines()[: args.prompts])

    from cai.engines.base import SamplingParams

    engine.generate([[{"role": "user", "content": "Hello"}]], SamplingParams(max_new_tokens=4))   # warm-up

    common = dict(rounds=args.rounds, max_new_tokens=args.max_new_tokens, engine_name=name, few_shot=args.few_shot)

    def raw(calls) -> tuple[float, int]:
        start, tokens = time.perf_counter(), 0
        for conversations, params in calls:
            tokens += sum(c.completion_tokens for c in engine.generate(conversations, params))
        return time.perf_counter() - start, tokens

    # A first (a) run, not counted, records the calls and warms the allocator (the first large batches
    # page-fault their memory in); then (c) and (a) alternate twice so neither gains from going second.
    batched = Recording(engine)
    _, a_sum = cai_run(batched, sel, os.path.join(tmp, "a0"), batch_size=args.prompts, **common)
    c1, raw_tokens = raw(batched.calls)
    a1, _ = cai_run(Recording(engine), sel, os.path.join(tmp, "a1"), batch_size=args.prompts, **common)
    c2, _ = raw(batched.calls)
    a2, _ = cai_run(Recording(engine), sel, os.path.join(tmp, "a2"), batch_size=args.prompts, **common)
    a_s, c_s = (a1 + a2) / 2, (c1 + c2) / 2
    import transformers

    result = {"engine": name, "transformers": transformers.__version__, "prompts": args.prompts, "rounds": args.rounds, "max_new_tokens": args.max_new_tokens,
              "few_shot": args.few_shot,
              "engine_start_s": round(load_s, 1), "a_cai_batched_s": round(a_s, 1), "c_raw_engine_s": round(c_s, 1),
              "a_tokens": a_sum["completion tokens"], "c_tokens": raw_tokens,
              "a_tokens_per_s": round(a_sum["completion tokens"] / a_s, 1),
              "overhead_a_vs_c": round(a_s / c_s - 1, 4)}
    if not args.skip_single:
        single = Recording(engine)
        b_s, b_sum = cai_run(single, sel, os.path.join(tmp, "b"), batch_size=1, **common)
        result.update({"b_one_at_a_time_s": round(b_s, 1), "b_tokens": b_sum["completion tokens"],
                       "speedup_a_over_b": round(b_s / a_s, 2)})
    engine.close()
    return result


def bench_elsewhere(name: str, args) -> dict:
    """Run this bench for one engine under another interpreter (the one with vllm) and read its JSON line."""
    if not Path(args.vllm_python).exists():
        sys.exit(f"no vllm here and no {args.vllm_python}: run `make install-vllm` or pass --vllm-python")
    cmd = [args.vllm_python, __file__, "--engines", name, "--json-only", "--prompts", str(args.prompts),
           "--rounds", str(args.rounds), "--max-new-tokens", str(args.max_new_tokens)]
    cmd += ["--few-shot", str(args.few_shot)] if args.few_shot is not None else []
    cmd += ["--skip-single"] if args.skip_single else []
    env = dict(os.environ, VLLM_NO_USAGE_STATS="1")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    rows = [line for line in proc.stdout.splitlines() if line.startswith('{"engine"')]
    if proc.returncode != 0 or not rows:
        sys.exit(f"{name} bench failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(rows[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--few-shot", type=int, default=None,
                        help="few-shot dialogues leading each chat (default: all, as `cai generate`)")
    parser.add_argument("--engines", default="transformers")
    parser.add_argument("--skip-single", action="store_true", help="skip (b), the slow one-at-a-time run")
    parser.add_argument("--vllm-python", default=str(ROOT / ".venv-vllm" / "bin" / "python"),
                        help="interpreter with vllm installed, used when this one lacks it")
    parser.add_argument("--json-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    results = [bench_elsewhere(name, args) if name == "vllm" and importlib.util.find_spec("vllm") is None
               else bench_engine(name, args) for name in args.engines.split(",")]
    for r in results:
        print(json.dumps(r))
    if args.json_only:
        return
    print_tables(results, args.prompts)


def print_tables(results: list[dict], prompts: int) -> None:
    """Markdown tables on stdout: bench/run_all.py copies them into bench/RESULTS.md."""
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores; {time.strftime('%Y-%m-%d')}")
    print("| engine | transformers | few-shot | start s | (a) cai batched s | (b) one at a time s | (c) raw engine s | "
          "a/b speedup | overhead a vs c | tokens/s (a) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        shots = "all" if r["few_shot"] is None else r["few_shot"]
        print(f"| {r['engine']} | {r['transformers']} | {shots} | {r['engine_start_s']} | {r['a_cai_batched_s']} | "
              f"{r.get('b_one_at_a_time_s', '-')} | {r['c_raw_engine_s']} | {r.get('speedup_a_over_b', '-')}x | "
              f"{r['overhead_a_vs_c']:+.1%} | {r['a_tokens_per_s']} |")
    by_name = {r["engine"]: r for r in results}
    base = by_name.get("transformers")
    print("\n| target | measured | goal |")
    print("| --- | --- | --- |")
    if base and "speedup_a_over_b" in base:
        print(f"| transformers: batched over one at a time (a/b) | {base['speedup_a_over_b']:.2f}x | >= 4x |")
    if base:
        print(f"| transformers: cai over the raw engine calls (a vs c) | {base['overhead_a_vs_c']:+.1%} | <= +5% |")
    if base and "vllm" in by_name:
        ratio = by_name["vllm"]["a_tokens_per_s"] / base["a_tokens_per_s"]
        print(f"| vllm / transformers tokens/s at {prompts} prompts, engine start excluded | {ratio:.2f}x | >= 1.4x |")

if __name__ == "__main__":
    main()
