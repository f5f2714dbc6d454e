"""Judge throughput: pairs per second over vLLM's OpenAI-compatible server against the in-process vLLM engine.

    python bench/judge_throughput.py [--pairs 64] [--rounds 2] [--concurrency 8] [--vllm-python PATH]

Same pairs, same model, same run. The pairs are real: from the HH-RLHF
harmless-base test split shipped in data/hh-rlhf (last human turn, the two final
answers, each up to 600 characters), `--pairs` new ones each round. Each is judged
as `cai data pairs --strategy ai-feedback` judges it (`cai.judging.labels.preference_labels`:
a principle of hhh.yaml drawn per pair, both option orders, batches of
`cai.preferences.job.JUDGE_BATCH` pairs), by the embedded SmolLM2 on two engines
started once with the same settings (dtype, eager, prefix caching, 1 GiB KV cache,
every core):

- server: `python -m vllm.entrypoints.openai.api_server`, read by cai's `openai`
  engine (exact label token ids, one `max_tokens: 1` request per question,
  `--concurrency` in flight);
- in-process: cai's `vllm` engine (the same `logprob_token_ids`, through `vllm.LLM`).

Engine start is excluded. After a warm-up, each round judges new pairs on both
engines, first on one then on the other, so neither meets a prompt already in its
prefix cache; the ratio is of the total times. The server's `top_logprobs` reading is
timed once more on new pairs. The labels are compared: largest difference, and
verdicts (the side of 0.5, near-ties apart) that agree; for `top_logprobs`, on the
pairs where no label fell outside the top 20. Target: server >= 0.8x in-process.

vLLM pins an older transformers, so it usually lives in `.venv-vllm`: when this
interpreter lacks vllm the script reruns itself there. Prints JSON lines and
markdown tables for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(ROOT / "tests"))
from support.hh import hh_pairs  # noqa: E402 - the pairs and the server of the judge tests
from support.vllm_server import openai_server  # noqa: E402


def judge_all(engine, pairs) -> tuple[list[dict], float]:
    """(each pair's judgement, seconds) with the pairs judged as `cai data pairs --strategy ai-feedback` does."""
    from cai.constitution import load_constitution
    from cai.generation.templates import Templates
    from cai.judging.labels import preference_labels
    from cai.preferences.job import JUDGE_BATCH

    constitution = load_constitution(ROOT / "constitution" / "hhh.yaml")
    templates = Templates()
    labels, start = [], time.perf_counter()
    for i in range(0, len(pairs), JUDGE_BATCH):
        batch = pairs[i:i + JUDGE_BATCH]
        keys = [f"hh:{i + k}" for k in range(len(batch))]
        judged = preference_labels(engine, templates, constitution, batch, keys=keys)
        labels += judged
    return labels, time.perf_counter() - start


TIE = 1e-3      # labels this close to 0.5 are ties: a 135M judge puts many there, where float noise flips a ">"


def verdict(label: float) -> int:
    return 0 if abs(label - 0.5) < TIE else (1 if label > 0.5 else -1)


def compare(a: list[dict], b: list[dict]) -> dict:
    """How close two readings' labels are, over the pairs where neither floored a label."""
    both = [(x["label"], y["label"]) for x, y in zip(a, b) if not x["floored"] and not y["floored"]]
    return {"pairs_compared": len(both), "floored": len(a) - len(both),
            "max_label_difference": round(max(abs(x - y) for x, y in both), 5) if both else None,
            "verdicts_agree": round(sum(verdict(x) == verdict(y) for x, y in both) / len(both), 4) if both else None}


def run(args) -> None:
    from cai.engines.vllm import _read_cpu_flags, cpu_dtype, cpu_env_defaults
    from cai.models import resolve_model

    found = hh_pairs(8 + (args.rounds + 1) * args.pairs)
    if len(found) < 8 + (args.rounds + 1) * args.pairs:
        raise SystemExit(f"{len(found)} usable pairs in data/hh-rlhf; ask for fewer")
    warm, rest = found[:8], found[8:]
    slices = [rest[k * args.pairs:(k + 1) * args.pairs] for k in range(args.rounds + 1)]
    model = resolve_model(None).path
    dtype = cpu_dtype(_read_cpu_flags())
    os.environ.update(cpu_env_defaults(os.environ))           # every core computes, as in cai's vllm engine
    cache = Path(tempfile.mkdtemp(prefix="cai-judge-bench-"))
    started = time.perf_counter()
    with openai_server(model, cache, "--dtype", dtype, name="judge", max_model_len=2048, timeout=900) as url:
        server_start = time.perf_counter() - started
        result = measure(args, url, model, warm, slices)
    report(args, dtype, result, server_start)


def measure(args, url: str, model: str, warm, slices) -> dict:
    """Round k judges slice k on both engines (order alternating), so every timed pass meets pairs new to both
    prefix caches; then the last slice through `top_logprobs`, timed, and through exact ids, for agreement."""
    from cai.engines.openai_server import OpenAIEngine
    from cai.engines.vllm import VLLMEngine

    local = VLLMEngine(model, max_model_len=2048)
    try:
        started = time.perf_counter()
        local.load()
        out = {"local_start": time.perf_counter() - started, "times": {"server": [], "local": []},
               "labels": {"server": [], "local": []}}
        server = OpenAIEngine("judge", base_url=url, concurrency=args.concurrency)
        server.load()
        out["mode"] = server.label_mode(["A", "B"])
        judge_all(server, warm)
        judge_all(local, warm)
        for k, pairs in enumerate(slices[:-1]):
            order = (("server", server), ("local", local))
            for name, engine in order if k % 2 == 0 else order[::-1]:
                labels, seconds = judge_all(engine, pairs)
                out["labels"][name] += labels
                out["times"][name].append(seconds)
        top = OpenAIEngine("judge", base_url=url, concurrency=args.concurrency)
        top.label_exact_ids = False                                          # the same server, top_logprobs only
        out["labels"]["top"], out["top_seconds"] = judge_all(top, slices[-1])
        out["labels"]["exact"], _ = judge_all(server, slices[-1])
        server.close()
        top.close()
    finally:
        local.close()
    return out


def report(args, dtype, result: dict, server_start: float) -> None:
    times, labels, n = result["times"], result["labels"], args.pairs
    server_s, local_s = sum(times["server"]), sum(times["local"])
    rows = [
        {"engine": "server (openai)", "mode": result["mode"].describe(), "start_s": round(server_start, 1),
         "seconds": [round(t, 2) for t in times["server"]], "pairs_per_s": round(n * args.rounds / server_s, 2)},
        {"engine": "server (openai)", "mode": "top_logprobs 20", "start_s": round(server_start, 1),
         "seconds": [round(result["top_seconds"], 2)], "pairs_per_s": round(n / result["top_seconds"], 2)},
        {"engine": "in-process (vllm)", "mode": "exact token ids (logprob_token_ids)",
         "start_s": round(result["local_start"], 1), "seconds": [round(t, 2) for t in times["local"]],
         "pairs_per_s": round(n * args.rounds / local_s, 2)},
    ]
    ratio = round(local_s / server_s, 3)
    agreement = {"server_vs_local": compare(labels["server"], labels["local"]),
                 "top_vs_exact": compare(labels["top"], labels["exact"])}
    spread = [x["label"] for x in labels["local"]]
    for row in rows:
        print(json.dumps(row))
    print(json.dumps({"pairs_per_round": n, "rounds": args.rounds, "concurrency": args.concurrency, "dtype": dtype,
                      "server_over_in_process": ratio, "agreement": agreement,
                      "label_range": [round(min(spread), 4), round(max(spread), 4)],
                      "load_avg_1m": round(os.getloadavg()[0], 1)}))
    print(f"\n{n} new HH-RLHF harmless-base test pairs a round, {args.rounds} rounds (engine order alternating), "
          f"embedded SmolLM2-135M, {dtype}, both option orders (2 questions a pair), concurrency {args.concurrency}\n")
    print("| engine | label read | start s | judge s per round | pairs/s |")
    print("| --- | --- | --- | --- | --- |")
    for row in rows:
        print(f"| {row['engine']} | {row['mode']} | {row['start_s']} | "
              f"{', '.join(str(s) for s in row['seconds'])} | {row['pairs_per_s']} |")
    a, t = agreement["server_vs_local"], agreement["top_vs_exact"]
    print("\n| target | measured | goal |")
    print("| --- | --- | --- |")
    print(f"| server / in-process pairs per second | {ratio}x | >= 0.8x |")
    print(f"| server vs in-process, {a['pairs_compared']} pairs: largest label difference; verdicts that agree | "
          f"{a['max_label_difference']}; {a['verdicts_agree']:.1%} | <= 0.02; >= 95% |")
    print(f"| top_logprobs vs exact ids, on the {t['pairs_compared']} of {n} pairs with no label floored: largest "
          f"label difference; verdicts that agree | {t['max_label_difference']}; {t['verdicts_agree']:.1%} | "
          "<= 0.02; >= 95% |")
    print(f"| pairs with a label outside the server's top 20 (floored) | {t['floored']} of {n} | - |")
    print(f"\nLabels range {min(spread):.3f} to {max(spread):.3f}: the 135M judge barely separates the answers, so a "
          f"verdict is the side of 0.5 a label falls on, with labels within {TIE:g} of 0.5 counted as ties.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=64, help="new pairs judged a round by each engine")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight to the server")
    parser.add_argument("--vllm-python", default=str(ROOT / ".venv-vllm" / "bin" / "python"),
                        help="interpreter with vllm, used when this one lacks it")
    args = parser.parse_args()
    if importlib.util.find_spec("vllm") is None:
        if not Path(args.vllm_python).exists():
            raise SystemExit(f"vllm is not installed here nor at {args.vllm_python} (make install-vllm)")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        raise SystemExit(subprocess.call([args.vllm_python, __file__, *sys.argv[1:]], env=env))
    run(args)


if __name__ == "__main__":
    main()
