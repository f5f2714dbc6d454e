"""`shp`: the Stanford Human Preferences dataset, two Reddit comments on a post ranked by votes.

`labels` is 1 when comment A is preferred. Pairs whose scores tie are dropped;
`--min-score-ratio R` keeps only pairs whose higher score is at least R times the
lower, the SHP paper's filter (it trains on R >= 2). The post is `history` in the
released files (`post` is read too).
"""

from __future__ import annotations

import re

from cai.errors import located
from cai.preferences.imports.base import Importer, RowContext, Skip, get, number, pair_row, slug, text


class SHP(Importer):
    name = "shp"
    fields = ("human_ref_A", "human_ref_B", "labels", "score_A", "score_B")
    splits = ("validation",)
    description = ("Stanford Human Preferences (Reddit): `chosen` is the comment readers preferred\n"
                   "(collective votes), `rejected` the other; `prompt` is the post.")

    def check(self, row: dict, ctx: RowContext) -> None:
        super().check(row, ctx)
        if "history" not in row and "post" not in row:
            raise located(ctx.label, ctx.where, f"history: missing (a shp row has the post as `history` or `post`, "
                                                f"and {', '.join(self.fields)}; this row has: {', '.join(row)})")

    def convert(self, row: dict, ctx: RowContext) -> dict:
        post = text(row, "history" if "history" in row else "post", ctx)
        refs = (text(row, "human_ref_A", ctx), text(row, "human_ref_B", ctx))
        scores = (number(row, "score_A", ctx), number(row, "score_B", ctx))
        label = get(row, "labels")
        if label not in (0, 1) or isinstance(label, bool):
            raise located(ctx.label, ctx.where, f"labels: must be 1 (A preferred) or 0 (B preferred), got {label!r}")
        if scores[0] == scores[1]:
            raise Skip("tie", f"both scored {scores[0]:g}")
        best = 0 if label == 1 else 1
        ratio = scores[best] / max(scores[1 - best], 1.0)     # SHP scores are >= 2; 1 guards a zero
        minimum = self.cfg.min_score_ratio
        if minimum is not None and ratio < minimum:
            raise Skip(f"score ratio below {minimum:g}", f"{scores[best]:g}:{scores[1 - best]:g}")
        domain = get(row, "domain")
        post_id = get(row, "post_id")
        ids = [get(row, k) for k in ("c_root_id_A", "c_root_id_B")]
        pair_id = (f"shp:{post_id}:{ids[0]}:{ids[1]}" if all(isinstance(x, str) for x in (post_id, *ids))
                   else f"shp:{ctx.part_name}:{ctx.index}")
        category = slug(re.sub(r"_(train|validation|test)$", "", domain)) if isinstance(domain, str) else ""
        return pair_row(pair_id, [{"role": "user", "content": post}], refs[best], refs[1 - best],
                        source=f"{ctx.label}: {ctx.where}", strategy="import:shp", category=category,
                        source_score_chosen=scores[best], source_score_rejected=scores[1 - best], score_ratio=ratio)
