"""Generation throughput at the lengths users run: both engines, the compute bound, and plain vLLM.

    python bench/generate_throughput.py [--engines transformers,vllm] [--prompts 32] [--rounds 1]
                                        [--max-new-tokens 160,256] [--few-shot 0,all] [--no-plain] [--threads N]
    python bench/generate_throughput.py --overhead [--prompts 32] [--rounds 2] [--max-new-tokens 32]
                                        [--few-shot K] [--skip-single]

Rows (the default): for each engine, each `--max-new-tokens` and each `--few-shot`
setting, one `cai generate` run of the red-team prompts in one batch, greedy,
after one short warm-up run per engine. Engine start is excluded (reported
apart). Each row gives the wall time, completion tokens per second, the peak
RSS of the engine's processes (vLLM's workers included), and its share of the
compute bound: (prompt + completion tokens) x 2 x parameters, plus attention,
per second, over the fp32 matmul FLOP/s this bench measures on this machine
(the best of timed 1024 x 1024 torch matmuls, before and after the rows). For
vLLM the same conversations are then replayed, stage by stage, through a plain
`vllm.LLM.chat` script with the settings cai's engine resolved (dtype, cores,
eager, prefix caching, KV cache), so the two are compared on the same work.

`--threads N` runs every engine, and the matmul bound, on N threads (vLLM unbound,
OMP_NUM_THREADS=N). On a machine that other jobs keep busy, two spin-waiting
threads on two cores lose most of their time to the neighbour (measured here: 62
tokens/s on one thread, 7 to 14 on two, at a load average of 6); one thread each
keeps the engines comparable there. The default is what users run: all cores.

`--overhead` is the older measure: (a) `cai generate` batched, (b) the same run
one prompt at a time, (c) the engine calls of (a) replayed alone.

vLLM pins an older transformers, so it usually lives in its own environment
(`.venv-vllm`, made by `make install-vllm`): when this interpreter lacks vllm,
the vllm rows are measured by `--vllm-python` running this script, in the same
bench run. Prints one JSON line per row and markdown tables for bench/RESULTS.md.
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
sys.path.insert(0, str(ROOT))

from _sampling import Sampler  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")


class Recording:
    """Passes calls to a loaded engine and keeps their inputs and completions; load/close are no-ops so one
    engine serves all runs. Anything else (context, token counts, info) goes to the engine."""

    def __init__(self, engine):
        self.engine, self.calls = engine, []
        self.name = engine.name

    def __getattr__(self, attr):
        return getattr(self.engine, attr)

    def load(self):
        pass

    def close(self):
        pass

    def generate(self, conversations, params):
        out = self.engine.generate(conversations, params)
        self.calls.append(([list(c) for c in conversations], params, out))
        return out


class PeakRSS(Sampler):
    """Peak of the summed RSS of this process and its children (vLLM's engine core and workers), sampled."""

    def __init__(self, every: float = 0.1):
        import psutil

        super().__init__(every)
        self._proc = psutil.Process()
        self.peak = 0

    def sample(self) -> None:
        import psutil

        total = 0
        for p in [self._proc, *self._proc.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        self.peak = max(self.peak, total)

    @property
    def mib(self) -> int:
        return round(self.peak / 2**20)


def model_shape(path: str) -> dict:
    """Parameters (exact, from the safetensors headers) and the sizes the attention FLOPs need."""
    from cai.models import estimate_parameters

    config = json.loads((Path(path) / "config.json").read_text())
    config = config.get("text_config", config)
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    return {"parameters": estimate_parameters(Path(path)), "layers": config["num_hidden_layers"],
            "attention_width": heads * head_dim}


def work_flops(calls, shape: dict) -> float:
    """(prompt + completion tokens) x 2 x parameters, plus attention (4 x width x keys attended, per layer)."""
    total = 0.0
    for _conversations, _params, out in calls:
        for c in out:
            p, n = c.prompt_tokens, c.completion_tokens
            keys = p * (p + 1) / 2 + n * p + n * (n + 1) / 2
            total += (p + n) * 2 * shape["parameters"] + 4 * shape["layers"] * shape["attention_width"] * keys
    return total


def matmul_flops(seconds: float = 3.0, n: int = 1024) -> float:
    """The best fp32 FLOP/s of timed n x n torch matmuls over `seconds`, on all of torch's threads."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        torch.mm(a, b)
        best = max(best, 2 * n**3 / (time.perf_counter() - start))
    return best


def select_prompts(n: int, folder: str) -> str:
    path = os.path.join(folder, "prompts.jsonl")
    with open(ROOT / "data" / "red_team.jsonl") as src, open(path, "w") as dst:
        dst.writelines(src.readlines()[:n])
    return path


def cai_run(recording, prompts_path, out, *, batch_size, rounds, max_new_tokens, engine_name, few_shot):
    import cai.engines.registry as registry
    from cai.generation.config import GenerateConfig
    from cai.generation.job import run

    registry.create_engine = lambda *a, **k: recording
    start = time.perf_counter()
    summary = run(GenerateConfig(constitution=str(ROOT / "constitution" / "hhh.yaml"), prompts=prompts_path, out=out,
                                 rounds=rounds, max_new_tokens=max_new_tokens, few_shot=few_shot, batch_size=batch_size,
                                 engine=engine_name, quiet=True))
    return time.perf_counter() - start, summary


def _few_shot(value: str) -> int | None:
    return None if value == "all" else int(value)


def _row(kind: str, engine: str, dtype: str, new: int, shots: str, wall: float, calls, shape: dict,
         peak_mib: int, args) -> dict:
    prompt_tokens = sum(c.prompt_tokens for _, _, out in calls for c in out)
    completion_tokens = sum(c.completion_tokens for _, _, out in calls for c in out)
    return {"row": kind, "engine": engine, "dtype": dtype, "prompts": args.prompts, "rounds": args.rounds,
            "max_new_tokens": new, "few_shot": shots, "wall_s": round(wall, 1), "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens, "tokens_per_s": round(completion_tokens / wall, 1),
            "flops": work_flops(calls, shape), "peak_rss_mib": peak_mib, "load_avg_1m": round(os.getloadavg()[0], 1)}


def bench_rows(name: str, args) -> list[dict]:
    """The row set for one engine in this interpreter; plain vLLM replays follow the vllm rows."""
    from cai.engines.registry import create_engine
    from cai.models import resolve_model

    model = resolve_model(None)
    shape = model_shape(model.path)
    options = {"batch_size": args.prompts} if name == "transformers" else {}
    engine = create_engine(name, model.path, **options)
    start = time.perf_counter()
    engine.load()
    start_s = time.perf_counter() - start
    info = engine.info().extra
    tmp = tempfile.mkdtemp(prefix="cai-bench-")
    prompts = select_prompts(args.prompts, tmp)
    common = dict(batch_size=args.prompts, rounds=args.rounds, engine_name=name)
    # One short run first, not counted: the first large batches of a process page-fault their buffers in.
    cai_run(Recording(engine), prompts, os.path.join(tmp, "warm"), max_new_tokens=16, few_shot=None, **common)
    rows, replays = [], []
    for new in args.max_new_tokens:
        for shots in args.few_shot:
            recording = Recording(engine)
            with PeakRSS() as peak:
                wall, _ = cai_run(recording, prompts, os.path.join(tmp, f"run-{new}-{shots}"), max_new_tokens=new,
                                  few_shot=_few_shot(shots), **common)
            row = _row("cai", name, info.get("dtype", ""), new, shots, wall, recording.calls, shape, peak.mib, args)
            row["engine_start_s"] = round(start_s, 1)
            print(json.dumps(row), flush=True)
            rows.append(row)
            replays.append((new, shots, recording.calls))
    engine.close()
    if name == "vllm" and not args.no_plain:
        rows += plain_vllm(model.path, info, replays, shape, args)
    return rows


def plain_vllm(model_path: str, info: dict, replays, shape: dict, args) -> list[dict]:
    """The same conversations through a plain `vllm.LLM.chat`, with the settings cai's engine resolved."""
    from vllm import LLM, SamplingParams

    from cai.engines.base import Completion

    for key in ("VLLM_CPU_NUM_OF_RESERVED_CPU", "VLLM_CPU_OMP_THREADS_BIND"):
        if key in info:
            os.environ[key] = info[key]
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    from vllm.platforms import current_platform

    settings = dict(model=model_path, dtype=info["dtype"], enforce_eager=current_platform.is_cpu(),
                    enable_prefix_caching=True, seed=0, max_model_len=info.get("max_model_len"))
    if current_platform.is_cpu():
        settings["kv_cache_memory_bytes"] = 2**30
    llm = LLM(**settings)
    llm.chat([[{"role": "user", "content": "Hello"}]], SamplingParams(max_tokens=4), use_tqdm=False)   # warm-up
    rows = []
    for new, shots, calls in replays:
        if new != min(args.max_new_tokens):
            continue
        done, start = [], time.perf_counter()
        with PeakRSS() as peak:
            for conversations, params, _ in calls:
                outs = llm.chat(conversations, SamplingParams(max_tokens=params.max_new_tokens, temperature=0.0,
                                                              seed=params.seed), use_tqdm=False)
                usage = [Completion("", len(o.prompt_token_ids), len(o.outputs[0].token_ids)) for o in outs]
                done.append((conversations, params, usage))
        row = _row("plain", "vllm.LLM.chat", info["dtype"], new, shots, time.perf_counter() - start, done, shape,
                   peak.mib, args)
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- --overhead: (a), (b), (c)

def bench_overhead(name: str, args) -> dict:
    from cai.engines.base import SamplingParams
    from cai.engines.registry import create_engine
    from cai.models import resolve_model

    model = resolve_model(None)
    options = {"batch_size": args.prompts} if name == "transformers" else {}
    engine = create_engine(name, model.path, **options)
    start = time.perf_counter()
    engine.load()
    load_s = time.perf_counter() - start
    tmp = tempfile.mkdtemp(prefix="cai-bench-")
    sel = select_prompts(args.prompts, tmp)
    engine.generate([[{"role": "user", "content": "Hello"}]], SamplingParams(max_new_tokens=4))   # warm-up
    new, shots = args.max_new_tokens[0], _few_shot(args.few_shot[0])
    common = dict(rounds=args.rounds, max_new_tokens=new, engine_name=name, few_shot=shots)

    def raw(calls) -> tuple[float, int]:
        start, tokens = time.perf_counter(), 0
        for conversations, params, _ in calls:
            tokens += sum(c.completion_tokens for c in engine.generate(conversations, params))
        return time.perf_counter() - start, tokens

    # A first (a) run, not counted, records the calls and warms the allocator; then (c) and (a) alternate twice.
    batched = Recording(engine)
    _, a_sum = cai_run(batched, sel, os.path.join(tmp, "a0"), batch_size=args.prompts, **common)
    c1, raw_tokens = raw(batched.calls)
    a1, _ = cai_run(Recording(engine), sel, os.path.join(tmp, "a1"), batch_size=args.prompts, **common)
    c2, _ = raw(batched.calls)
    a2, _ = cai_run(Recording(engine), sel, os.path.join(tmp, "a2"), batch_size=args.prompts, **common)
    a_s, c_s = (a1 + a2) / 2, (c1 + c2) / 2
    import transformers

    result = {"engine": name, "transformers": transformers.__version__, "prompts": args.prompts, "rounds": args.rounds,
              "max_new_tokens": new, "few_shot": args.few_shot[0], "engine_start_s": round(load_s, 1),
              "a_cai_batched_s": round(a_s, 1), "c_raw_engine_s": round(c_s, 1),
              "a_tokens": a_sum.completion_tokens, "c_tokens": raw_tokens,
              "a_tokens_per_s": round(a_sum.completion_tokens / a_s, 1),
              "overhead_a_vs_c": round(a_s / c_s - 1, 4)}
    if not args.skip_single:
        b_s, b_sum = cai_run(Recording(engine), sel, os.path.join(tmp, "b"), batch_size=1, **common)
        result.update({"b_one_at_a_time_s": round(b_s, 1), "b_tokens": b_sum.completion_tokens,
                       "speedup_a_over_b": round(b_s / a_s, 2)})
    engine.close()
    print(json.dumps(result), flush=True)
    return result


def print_overhead_tables(results: list[dict]) -> None:
    print("| engine | transformers | few-shot | start s | (a) cai batched s | (b) one at a time s | (c) raw engine s | "
          "a/b speedup | overhead a vs c | tokens/s (a) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(f"| {r['engine']} | {r['transformers']} | {r['few_shot']} | {r['engine_start_s']} | "
              f"{r['a_cai_batched_s']} | "
              f"{r.get('b_one_at_a_time_s', '-')} | {r['c_raw_engine_s']} | {r.get('speedup_a_over_b', '-')}x | "
              f"{r['overhead_a_vs_c']:+.1%} | {r['a_tokens_per_s']} |")


# ----------------------------------------------------------------------------- driver

def bench_elsewhere(name: str, args) -> list[dict]:
    """Run this bench for one engine under another interpreter (the one with vllm) and read its JSON lines."""
    if not Path(args.vllm_python).exists():
        sys.exit(f"no vllm here and no {args.vllm_python}: run `make install-vllm` or pass --vllm-python")
    cmd = [args.vllm_python, __file__, "--engines", name, "--json-only", "--prompts", str(args.prompts),
           "--rounds", str(args.rounds), "--max-new-tokens", ",".join(map(str, args.max_new_tokens)),
           "--few-shot", ",".join(args.few_shot)]
    cmd += [flag for flag, on in (("--overhead", args.overhead), ("--skip-single", args.skip_single),
                                  ("--no-plain", args.no_plain)) if on]
    cmd += ["--threads", str(args.threads)] if args.threads else []
    env = dict(os.environ, VLLM_NO_USAGE_STATS="1")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    key = '{"engine"' if args.overhead else '{"row"'
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith(key)]
    if proc.returncode != 0 or not rows:
        sys.exit(f"{name} bench failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return rows


def limit_threads(n: int) -> None:
    """N compute threads here (torch) and in vLLM's workers, which inherit the environment."""
    import torch

    torch.set_num_threads(n)
    os.environ.update({"OMP_NUM_THREADS": str(n), "VLLM_CPU_OMP_THREADS_BIND": "nobind",
                       "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", default="transformers")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=None, help="default: 1 for the rows, 2 with --overhead")
    parser.add_argument("--max-new-tokens", default=None, help="comma-separated; default: 160,256 (32 with --overhead)")
    parser.add_argument("--few-shot", default="0,all", help="comma-separated few-shot settings, a number or all")
    parser.add_argument("--no-plain", action="store_true", help="skip the plain vllm.LLM.chat replay")
    parser.add_argument("--threads", type=int, default=None, help="threads for every engine (default: all cores)")
    parser.add_argument("--overhead", action="store_true", help="the (a)/(b)/(c) overhead measure instead of rows")
    parser.add_argument("--skip-single", action="store_true", help="--overhead: skip (b), the slow one-at-a-time run")
    parser.add_argument("--vllm-python", default=str(ROOT / ".venv-vllm" / "bin" / "python"),
                        help="interpreter with vllm installed, used when this one lacks it")
    parser.add_argument("--json-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.rounds = args.rounds if args.rounds is not None else (2 if args.overhead else 1)
    args.max_new_tokens = [int(x) for x in (args.max_new_tokens or ("32" if args.overhead else "160,256")).split(",")]
    args.few_shot = args.few_shot.split(",")
    if args.threads:
        limit_threads(args.threads)
    def here(name: str) -> bool:
        return not (name == "vllm" and importlib.util.find_spec("vllm") is None)
    if args.overhead:
        results = []
        for name in args.engines.split(","):
            results += [bench_overhead(name, args)] if here(name) else bench_elsewhere(name, args)
        if not args.json_only:
            print_overhead_tables(results)
        return
    bound_before = None if args.json_only else matmul_flops()
    rows = []
    for name in args.engines.split(","):
        rows += bench_rows(name, args) if here(name) else bench_elsewhere(name, args)
    if args.json_only:
        return
    bound = max(bound_before, matmul_flops())
    print_row_tables(rows, bound, bound_before, args)


def _share(row: dict, bound: float) -> float:
    return row["flops"] / row["wall_s"] / bound


def print_row_tables(rows: list[dict], bound: float, bound_before: float, args) -> None:
    """Markdown tables on stdout: bench/run_all.py copies them into bench/RESULTS.md."""
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores; {time.strftime('%Y-%m-%d %H:%M %Z')}; "
          f"fp32 matmul bound {bound / 1e9:.1f} GFLOP/s (best of before {bound_before / 1e9:.1f} and after the rows); "
          f"{args.prompts} prompts x {args.rounds} round, one batch, greedy; "
          f"{f'{args.threads} thread(s) per engine' if args.threads else 'all cores'}")
    print("| engine | dtype | new tokens | few-shot | wall s | prompt tokens | completion tokens | tokens/s | "
          "share of the compute bound | peak RSS MiB | load avg |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        label = r["engine"] if r["row"] == "cai" else f"plain {r['engine']}"
        print(f"| {label} | {r['dtype']} | {r['max_new_tokens']} | {r['few_shot']} | {r['wall_s']} | "
              f"{r['prompt_tokens']} | {r['completion_tokens']} | {r['tokens_per_s']} | {_share(r, bound):.1%} | "
              f"{r['peak_rss_mib']} | {r['load_avg_1m']} |")
    cai = {(r["engine"], r["max_new_tokens"], r["few_shot"]): r for r in rows if r["row"] == "cai"}
    plain = {(r["max_new_tokens"], r["few_shot"]): r for r in rows if r["row"] == "plain"}
    target_new = 160 if 160 in args.max_new_tokens else min(args.max_new_tokens)
    print("\n| target | measured | goal | status |")
    print("| --- | --- | --- | --- |")
    for shots in args.few_shot:
        tf, vl = cai.get(("transformers", target_new, shots)), cai.get(("vllm", target_new, shots))
        if tf and vl:
            ratio = vl["tokens_per_s"] / tf["tokens_per_s"]
            print(f"| vLLM / transformers tokens/s, {target_new} new tokens, few-shot {shots} | {ratio:.2f}x "
                  f"({vl['tokens_per_s']} vs {tf['tokens_per_s']}) | >= 2x | {'met' if ratio >= 2 else 'not met'} |")
        pl = plain.get((target_new, shots))
        if vl and pl:
            ratio = vl["tokens_per_s"] / pl["tokens_per_s"]
            print(f"| cai's vLLM engine / plain vllm.LLM.chat, {target_new} new tokens, few-shot {shots} | "
                  f"{ratio:.2f}x ({vl['tokens_per_s']} vs {pl['tokens_per_s']}) | >= 0.9x | "
                  f"{'met' if ratio >= 0.9 else 'not met'} |")
        if tf:
            share = _share(tf, bound)
            print(f"| transformers at batch {args.prompts}: share of the compute bound, {target_new} new tokens, "
                  f"few-shot {shots} | {share:.1%} | >= 50% | {'met' if share >= 0.5 else 'not met'} |")


if __name__ == "__main__":
    main()
