"""Peak memory of `cai generate` does not grow with the number of prompts.

    python bench/generate_memory.py [--small 500] [--large 5000]

Runs the same tiny-model generation over a small and a large prompt file in
child processes and compares their peak RSS: records stream to disk, so the
large run should need the model plus one batch, like the small one.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def tiny_model(out: str) -> str:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from cai.models import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(None).path)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def peak_rss_mb(model: str, n: int, tmp: str) -> tuple[float, float]:
    prompts = os.path.join(tmp, f"prompts-{n}.jsonl")
    with open(prompts, "w") as fh:
        for i in range(n):
            fh.write(json.dumps({"id": f"m{i:05d}", "prompt": f"Question number {i}: what should I know?"}) + "\n")
    cmd = [sys.executable, "-m", "cai.cli.main", "generate", "-c", "constitution/hhh.yaml", "--prompts", prompts,
           "--model", model, "--out", os.path.join(tmp, f"run-{n}"), "--rounds", "1", "--max-new-tokens", "2",
           "--few-shot", "0", "--batch-size", "32", "--no-pairs", "--quiet"]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"generate failed for {n} prompts")
    return usage.ru_maxrss / 1024, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=500)
    parser.add_argument("--large", type=int, default=5000)
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="cai-mem-")
    model = tiny_model(os.path.join(tmp, "tiny"))
    small, small_s = peak_rss_mb(model, args.small, tmp)
    large, large_s = peak_rss_mb(model, args.large, tmp)
    print(json.dumps({"small_prompts": args.small, "large_prompts": args.large, "small_peak_rss_mb": round(small, 1),
                      "large_peak_rss_mb": round(large, 1), "ratio": round(large / small, 3),
                      "small_s": round(small_s, 1), "large_s": round(large_s, 1)}))


if __name__ == "__main__":
    main()
