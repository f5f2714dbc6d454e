"""Real preference pairs for the judge tests and bench: the HH-RLHF harmless-base test split in data/hh-rlhf."""

from __future__ import annotations

import gzip
import json

from support import REPO

HH = REPO / "data" / "hh-rlhf" / "harmless-base-test.jsonl.gz"


def hh_pairs(n: int, max_chars: int = 600) -> list[tuple[str, str, str]]:
    """(last human turn, chosen answer, rejected answer) of the first `n` pairs with texts up to `max_chars`."""
    from cai.preferences.imports.base import Skip, split_shared_prefix
    from cai.preferences.imports.hh_rlhf import parse_transcript

    out = []
    with gzip.open(HH, "rt", encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            try:
                prompt, chosen, rejected = split_shared_prefix(parse_transcript(row["chosen"]),
                                                               parse_transcript(row["rejected"]))
            except Skip:
                continue
            question = prompt[-1]["content"] if prompt and prompt[-1]["role"] == "user" else ""
            if question and chosen and rejected and max(len(question), len(chosen), len(rejected)) <= max_chars:
                out.append((question, chosen, rejected))
            if len(out) == n:
                return out
    return out
