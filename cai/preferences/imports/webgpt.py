"""`webgpt`: OpenAI's WebGPT comparisons, two answers to a question with preference scores.

`score_0` and `score_1` sum to 0; the higher one is chosen and ties are dropped. The
answers cite the quotes the model browsed (`quotes_0`, `quotes_1`), which stay out of
the prompt: a policy trained on these pairs sees the question alone.
"""

from __future__ import annotations

from cai.preferences.imports.base import Importer, RowContext, Skip, get, number, pair_row, slug, text


class WebGPT(Importer):
    name = "webgpt"
    fields = ("question.full_text", "answer_0", "answer_1", "score_0", "score_1")
    description = ("OpenAI WebGPT comparisons: `chosen` is the answer with the higher human preference\n"
                   "score, `rejected` the other (ties dropped); `prompt` is the question.")

    def convert(self, row: dict, ctx: RowContext) -> dict:
        question = text(row, "question.full_text", ctx)
        answers = (text(row, "answer_0", ctx), text(row, "answer_1", ctx))
        scores = (number(row, "score_0", ctx), number(row, "score_1", ctx))
        if scores[0] == scores[1]:
            raise Skip("tie", f"both scored {scores[0]:g}")
        best = 0 if scores[0] > scores[1] else 1
        qid, dataset = get(row, "question.id"), get(row, "question.dataset")
        return pair_row(f"webgpt:{ctx.part_name}:{ctx.index}", [{"role": "user", "content": question}],
                        answers[best], answers[1 - best], source=f"{ctx.label}: {ctx.where}", strategy="import:webgpt",
                        category=slug(dataset) if isinstance(dataset, str) else "",
                        question_id=qid if isinstance(qid, str) else "",
                        source_score_chosen=scores[best], source_score_rejected=scores[1 - best])
