"""How far the toxicity classifier moves between texts that mean the same: the safety rule's margin.

Run: .venv/bin/python bench/toxicity_spread.py [--scorer toxic-bilstm]

The rule "chosen more toxic than rejected" may drop a pair only when the
difference is more than the classifier's noise. This measures that noise:

- hand-written paraphrase pairs (bench/data/toxicity_paraphrases.jsonl): harmless
  texts that name a harm in order to reject it ("hitting your partner is abuse"),
  neutral texts and mildly rude ones, each said twice in other words;
- real text: every HH-RLHF harmless-base test `chosen` answer with its contractions
  written out ("don't" -> "do not"), a meaning-preserving edit, by score band;
- the scores of harmless texts that discuss harm: both sides of the harm paraphrases
  and the chosen texts of the keep-set's calibration part.

The margin (`less_toxic_tolerance`) is the largest difference between two texts
meaning the same (hand-written harmless paraphrases and the HH-RLHF edits), rounded
up to 0.05. The last table shows how often the rule fires below the absolute
cut-off (0.7) on the keep-set's calibration part and on HH-RLHF, for several margins,
comparing the chosen with the rejected alone (the rule before) and with the higher
of the rejected and the prompt (the rule now), next to what either safety rule
catches of the toxicity regressions among the constructed failures (a polite answer
revised into an insult, a slur or group hatred, or rudeness; known limits included).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from _precision_data import constructed_failures, hh_rlhf_pairs, keep_set, paraphrases, quantile  # noqa: E402

CONTRACTIONS = {"don't": "do not", "doesn't": "does not", "didn't": "did not", "can't": "cannot",
                "won't": "will not", "isn't": "is not", "aren't": "are not", "wasn't": "was not",
                "i'm": "i am", "i'd": "i would", "i'll": "i will", "i've": "i have", "it's": "it is",
                "that's": "that is", "there's": "there is", "what's": "what is", "you're": "you are",
                "you'll": "you will", "you've": "you have", "they're": "they are", "we're": "we are"}
_CONTRACTION = re.compile(r"\b(" + "|".join(map(re.escape, CONTRACTIONS)) + r")\b", re.IGNORECASE)
BANDS = ((0, 0.05), (0.05, 0.15), (0.15, 0.3), (0.3, 0.5), (0.5, 1.01))
MARGINS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5)


def expand(text: str) -> str:
    return _CONTRACTION.sub(lambda m: CONTRACTIONS[m.group(0).lower()], text.replace("\u2019", "'"))


def spread_row(label: str, diffs: list[float]) -> str:
    if not diffs:
        return f"| {label} | 0 | - | - | - | - |"
    return (f"| {label} | {len(diffs)} | {quantile(diffs, 0.5):.3f} | {quantile(diffs, 0.9):.3f} | "
            f"{quantile(diffs, 0.95):.3f} | {max(diffs):.3f} |")


def main() -> None:
    from cai.safety.filter import SafetyRules
    from cai.safety.registry import DEFAULT_SCORER, create_scorer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scorer", default=DEFAULT_SCORER)
    args = parser.parse_args()
    scorer = create_scorer(args.scorer)
    scorer.load()

    def tox(texts: list[str]) -> list[float]:
        return [s["toxicity"] for s in scorer.score(texts)]

    para = paraphrases()
    a, b = tox([p["a"] for p in para]), tox([p["b"] for p in para])
    by_kind: dict[str, list[float]] = {}
    for p, x, y in zip(para, a, b):
        by_kind.setdefault(p["kind"], []).append(abs(x - y))
    hh = hh_rlhf_pairs()
    originals = [r["chosen"][0]["content"] for r in hh]
    edited = [(t, expand(t)) for t in originals if expand(t) != t.replace("\u2019", "'")]
    ea, eb = tox([t for t, _ in edited]), tox([e for _, e in edited])
    calibration = keep_set("calibration")
    kc = tox([r["chosen"][0]["content"] for r in calibration])
    kr = tox([r["rejected"][0]["content"] for r in calibration])
    kp = tox([r["prompt"][-1]["content"] for r in calibration])
    hc, hr = tox(originals), tox([r["rejected"][0]["content"] for r in hh])
    hp = tox([r["prompt"][-1]["content"] for r in hh])
    regressions = [r for r in constructed_failures() if r["expected"].startswith("chosen")]
    gc, gr, gp = (tox([r[k][-1]["content"] for r in regressions]) for k in ("chosen", "rejected", "prompt"))
    harm_texts = [x for p, xa, xb in zip(para, a, b) if p["kind"] == "discusses-harm" for x in (xa, xb)] + kc
    same_meaning = by_kind["discusses-harm"] + by_kind["neutral"] + [abs(x - y) for x, y in zip(ea, eb)]
    margin = math.ceil(max(same_meaning) / 0.05 - 1e-9) * 0.05
    rules = SafetyRules()
    default = rules.less_toxic_tolerance

    print(json.dumps({"scorer": args.scorer, "paraphrase_max": {k: round(max(v), 3) for k, v in by_kind.items()},
                      "harm_text_p90": round(quantile(harm_texts, 0.9), 3), "harm_text_max": round(max(harm_texts), 3),
                      "margin": round(margin, 2), "default_tolerance": default,
                      "date": time.strftime("%Y-%m-%d %H:%M %Z")}))
    print("\n| paraphrase pairs (|a - b| of toxicity) | pairs | p50 | p90 | p95 | max |")
    print("| --- | --- | --- | --- | --- | --- |")
    for kind, diffs in by_kind.items():
        print(spread_row(f"hand-written, {kind}", diffs))
    for lo, hi in BANDS:
        print(spread_row(f"HH-RLHF chosen, contractions written out, score {lo:.2f}-{min(hi, 1):.2f}",
                         [abs(x - y) for x, y in zip(ea, eb) if lo <= max(x, y) < hi]))
    print("\n| harmless texts that discuss harm (toxicity) | texts | p50 | p90 | p95 | max |")
    print("| --- | --- | --- | --- | --- | --- |")
    print(spread_row("hand-written paraphrases naming a harm, both sides",
                     [x for p, xa, xb in zip(para, a, b) if p["kind"] == "discusses-harm" for x in (xa, xb)]))
    print(spread_row("keep-set calibration part, chosen", kc))
    print(spread_row("HH-RLHF chosen (real; some still harmful)", hc))
    print(f"\nmargin from the measurement: {margin:.2f} (largest gap between texts meaning the same, rounded up to "
          f"0.05); SafetyRules().less_toxic_tolerance = {default} "
          f"({'matches' if abs(margin - default) < 1e-9 else 'DIFFERS'})")

    def fired(chosen, rejected, prompt, m, with_prompt):
        n = sum(rules.toxicity_max >= c > (max(r, p) if with_prompt else r) + m
                for c, r, p in zip(chosen, rejected, prompt))
        return f"{n} ({n / len(chosen):.1%})"

    def caught(m):
        """Regressions either safety rule drops (above the cut-off, or more toxic by the margin): all, below 0.7."""
        hits = [c > rules.toxicity_max or c > max(r, p) + m for c, r, p in zip(gc, gr, gp)]
        low = [hit for hit, c in zip(hits, gc) if c <= rules.toxicity_max]
        return f"{sum(hits)} of {len(hits)} ({sum(low)} of {len(low)})"

    print(f"\n| margin | keep-set calibration ({len(kc)}): vs rejected | vs rejected and prompt | "
          f"HH-RLHF ({len(hc)}): vs rejected | vs rejected and prompt | toxicity regressions caught "
          f"(of them scoring <= {rules.toxicity_max}) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for m in sorted({*MARGINS, default}):
        print(f"| {m:.2f} | {fired(kc, kr, kp, m, False)} | {fired(kc, kr, kp, m, True)} | "
              f"{fired(hc, hr, hp, m, False)} | {fired(hc, hr, hp, m, True)} | {caught(m)} |")
    print("\n| toxicity regression (constructed) | chosen | rejected | prompt | caught by |")
    print("| --- | --- | --- | --- | --- |")
    for row, c, r, p in zip(regressions, gc, gr, gp):
        by = (f"chosen toxicity > {rules.toxicity_max}" if c > rules.toxicity_max
              else "chosen more toxic than rejected" if c > max(r, p) + default else "nothing (known limit)")
        print(f"| {row['failure']}: \u201c{row['chosen'][-1]['content']}\u201d | {c:.2f} | {r:.2f} | {p:.2f} | {by} |")
    scorer.close()


if __name__ == "__main__":
    main()
