"""Preference pairs from generation records, and the quality rules that drop bad ones.

A strategy turns one generation record into zero or more rows in TRL's
explicit-prompt conversational format (`prompt`, `chosen`, `rejected` as message
lists, `messages` for SFT). The rules then drop rows that would teach nothing
or teach the wrong thing, counting each reason so users can see what went.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

from cai.errors import CaiError
from cai.preferences.quality import CopySources, QualityRules, first_flag
from cai.text import has_preamble

STRATEGIES = ("final-vs-initial", "per-round", "ai-feedback")


@dataclass(frozen=True)
class PairRules:
    """Thresholds of the quality rules; the defaults suit short chat replies."""

    noop_similarity: float = 0.95       # chosen this similar to rejected counts as no revision
    drop_truncated: bool = True         # a text cut by the token budget teaches a cut-off ending
    near_duplicate: float = 0.85        # Jaccard over character 5-grams of prompt + chosen
    min_chars: int = 1
    quality: QualityRules = field(default_factory=QualityRules)   # few-shot copy, critique echo, ...


def _row(record: dict, chosen: str, rejected: str, principle_ids: list[str], strategy: str, k: int,
         chosen_truncated: bool, rejected_truncated: bool, round_info: dict | None, critiques: list[str]) -> dict:
    prompt = [{"role": "user", "content": record["prompt"]}]
    chosen_msgs = [{"role": "assistant", "content": chosen}]
    first = round_info or {}
    return {
        "pair_id": f"{record['id']}:{strategy}:{k}",
        "generation_id": record["id"],
        "prompt": prompt,
        "chosen": chosen_msgs,
        "rejected": [{"role": "assistant", "content": rejected}],
        "messages": prompt + chosen_msgs,
        "category": record.get("category", ""),
        "source": record.get("source", ""),
        "strategy": strategy,
        "principle_ids": principle_ids,
        "model": record.get("model", ""),
        "chosen_truncated": chosen_truncated,
        "rejected_truncated": rejected_truncated,
        "critiques": critiques,             # of the rounds behind chosen: the critique-echo rule reads them
        # The Hugging Face CAI dataset columns, for users of those recipes.
        "init_prompt": record["prompt"],
        "init_response": record["initial_response"],
        "critic_prompt": first.get("critique_request", ""),
        "critic_response": first.get("critique", ""),
        "revision_prompt": first.get("revision_request", ""),
        "revision_response": first.get("revision", ""),
    }


def final_vs_initial(record: dict) -> list[dict]:
    """Chosen = the last revision, rejected = the first answer (the HF CAI recipe)."""
    rounds = record.get("rounds") or []
    if not rounds:
        return []
    return [_row(record, rounds[-1]["revision"], record["initial_response"],
                 [r["principle_id"] for r in rounds], "final-vs-initial", 0,
                 rounds[-1].get("revision_finish") == "length", record.get("initial_finish") == "length",
                 rounds[0], [r.get("critique", "") for r in rounds])]


def per_round(record: dict) -> list[dict]:
    """Each revision preferred over the text it revised."""
    rows = []
    before, before_cut = record["initial_response"], record.get("initial_finish") == "length"
    for k, r in enumerate(record.get("rounds") or []):
        cut = r.get("revision_finish") == "length"
        rows.append(_row(record, r["revision"], before, [r["principle_id"]], "per-round", k, cut, before_cut, r,
                         [r.get("critique", "")]))
        before, before_cut = r["revision"], cut
    return rows


def pairs_from_record(record: dict, strategy: str) -> list[dict]:
    if strategy == "final-vs-initial":
        return final_vs_initial(record)
    if strategy == "per-round":
        return per_round(record)
    raise CaiError(f"--strategy: unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")


def normalize(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def _shingles(text: str, k: int = 5) -> set[str]:
    text = normalize(text)
    return {text[i:i + k] for i in range(max(1, len(text) - k + 1))}


class QualityFilter:
    """Applies the rules in order; the first rule a row breaks is its drop reason.

    `sources` (the run's few-shot turns and principle texts) turns on the
    few-shot-copy rule; `on_drop(row, reason, detail)` sees every dropped row.
    """

    def __init__(self, rules: PairRules = PairRules(), seed: int = 0, sources: CopySources | None = None,
                 on_drop: Callable[[dict, str, str], None] | None = None):
        from datasketch import MinHashLSH

        self.rules = rules
        self.sources = sources
        self.on_drop = on_drop
        self.dropped: Counter = Counter()
        self._exact: set[str] = set()
        # A looser LSH threshold finds candidates with high recall; each is then checked
        # against the real threshold by its MinHash estimate.
        self._lsh = MinHashLSH(threshold=max(0.1, rules.near_duplicate - 0.25), num_perm=128)
        self._hashes: dict = {}
        self._seed = seed

    def reason(self, row: dict) -> str | None:
        return self.check(row)[0]

    def check(self, row: dict) -> tuple[str | None, str]:
        """(the first rule `row` breaks or None, the evidence)."""
        from datasketch import MinHash
        from rapidfuzz import fuzz

        chosen, rejected = row["chosen"][0]["content"], row["rejected"][0]["content"]
        if len(chosen.strip()) < self.rules.min_chars or len(rejected.strip()) < self.rules.min_chars:
            return "empty", ""
        if has_preamble(chosen):
            return "leaked preamble", ""
        # The content rules come before truncation: a loop cut by the token budget is a loop.
        flag = first_flag(row, self.rules.quality, self.sources)
        if flag:
            return flag.rule, f"{flag.field}: {flag.detail}"
        if self.rules.drop_truncated and (row["chosen_truncated"] or row["rejected_truncated"]):
            return "truncated", ""
        if normalize(chosen) == normalize(rejected) or \
                fuzz.ratio(normalize(chosen), normalize(rejected)) / 100 >= self.rules.noop_similarity:
            return "no-op revision", ""
        key = normalize(row["prompt"][0]["content"] + "\n" + chosen)
        digest = hashlib.sha256(key.encode()).hexdigest()
        if digest in self._exact:
            return "duplicate", ""
        minhash = MinHash(num_perm=128, seed=self._seed)
        for s in _shingles(key):
            minhash.update(s.encode())
        if any(minhash.jaccard(self._hashes[k]) >= self.rules.near_duplicate for k in self._lsh.query(minhash)):
            return "near duplicate", ""
        self._exact.add(digest)
        self._lsh.insert(digest, minhash)
        self._hashes[digest] = minhash
        return None, ""

    def __call__(self, rows: Iterable[dict]) -> Iterator[dict]:
        for row in rows:
            why, detail = self.check(row)
            if why:
                self.dropped[why] += 1
                if self.on_drop:
                    self.on_drop(row, why, detail)
            else:
                yield row


def build_pairs(records: Iterable[dict], strategy: str, rules: PairRules = PairRules(),
                sources: CopySources | None = None) -> tuple[list[dict], Counter]:
    """All kept pairs of `records` and the count of drops per reason."""
    if strategy not in STRATEGIES[:2]:
        raise CaiError(f"--strategy: unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    quality = QualityFilter(rules, sources=sources)
    kept = list(quality(row for record in records for row in pairs_from_record(record, strategy)))
    return kept, quality.dropped
