"""`hh-rlhf`: Anthropic's helpful/harmless comparisons, `chosen` and `rejected` as whole transcripts.

Each transcript reads `\n\nHuman: ...\n\nAssistant: ...`. The turns both share are the
prompt (multi-turn kept); their differing last assistant turns are chosen and rejected.
The hub copy holds one folder per tranche (`harmless-base/train.jsonl.gz`, ...): the
folder becomes the row's category.
"""

from __future__ import annotations

import re

from cai.preferences.imports.base import Importer, RowContext, Skip, pair_row, split_shared_prefix, text

_TURN = re.compile(r"\n\n(Human|Assistant):")
_ROLES = {"Human": "user", "Assistant": "assistant"}


def parse_transcript(transcript: str) -> list[dict]:
    """The turns of a transcript as messages; Skip when text stands before the first turn."""
    body = transcript if transcript.startswith("\n\n") else "\n\n" + transcript.lstrip("\n")
    pieces = _TURN.split(body)
    if pieces[0].strip() or len(pieces) < 3:
        raise Skip("not a Human/Assistant transcript", "text before the first `Human:` or `Assistant:` turn")
    return [{"role": _ROLES[role], "content": content.strip()} for role, content in zip(pieces[1::2], pieces[2::2])]


class HHRLHF(Importer):
    name = "hh-rlhf"
    fields = ("chosen", "rejected")
    description = ("Anthropic HH-RLHF comparisons: `chosen` is the response the crowdworker preferred,\n"
                   "`rejected` the other; `prompt` holds every turn before them.")

    def convert(self, row: dict, ctx: RowContext) -> dict:
        chosen = parse_transcript(text(row, "chosen", ctx))
        rejected = parse_transcript(text(row, "rejected", ctx))
        prompt, chosen_text, rejected_text = split_shared_prefix(chosen, rejected)
        return pair_row(f"hh-rlhf:{ctx.part_name}:{ctx.index}", prompt, chosen_text, rejected_text,
                        source=f"{ctx.label}: {ctx.where}", strategy="import:hh-rlhf", category=ctx.folder)
