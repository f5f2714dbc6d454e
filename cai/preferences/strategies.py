"""Pair strategies: how one generation record becomes preference rows.

A strategy turns one generation record into zero or more rows in TRL's
explicit-prompt conversational format (`prompt`, `chosen`, `rejected` as message
lists, `messages` for SFT); `cai.preferences.pair_filter` then drops the rows
that would teach nothing or the wrong thing.
"""

from __future__ import annotations

from cai.errors import SettingError

STRATEGIES = ("final-vs-initial", "per-round", "ai-feedback")


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
    raise SettingError("strategy", f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
