"""`hh-rlhf-red-team`: Anthropic's red-team attempts, imported as a prompt file for `cai generate`.

Each record is a whole red-team conversation (`transcript`) with the attacker's own
`rating` of success (0-4), the preference model's `min_harmlessness_score_transcript`
(lower is more harmful) and `tags`. The first human turn is the prompt; the first tag
is its category; the scores are kept as columns. `--min-rating 3` keeps the attacks
that worked. The hub copy is one JSON list (`red_team_attempts.jsonl.gz`).
"""

from __future__ import annotations

from pathlib import Path

from cai.errors import located
from cai.preferences.imports.base import Importer, RowContext, Skip, Written, get, number, slug, text
from cai.preferences.imports.hh_rlhf import parse_transcript

PROMPTS_FILE = "prompts.jsonl"
DUPLICATE_PROMPT = "duplicate prompt"


class RedTeamAttempts(Importer):
    name = "hh-rlhf-red-team"
    output = "prompts"
    fields = ("transcript", "rating", "min_harmlessness_score_transcript")
    split_map = {"train": "train"}

    def convert(self, row: dict, ctx: RowContext) -> dict:
        from cai.generation.prompt_files import stable_id

        turns = parse_transcript(text(row, "transcript", ctx))
        rating = number(row, "rating", ctx)
        if self.cfg.min_rating is not None and rating < self.cfg.min_rating:
            raise Skip(f"rating below {self.cfg.min_rating:g}", f"rated {rating:g}")
        if turns[0]["role"] != "user" or not turns[0]["content"]:
            raise Skip("no human turn first")
        tags = get(row, "tags")
        if tags is not None and not (isinstance(tags, list) and all(isinstance(t, str) for t in tags)):
            raise located(ctx.label, ctx.where, "tags: must be a list of strings or null")
        task = get(row, "task_description")
        prompt = turns[0]["content"]
        return {"id": stable_id(prompt), "prompt": prompt, "category": slug(tags[0]) if tags else "",
                "tags": tags or [], "rating": rating,
                "min_harmlessness_score_transcript": number(row, "min_harmlessness_score_transcript", ctx),
                "task_description": task if isinstance(task, str) else "",
                "generation_id": f"{ctx.part_name}:{ctx.index}", "source": f"{ctx.label}: {ctx.where}"}

    def write(self, rows: list[dict], test_ids, dropped_rows: list[dict], meta: dict) -> Written:
        """OUT/prompts.jsonl (one prompt per distinct first turn), dropped.jsonl and a README."""
        from cai.io import write_atomic, write_jsonl
        from cai.text import normalize

        out = Path(self.cfg.out)
        out.mkdir(parents=True, exist_ok=True)
        best: dict[str, dict] = {}             # per distinct prompt, its most successful attempt
        for row in rows:
            key = normalize(row["prompt"])
            if key in best and row["rating"] > best[key]["rating"]:
                best[key], row = row, best[key]
            if best.setdefault(key, row) is not row:
                dropped_rows.append({**row, "drop_reason": DUPLICATE_PROMPT, "drop_detail": "a higher-rated "
                                     "attempt with the same first turn is kept"})
                meta["dropped"][DUPLICATE_PROMPT] = meta["dropped"].get(DUPLICATE_PROMPT, 0) + 1
        kept = [{k: v for k, v in row.items() if k != "generation_id"} for row in best.values()]
        write_jsonl(out / PROMPTS_FILE, kept)
        write_jsonl(out / "dropped.jsonl", dropped_rows)
        drops = "\n".join(f"| {k} | {v} |" for k, v in meta["dropped"].items()) or "| (none) | 0 |"
        write_atomic(out / "README.md", (
            "# Red-team prompts (imported)\n\n"
            "First human turns of Anthropic's red-team attempts, for `cai generate --prompts "
            f"{out / PROMPTS_FILE}`.\nEach row keeps the attempt's `rating` (0-4, the attacker's own "
            "rating of success), `min_harmlessness_score_transcript`\n(lower: more harmful), `tags` and "
            "`task_description`; `category` is the first tag.\n\n"
            f"- prompts: {len(kept)}\n- command: `{meta['command']}`\n\n"
            f"## Dropped\n\n| reason | rows |\n| --- | --- |\n{drops}\n"))
        return Written({"prompts": len(kept)})
