"""Throughput of the default toxicity scorer: 1,000 varied texts, batch 64, one JSON line.

Run: .venv/bin/python bench/score_throughput.py [--scorer NAME] [--n 1000] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from cai.safety import DEFAULT_SCORER, create_scorer

OPENERS = ["Thanks for asking!", "Honestly,", "I think", "You are", "Please note that", "Ugh,", "Sure:", ""]
MIDDLES = ["the report is due on Friday", "this idea is stupid", "a kind and thoughtful person",
           "the recipe needs two eggs and a cup of flour", "shut up, you jerk", "the weather is lovely today",
           "we should review the safety guidelines", "what a dumb thing to say", "the museum opens at nine"]


def texts(n: int, seed: int = 0) -> list[str]:
    """Varied lengths (1 to ~150 words, so truncation is exercised) and tones."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        parts = [rng.choice(OPENERS)] + [rng.choice(MIDDLES) for _ in range(rng.choice([1, 2, 4, 8, 16]))]
        out.append(" ".join(p for p in parts if p) + rng.choice([".", "!", "?", ""]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scorer", default=DEFAULT_SCORER)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    batch = texts(args.n)
    scorer = create_scorer(args.scorer)
    start = time.perf_counter()
    scorer.load()
    load_s = time.perf_counter() - start
    start = time.perf_counter()
    rows = scorer.score(batch, batch_size=args.batch_size)
    score_s = time.perf_counter() - start
    assert len(rows) == len(batch)
    print(json.dumps({"scorer": args.scorer, "texts": len(batch), "batch_size": args.batch_size,
                      "load_s": round(load_s, 3), "score_s": round(score_s, 3),
                      "texts_per_s": round(len(batch) / score_s, 1)}))


if __name__ == "__main__":
    main()
