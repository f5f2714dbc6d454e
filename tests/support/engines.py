"""`FakeEngine`: a scripted engine, so the loop, pairs, feedback and rules get fast unit tests.

Replies come from `respond(conversation) -> str` (by default `scripted_reply`, for
conversations without few-shot dialogues), label log-probabilities from
`judge(conversation, labels) -> list[float]`. Tokens are words: a reply longer
than `max_new_tokens` words is cut and ends with finish_reason "length", as a
real engine's would. Every call is kept in `calls` so tests can count them.
"""

from __future__ import annotations

from typing import Callable

from cai.engines.base import Completion, Conversation, Engine, SamplingParams


def stage_of(conversation: Conversation) -> tuple[str, str]:
    """(stage, prompt) of a loop conversation without few-shot dialogues: answer, critique or revise.

    The prompt is the first user turn; each stage adds two turns after it.
    """
    first = next(i for i, m in enumerate(conversation) if m["role"] == "user")
    after = len(conversation) - first - 1
    stage = "answer" if after == 0 else ("critique" if (after // 2) % 2 == 1 else "revise")
    return stage, conversation[first]["content"]


def scripted_reply(conversation: Conversation) -> str:
    """The default script: an answer that names the prompt's subject, a critique, a longer rewritten answer."""
    stage, prompt = stage_of(conversation)
    subject = prompt.lower().rstrip("?.!")
    if stage == "answer":
        return f"My first answer on {subject} is short."
    if stage == "critique":
        return "It gives no reasons and no example."
    return f"On {subject}: it depends on the details, so start small, test once, and keep notes of what works."


class FakeEngine(Engine):
    """Scripted replies and label log-probabilities; no model, no tokenizer."""

    name = "fake"

    def __init__(self, model_path: str = "fake", *, respond: Callable[[Conversation], str] | None = None,
                 judge: Callable[[Conversation, list[str]], list[float]] | None = None, **_options):
        self.model_path = model_path
        self.respond = respond or scripted_reply
        self.judge = judge
        self.calls: list[list[Conversation]] = []
        self.loaded = False

    def load(self) -> None:
        self.loaded = True

    def generate(self, conversations: list[Conversation], params: SamplingParams) -> list[Completion]:
        self.calls.append([list(c) for c in conversations])
        out = []
        for conversation in conversations:
            words = self.respond(conversation).split(" ")
            cut = len(words) > params.max_new_tokens
            words = words[:params.max_new_tokens]
            prompt_tokens = sum(len(m["content"].split()) for m in conversation)
            out.append(Completion(" ".join(words), prompt_tokens, len(words), "length" if cut else "stop"))
        return out

    def label_logprobs(self, conversations: list[Conversation], labels: list[str]) -> list[list[float]]:
        if self.judge is None:
            return super().label_logprobs(conversations, labels)
        self.calls.append([list(c) for c in conversations])
        return [self.judge(c, labels) for c in conversations]

    def close(self) -> None:
        self.loaded = False
