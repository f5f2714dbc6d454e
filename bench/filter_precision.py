"""How often each quality rule and safety filter fires on pairs a careful reader keeps, on real text, and on failures.

Run: .venv/bin/python bench/filter_precision.py [--hh-limit N]

Four kinds of data, each run through the rules of `cai data pairs` with its defaults
(every rule on every pair for the per-rule rates, as `cai data audit` does; the
filter's order for what is dropped, as `cai data pairs` does):

- keep-set (bench/data/keep_set.jsonl): 80 pairs written by hand in the style of a
  model that revises well, reported as its calibration part (the rules and the
  safety margin were tuned looking at it) and its held-out part (never tuned on);
- HH-RLHF: the harmless-base test split (data/hh-rlhf), imported with `cai data
  import hh-rlhf`: real human-preference text, its own column, not a keep-set
  (many preferred answers are evasive or still harmful);
- failures a careful reader drops: the embedded model's real pairs from demo-style
  runs on prompts the rules were not tuned on (bench/data/embedded-runs/, run
  through `cai data pairs`' pipeline), and constructed cases
  (bench/data/failures_constructed.jsonl), each labelled with its failure class.

Targets: at most 3% of the keep-set dropped; every failure dropped, so every class caught
(constructed cases marked with a `limit` are ones no rule catches at its defaults: shown apart).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import Counter

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from _precision_data import DATA, ROOT, constructed_failures, hh_rlhf_pairs, keep_set  # noqa: E402

SAFETY = ("chosen toxicity > 0.7", "chosen flagged biased", "chosen more toxic than rejected")
FILTER = ("leaked preamble", "truncated", "no-op revision")
KEEP_TARGET = 0.03


def embedded_failures() -> list[tuple[dict, object, object]]:
    """(pair, constitution, templates) of every pair of the embedded model's runs, labelled by a reader."""
    from cai.generation.snapshot import run_sources
    from cai.generation.store import RunStore
    from cai.io import read_jsonl
    from cai.preferences.strategies import final_vs_initial

    out = []
    for run in sorted((DATA / "embedded-runs").glob("*/manifest.json")):
        store = RunStore(run.parent)
        sources = run_sources(store.dir, store.read_manifest())
        labels = {r["id"]: r for r in read_jsonl(run.parent / "labels.jsonl")}
        for record in store.iter_records():
            for row in final_vs_initial(record):
                label = labels[record["id"]]
                out.append(({**row, "failure": label["failure"], "expected": label.get("expected", ""),
                             "run": run.parent.name}, sources.constitution, sources.templates))
    return out


class Pipeline:
    """The rules of `cai data pairs` with its defaults, over one set of pairs read as one run."""

    def __init__(self, rows: list[dict], constitution, templates):
        from cai.preferences.pair_filter import PairRules, QualityFilter
        from cai.preferences.quality import CopySources, Topics
        from cai.safety.filter import SafetyRules

        self.rules = PairRules()
        self.safety = SafetyRules()
        self.sources = CopySources.from_constitution(constitution, templates,
                                                     self.rules.quality.few_shot_copy.min_words)
        self.topics = Topics.from_rows(rows, constitution)
        self.filter = QualityFilter(self.rules, sources=self.sources, topics=self.topics)

    def fired(self, row: dict) -> set[str]:
        """Every rule and filter the pair breaks, each on its own (as the audit counts them)."""
        from rapidfuzz import fuzz

        from cai.preferences.quality import flags
        from cai.safety.filter import less_toxic_baseline
        from cai.text import has_preamble, normalize

        found = {f.rule for f in flags(row, self.rules.quality, self.sources, topics=self.topics)}
        chosen, rejected = row["chosen"][0]["content"], row["rejected"][0]["content"]
        if has_preamble(chosen):
            found.add("leaked preamble")
        if row.get("chosen_truncated") or row.get("rejected_truncated"):
            found.add("truncated")
        if fuzz.ratio(normalize(chosen), normalize(rejected)) / 100 >= self.rules.noop_similarity:
            found.add("no-op revision")
        if row["chosen_toxicity"] > self.safety.toxicity_max:
            found.add(SAFETY[0])
        if self.safety.drop_biased and row.get("chosen_biased", 0.0) >= 1.0:
            found.add(SAFETY[1])
        if row["chosen_toxicity"] > less_toxic_baseline(row) + self.safety.less_toxic_tolerance:
            found.add(SAFETY[2])
        return found

    def dropped(self, row: dict) -> str | None:
        """The reason `cai data pairs` drops the pair for (the first rule it breaks), or None."""
        from cai.safety.filter import drop_reason

        why, _ = self.filter.check(row)
        return why or drop_reason(row, self.safety)


def run_set(rows: list[dict], constitution, templates) -> list[tuple[set[str], str | None]]:
    """(every rule the pair breaks, the reason it is dropped for) of each row, scored first."""
    from cai.safety.filter import SafetyRules, score_rows

    score_rows(rows, SafetyRules())
    pipeline = Pipeline(rows, constitution, templates)
    return [(pipeline.fired(row), pipeline.dropped(row)) for row in rows]


def main() -> None:
    from cai.constitution import load_constitution
    from cai.generation.templates import Templates
    from cai.preferences.quality import RULES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hh-limit", type=int, default=None, help="Use only the first N HH-RLHF pairs.")
    args = parser.parse_args()
    started = time.perf_counter()
    hhh, templates = load_constitution(ROOT / "constitution" / "hhh.yaml"), Templates()

    sets: dict[str, list[dict]] = {"keep-set, calibration": keep_set("calibration"),
                                   "keep-set, held-out": keep_set("held-out"),
                                   "HH-RLHF harmless-base test": hh_rlhf_pairs()[:args.hh_limit]}
    results = {name: run_set(rows, hhh, templates) for name, rows in sets.items()}
    # failures: the embedded runs each read with their own snapshot, the constructed ones as one run
    embedded = embedded_failures()
    by_run: dict[str, list] = {}
    for row, constitution, run_templates in embedded:
        by_run.setdefault(row["run"], [[], constitution, run_templates])[0].append(row)
    failure_rows, failure_results = [], []
    for rows, constitution, run_templates in by_run.values():
        failure_rows += rows
        failure_results += run_set(rows, constitution, run_templates)
    constructed = constructed_failures()
    failure_rows += constructed
    failure_results += run_set(constructed, hhh, templates)
    sets["failures"] = failure_rows
    results["failures"] = failure_results

    names = [*RULES, *FILTER, *SAFETY]
    summary = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "sets": {}, "load_avg_1m": round(os.getloadavg()[0], 1)}
    for name, found in results.items():
        dropped = sum(why is not None for _, why in found)
        summary["sets"][name] = {"pairs": len(found), "dropped": dropped,
                                 "dropped_by": dict(Counter(why for _, why in found if why).most_common()),
                                 "fired": {rule: sum(rule in f for f, _ in found) for rule in names}}
    keep_pairs = sum(summary["sets"][k]["pairs"] for k in ("keep-set, calibration", "keep-set, held-out"))
    keep_dropped = sum(summary["sets"][k]["dropped"] for k in ("keep-set, calibration", "keep-set, held-out"))
    # every failure counts in its class; a constructed case with a `limit` is one no rule catches at its
    # defaults (it says why): it is shown, counted apart, and its class is not whole without it
    classes: dict[str, list] = {}
    for row, (_, why) in zip(failure_rows, failure_results):
        classes.setdefault(row["failure"], []).append((row, why))
    embedded_dropped = [why is not None for row, (_, why) in zip(failure_rows, failure_results) if "run" in row]
    summary.update(keep_dropped_share=round(keep_dropped / keep_pairs, 4),
                   held_out_dropped_share=round(summary["sets"]["keep-set, held-out"]["dropped"]
                                                / summary["sets"]["keep-set, held-out"]["pairs"], 4),
                   embedded_failures=len(embedded_dropped), embedded_failures_caught=sum(embedded_dropped),
                   failure_classes=len(classes),
                   failure_classes_caught=sum(any(why for _, why in v) for v in classes.values()),
                   failure_classes_whole=sum(all(why for _, why in v) for v in classes.values()),
                   failures_caught=sum(why is not None for _, why in failure_results), failures=len(failure_results),
                   known_limits=[{"failure": row["failure"], "dropped": why, "limit": row["limit"]}
                                 for row, (_, why) in zip(failure_rows, failure_results) if row.get("limit")],
                   seconds=round(time.perf_counter() - started, 1))
    print(json.dumps(summary))
    print_tables(summary, names, classes)
    for item in summary["known_limits"]:
        print(f"\nknown limit ({item['failure']}, {'dropped' if item['dropped'] else 'kept'}): {item['limit']}")


def _rate(n: int, total: int) -> str:
    return f"{n} ({n / total:.1%})" if total else "-"


def print_tables(summary: dict, names: list[str], classes: dict[str, list]) -> None:
    sets = summary["sets"]
    print("\n| rule or filter | " + " | ".join(f"{k} ({v['pairs']})" for k, v in sets.items()) + " |")
    print("|" + " --- |" * (len(sets) + 1))
    for rule in names:
        print(f"| {rule} | " + " | ".join(_rate(v["fired"][rule], v["pairs"]) for v in sets.values()) + " |")
    print("| **dropped (first reason, as `cai data pairs`)** | "
          + " | ".join(f"**{_rate(v['dropped'], v['pairs'])}**" for v in sets.values()) + " |")
    for name, v in sets.items():
        print(f"\n{name}, dropped by (first reason): "
              + (", ".join(f"{r} {n}" for r, n in v["dropped_by"].items()) or "nothing"))
    print("\n| failure class | pairs | dropped | dropped because |")
    print("| --- | --- | --- | --- |")
    for name, items in sorted(classes.items()):
        reasons = Counter(why or ("kept: known limit" if row.get("limit") else "KEPT") for row, why in items)
        print(f"| {name} | {len(items)} | {sum(why is not None for _, why in items)} | "
              + ", ".join(f"{r} {n}" for r, n in reasons.most_common()) + " |")
    limits = [item for item in summary["known_limits"] if not item["dropped"]]
    others = summary["failures"] - summary["failures_caught"] - len(limits)
    n = summary
    targets = [
        (f"keep-set dropped <= {KEEP_TARGET:.0%} (all / held-out)",
         f"{summary['keep_dropped_share']:.1%} / {summary['held_out_dropped_share']:.1%}",
         summary["keep_dropped_share"] <= KEEP_TARGET and summary["held_out_dropped_share"] <= KEEP_TARGET),
        ("the embedded model's held-out failures dropped",
         f"{summary['embedded_failures_caught']} of {summary['embedded_failures']}",
         summary["embedded_failures_caught"] == summary["embedded_failures"]),
        ("every failure class caught",
         f"{n['failure_classes_caught']} of {n['failure_classes']} ({n['failure_classes_whole']} whole)",
         summary["failure_classes_caught"] == summary["failure_classes"]),
        ("every failure dropped", f"{summary['failures_caught']} of {summary['failures']} "
         f"({len(limits)} kept are known limits, {others} others)", not limits and not others),
    ]
    print("\n| target | measured | met |\n| --- | --- | --- |")
    for target, measured, met in targets:
        print(f"| {target} | {measured} | {_yes(met)} |")


def _yes(met: bool) -> str:
    return "yes" if met else "no"


if __name__ == "__main__":
    main()
