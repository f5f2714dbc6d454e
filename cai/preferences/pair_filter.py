"""The pair filter: every rule a preference row must pass, in order, with the reason it failed.

Empty texts, leaked preambles, the content rules of `cai.preferences.quality`
(few-shot copy, critique echo, loops, meta-comments, off-topic, repeated items,
rejected text kept, refusals not improved), truncation,
no-op revisions, and exact and near duplicates (MinHash over prompt + chosen).
The first rule a row breaks is its drop reason, counted so users see what went.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

from cai.errors import SettingError
from cai.preferences.quality import CopySources, QualityRules, Topics, first_flag
from cai.preferences.strategies import STRATEGIES, pairs_from_record
from cai.text import has_preamble, normalize


@dataclass(frozen=True)
class PairRules:
    """Thresholds of the quality rules; the defaults suit short chat replies."""

    noop_similarity: float = 0.95       # chosen this similar to rejected counts as no revision
    drop_truncated: bool = True         # a text cut by the token budget teaches a cut-off ending
    near_duplicate: float = 0.85        # Jaccard over character 5-grams of prompt + chosen
    min_chars: int = 1
    quality: QualityRules = field(default_factory=QualityRules)   # few-shot copy, critique echo, ...


def _shingles(text: str, k: int = 5) -> set[str]:
    text = normalize(text)
    return {text[i:i + k] for i in range(max(1, len(text) - k + 1))}


class QualityFilter:
    """Applies the rules in order; the first rule a row breaks is its drop reason.

    `sources` (the run's few-shot turns and principle texts) turns on the
    few-shot-copy and rejected-kept rules, `topics` (the run's other conversations)
    the off-topic rule; `on_drop(row, reason, detail)` sees every dropped row.
    """

    def __init__(self, rules: PairRules = PairRules(), seed: int = 0, sources: CopySources | None = None,
                 on_drop: Callable[[dict, str, str], None] | None = None, topics: Topics | None = None):
        from datasketch import MinHashLSH

        self.rules = rules
        self.sources = sources
        self.topics = topics
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
        flag = first_flag(row, self.rules.quality, self.sources, self.topics)
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
        raise SettingError("strategy", f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES[:2])}")
    rows = [row for record in records for row in pairs_from_record(record, strategy)]
    quality = QualityFilter(rules, sources=sources, topics=Topics.from_rows(rows))
    kept = list(quality(rows))
    return kept, quality.dropped
