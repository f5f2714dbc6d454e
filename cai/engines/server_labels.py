"""Label log-probabilities from an OpenAI-compatible server: the request bodies and how to read the answers.

A judge asks which label (A or B) the model would write first, so each request
is one chat completion with `max_tokens: 1` and log-probabilities on. Two ways
to read them, as the local engines do, counting both token variants of a label
("A" and " A", summed):

- exact: vLLM's `logprob_token_ids` returns the log-probability of chosen token
  ids (from its `/tokenize`) at the first reply position, whatever their rank;
- top N: any server's `top_logprobs` (at most 20 on vLLM and OpenAI by default).
  A label none of whose variants is in the top N gets the lowest log-probability
  the server did return (its own is below that), and the read says it was floored.

Pure functions: `OpenAIEngine` sends the bodies and dispatches the requests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cai.engines.base import Conversation, LabelRead

TOP_LOGPROBS = 20            # the most vLLM (max_logprobs) and OpenAI return by default
# Asked once before any conversation is judged, to learn what the server returns.
PROBE: Conversation = [{"role": "user", "content": "Answer with one letter, A or B: which letter comes first?"}]


@dataclass(frozen=True)
class LabelMode:
    """How a server gives label log-probabilities: exact token ids (one tuple of ids per label) or its top N."""

    ids: tuple[tuple[int, ...], ...] | None = None
    top_n: int = TOP_LOGPROBS

    @property
    def exact(self) -> bool:
        return self.ids is not None

    def describe(self) -> str:
        return "exact token ids (logprob_token_ids)" if self.exact else f"top_logprobs {self.top_n}"


def variants(label: str) -> tuple[str, str]:
    """The texts a label's first token can be: "A" and " A" (as `cai.engines.base.label_token_ids`)."""
    return label, " " + label


def body(model: str, conversation: Conversation, mode: LabelMode) -> dict:
    """One chat-completions request that returns the first reply token's log-probabilities."""
    out = {"model": model, "messages": conversation, "max_tokens": 1, "temperature": 0.0, "n": 1, "logprobs": True}
    if mode.exact:
        out["logprob_token_ids"] = sorted({t for ids in mode.ids for t in ids})
        out["return_tokens_as_token_ids"] = True          # "token_id:49": the answer names ids, not texts
    else:
        out["top_logprobs"] = mode.top_n
    return out


def first_token_logprobs(data: dict) -> list[tuple[str, float]] | None:
    """(token, logprob) of the first reply position's top list; None when the answer has no log-probabilities."""
    try:
        content = data["choices"][0]["logprobs"]["content"]
        top = content[0].get("top_logprobs") or []
        return [(str(t["token"]), float(t["logprob"])) for t in top]
    except (KeyError, IndexError, TypeError, AttributeError, ValueError):
        return None


def read_exact(data: dict, labels: list[str], ids: tuple[tuple[int, ...], ...]) -> LabelRead:
    """The labels' log-probabilities from an answer to an exact-ids request."""
    top = first_token_logprobs(data)
    if top is None:
        return LabelRead(error="the answer has no log-probabilities")
    by_id = {}
    for token, logprob in top:
        if token.startswith("token_id:"):
            by_id[int(token.removeprefix("token_id:"))] = logprob
    missing = [t for label_ids in ids for t in label_ids if t not in by_id]
    if missing:
        return LabelRead(error=f"the answer lacks the log-probability of token id {missing[0]}")
    return LabelRead(tuple(logsumexp([by_id[t] for t in label_ids]) for label_ids in ids))


def read_top(data: dict, labels: list[str]) -> LabelRead:
    """The labels' log-probabilities from an answer's top-N list; a label not in it is floored."""
    top = first_token_logprobs(data)
    if not top:
        return LabelRead(error="the answer has no top_logprobs")
    first: dict[str, float] = {}
    for token, logprob in top:            # a text twice (two ids) keeps its likelier id, as the tokenizer's own
        first.setdefault(token, logprob)
    floor = min(logprob for _, logprob in top)
    values, floored = [], []
    for label in labels:
        seen = [first[v] for v in variants(label) if v in first]
        if not seen:
            floored.append(label)
        values.append(logsumexp(seen) if seen else floor)
    return LabelRead(tuple(values), floored=tuple(floored))


def logsumexp(values: list[float]) -> float:
    top = max(values)
    if top == -math.inf:
        return top
    return top + math.log(sum(math.exp(v - top) for v in values))
