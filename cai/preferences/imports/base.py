"""What every format importer shares: the base class, what it wrote, and row helpers.

An importer names the fields every row of its format must have, turns one source
row into cai's form (`convert`), raising `Skip(reason)` for a row it drops, and
writes the result (`write`): preference formats write the same export as
`cai data pairs`; others override `write` (a prompt file, generation records).
"""

from __future__ import annotations

import hashlib
import json
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

from cai.errors import located
from cai.preferences.config import ImportConfig


class Skip(Exception):
    """A row that is read fine but dropped: counted under `reason`, with `detail` for the audit."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


class SkipPart(Exception):
    """A whole file or split the format does not read (noted, not counted as dropped rows)."""


@dataclass
class Written:
    """What an importer wrote: `counts` per split of the export (pairs), `{"prompts": n}` (prompts) or
    `{"train": n, "test": n}` generation records (records)."""

    counts: dict[str, int]
    constitution: str = ""          # records: where the principles came from
    partial_records: int = 0        # records: more rounds than their rows hold (middle revisions left out)


@dataclass
class RowContext:
    """Where a row came from: messages name `label` and `where`; `folder` is the file's folder in the source,
    `part_name` (its file or split) with `index` makes an id unique within the source."""

    label: str
    where: str
    split: str | None
    index: int
    folder: str = ""
    part_name: str = "data"


class Importer(ABC):
    """One public format. Subclasses set the class attributes and implement `convert`."""

    name: ClassVar[str]
    output: ClassVar[str] = "pairs"                     # pairs | prompts | records
    fields: ClassVar[tuple[str, ...]]                   # every row must have these (dotted: nested)
    splits: ClassVar[tuple[str, ...]] = ()              # the format's split names beyond train/test/validation
    split_map: ClassVar[dict[str, str]] = {"train": "train", "test": "test"}
    description: ClassVar[str] = ""                     # first sentence of the dataset card

    def __init__(self, cfg: ImportConfig):
        self.cfg = cfg
        self.source = None              # the opened cai.preferences.imports.sources.Source, set by the job

    def check(self, row: dict, ctx: RowContext) -> None:
        """A row missing a field of the format is a wrong file for FORMAT: one line naming file, row, field."""
        for name in self.fields:
            if get(row, name) is _MISSING:
                have = ", ".join(map(str, row)) or "none"
                raise located(ctx.label, ctx.where, f"{name}: missing (a {self.name} row has "
                                                    f"{', '.join(self.fields)}; this row has: {have})")

    @abstractmethod
    def convert(self, row: dict, ctx: RowContext) -> dict:
        """The row in cai's form, or raise Skip."""

    def write(self, rows: list[dict], test_ids: set[str] | None, dropped_rows: list[dict], meta: dict) -> Written:
        """Write the preference export (the same as `cai data pairs`).

        `test_ids` (generation ids) is the source's test split, None to split by prompt;
        drops made while writing are added to `meta["dropped"]`.
        """
        from cai.preferences.export import TEST_PROMPT_IN_TRAIN, leaked_count, write_dataset

        if self.cfg.score and rows:
            from cai.safety.filter import SafetyRules, score_rows

            score_rows(rows, SafetyRules(scorer=self.cfg.scorer))
        counts = write_dataset(rows, self.cfg.out, test_ids=test_ids, dropped_rows=dropped_rows,
                               meta={**meta, "description": self.description,
                                     "pretty_name": f"{self.name} preference data (imported)"})
        leaked = leaked_count(rows, counts)
        if leaked:
            meta["dropped"][TEST_PROMPT_IN_TRAIN] = leaked
        return Written(counts)


# --- reading fields --------------------------------------------------------------------------

_MISSING = object()


def get(row: dict, name: str) -> Any:
    """`row[name]`; a dotted name reads a nested field (`question.full_text`) or a flattened column."""
    if name in row:
        return row[name]
    value: Any = row
    for key in name.split("."):
        if not isinstance(value, dict) or key not in value:
            return _MISSING
        value = value[key]
    return value


def text(row: dict, name: str, ctx: RowContext) -> str:
    value = get(row, name)
    if not isinstance(value, str):
        raise located(ctx.label, ctx.where, f"{name}: must be a string, got {_kind(value)}")
    return value


def number(row: dict, name: str, ctx: RowContext) -> float:
    value = get(row, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise located(ctx.label, ctx.where, f"{name}: must be a number, got {_kind(value)}")
    return float(value)


def _kind(value: Any) -> str:
    from cai.generation.prompt_files import _kind as kind

    return "nothing" if value is _MISSING else kind(value)


# --- building rows ----------------------------------------------------------------------

def messages(value: Any, role: str, name: str, ctx: RowContext) -> list[dict]:
    """A message list, or a plain string read as one `role` message; anything else is an error."""
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    if isinstance(value, dict) and "role" in value and "content" in value:
        value = [value]
    if not isinstance(value, list) or not all(isinstance(m, dict) and isinstance(m.get("content"), str)
                                              and m.get("role") in ("system", "user", "assistant") for m in value):
        raise located(ctx.label, ctx.where, f"{name}: must be a string or a list of {{role, content}} messages")
    return [{"role": m["role"], "content": m["content"]} for m in value]


def split_shared_prefix(chosen: list[dict], rejected: list[dict]) -> tuple[list[dict], str, str]:
    """(prompt, chosen text, rejected text) of two conversations that differ only in their last assistant turn."""
    if not chosen or not rejected or chosen[-1]["role"] != "assistant" or rejected[-1]["role"] != "assistant":
        raise Skip("does not end with an assistant turn")
    if chosen[:-1] != rejected[:-1]:
        turn = next((i for i, (a, b) in enumerate(zip(chosen, rejected)) if a != b), min(len(chosen), len(rejected)))
        raise Skip("transcripts do not share a prefix", f"they differ at turn {turn + 1}, "
                                                        f"not only in the last assistant turn")
    prompt = chosen[:-1]
    if not prompt or prompt[-1]["role"] != "user":
        raise Skip("no human turn before the answers")
    return prompt, chosen[-1]["content"], rejected[-1]["content"]


def pair_row(pair_id: str, prompt: list[dict], chosen: str, rejected: str, *, source: str, strategy: str,
             category: str = "", model: str = "", principle_ids: list[str] | None = None, **extra) -> dict:
    """A preference row in the export's form (TRL explicit-prompt conversational, plus provenance)."""
    chosen, rejected = chosen.strip(), rejected.strip()
    if not chosen or not rejected:
        raise Skip("empty response")
    if chosen == rejected:
        raise Skip("chosen identical to rejected")
    prompt = [{"role": m["role"], "content": m["content"].strip()} for m in prompt]
    chosen_msgs = [{"role": "assistant", "content": chosen}]
    return {"pair_id": pair_id, "generation_id": pair_id, "prompt": prompt, "chosen": chosen_msgs,
            "rejected": [{"role": "assistant", "content": rejected}], "messages": prompt + chosen_msgs,
            "category": category, "source": source, "strategy": strategy, "principle_ids": principle_ids or [],
            "model": model, **extra}


def content_key(row: dict) -> str:
    """Identical pairs (prompt, chosen, rejected) share this key."""
    blob = json.dumps([row["prompt"], row["chosen"], row["rejected"]], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
