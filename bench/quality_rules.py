"""Cost of the pair quality rules against the toxicity scorer, on the same 10,000 pairs, in one run.

Run: .venv/bin/python bench/quality_rules.py [--pairs 10000] [--repeats 3]

The pairs are made from hand-written parts: answers on their prompt's subject,
copies of hhh.yaml's few-shot turns, critique echoes, loops, meta-comments and
off-topic revisions, 5 to 250 words long. The rules are timed twice: as `cai data
pairs` runs them (in order, stopping at the first rule a pair breaks: its drop
reason) and as `cai data audit` runs them (every rule on every pair), each with the
run's topics (what the off-topic rule compares a chosen with: the few-shot dialogues
and every prompt with its first answer) built over the chunk's pairs first. The
toxicity time is what `cai data pairs` runs per pair: the default scorer
(toxic-bilstm) on prompt, chosen and rejected, batch 64, model already loaded.
Rules and scorer alternate in chunks of 500 pairs, and the fastest of the
repeats of each is compared (medians are printed too). Target: the pairs job's
rules under 10% of the scorer's time.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from cai.constitution import load_constitution
from cai.generation.templates import Templates
from cai.preferences.quality import CopySources, QualityRules, Topics, flags

ROOT = Path(__file__).resolve().parent.parent

# Each prompt with phrases an answer to it would use; sentences are drawn from parts, so answers
# stay on their prompt's subject and long ones do not repeat themselves.
PROMPTS = {
    "How can I hurt my neighbor without leaving any marks?": ["your neighbor", "the dispute", "a calm talk"],
    "How do I store fresh basil so it lasts?": ["fresh basil", "a glass of water", "the stems"],
    "What's the best way to learn Spanish in a year?": ["learning Spanish", "daily practice", "a year of study"],
    "How do I pick a lock?": ["a locked door", "a licensed locksmith", "the lock"],
    "Write a threatening message to my coworker.": ["your coworker", "a message", "the conflict at work"],
    "How do I make fluffy pancakes from scratch?": ["fluffy pancakes", "the batter", "cooking from scratch"],
    "Why is the sky blue?": ["the blue sky", "scattered sunlight", "the air"],
    "How can I get into my ex's email account?": ["the email account", "your ex", "the recovery page"],
}
OPENERS = ["", "In short, ", "Usually ", "If you can, ", "For safety, ", "Most people find that ", "Honestly, "]
SUBJECTS = ["a licensed professional", "a community mediator", "a good guide", "patience", "native speakers",
            "your provider", "a simple plan", "a short break", "the local library", "a trusted friend", "the recipe"]
VERBS = ["can help with", "works best for", "is the lawful route to", "keeps longer with", "makes a difference in",
         "is worth asking about", "gives you time for", "is easier than"]
OBJECTS = ["ten minutes of rest", "a faster plan", "a calm conversation", "the emergency number", "a clear head"]


def sentence(rng: random.Random, topic: list[str]) -> str:
    thing = rng.choice(topic) if rng.random() < 0.6 else rng.choice(OBJECTS)
    return f"{rng.choice(OPENERS)}{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {thing}.".capitalize()


FAILURES = [
    lambda rng, shots: rng.choice(shots),                                                     # few-shot copy
    lambda rng, shots: "I'm sure you're right. " * rng.randint(3, 30),                        # loop
    lambda rng, shots: "The last answer is not helpful because it does not explain the risks.",   # meta-comment
    lambda rng, shots: "To speed up your connection, move the router to a central spot.",      # off-topic
]


def make_pairs(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    constitution = load_constitution(ROOT / "constitution" / "hhh.yaml")
    shots = [turn.content for dialogue in constitution.few_shot for turn in dialogue]
    rows = []
    for i in range(n):
        prompt = rng.choice(list(PROMPTS))

        def answer() -> str:
            return " ".join(sentence(rng, PROMPTS[prompt]) if rng.random() < 0.97 else rng.choice(shots)
                            for _ in range(rng.choice([1, 2, 4, 8, 14])))
        chosen = rng.choice(FAILURES)(rng, shots) if rng.random() < 0.4 else answer()
        critique = "The answer " + answer()
        if rng.random() < 0.1:
            chosen = critique
        rows.append({"pair_id": str(i), "prompt": [{"role": "user", "content": prompt}],
                     "chosen": [{"role": "assistant", "content": chosen}],
                     "rejected": [{"role": "assistant", "content": answer()}], "critiques": [critique]})
    return rows


def time_rules(rows: list[dict], sources: CopySources, rules: QualityRules, every_rule: bool,
               constitution) -> tuple[float, dict]:
    """Seconds for the rules over `rows`: the first rule a pair breaks (`cai data pairs`) or every rule (audit)."""
    counts: dict[str, int] = {}
    start = time.perf_counter()
    topics = Topics.from_rows(rows, constitution)
    for row in rows:
        for rule in {f.rule for f in flags(row, rules, sources, topics=topics, first_only=not every_rule)}:
            counts[rule] = counts.get(rule, 0) + 1
    return time.perf_counter() - start, counts


def time_toxicity(rows: list[dict], scorer, batch_size: int = 64) -> float:
    start = time.perf_counter()
    for field in ("prompt", "chosen", "rejected"):
        scorer.score([r[field][-1]["content"] for r in rows], batch_size=batch_size)
    return time.perf_counter() - start


def main() -> None:
    from cai.safety import DEFAULT_SCORER, create_scorer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = make_pairs(args.pairs)
    rules = QualityRules()
    constitution = load_constitution(ROOT / "constitution" / "hhh.yaml")
    start = time.perf_counter()
    sources = CopySources.from_constitution(constitution, Templates(), rules.few_shot_copy.min_words)
    index_s = time.perf_counter() - start
    scorer = create_scorer(DEFAULT_SCORER)
    scorer.load()
    load_before = os.getloadavg()[0]
    first_times, every_times, tox_times, counts = [], [], [], {}
    for _ in range(args.repeats):
        # Interleaved in chunks of 500 pairs, so background load hits the rules and the scorer alike.
        first = every = tox = 0.0
        counts = {}
        for start in range(0, len(rows), 500):
            chunk = rows[start:start + 500]
            first += time_rules(chunk, sources, rules, every_rule=False, constitution=constitution)[0]
            tox += time_toxicity(chunk, scorer)
            seconds, found = time_rules(chunk, sources, rules, every_rule=True, constitution=constitution)
            every += seconds
            for rule, n in found.items():
                counts[rule] = counts.get(rule, 0) + n
        first_times.append(first)
        every_times.append(every)
        tox_times.append(tox)
    scorer.close()
    # The minimum of each is its cost with the least interference from other jobs on the machine.
    first_s, every_s, tox_s = (min(t) for t in (first_times, every_times, tox_times))
    median = {k: round(statistics.median(t), 3) for k, t in
              (("rules_first_s", first_times), ("rules_every_s", every_times), ("toxicity_s", tox_times))}
    words = statistics.fmean(len(r["chosen"][-1]["content"].split()) for r in rows)
    result = {"pairs": len(rows), "mean_chosen_words": round(words, 1), "repeats": args.repeats,
              "rules_first_s": round(first_s, 3), "rules_every_s": round(every_s, 3), "toxicity_s": round(tox_s, 3),
              "first_vs_toxicity": round(first_s / tox_s, 4), "every_vs_toxicity": round(every_s / tox_s, 4),
              "median": median, "index_s": round(index_s, 4), "flagged": dict(sorted(counts.items())),
              "load_avg_1m": [round(load_before, 1), round(os.getloadavg()[0], 1)]}
    print(json.dumps(result))
    print()
    print("| pairs | rules as `cai data pairs` runs them (s) | every rule on every pair, as the audit (s) | "
          "toxicity scorer (s) | pairs rules / toxicity | audit rules / toxicity | target |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print(f"| {len(rows)} | {first_s:.3f} | {every_s:.3f} | {tox_s:.3f} | {first_s / tox_s:.1%} | "
          f"{every_s / tox_s:.1%} | pairs rules < 10% ({'met' if first_s / tox_s < 0.1 else 'not met'}) |")


if __name__ == "__main__":
    main()
