"""The context guard: a conversation that does not fit the model's context never reaches an engine.

Before a batch runs, the generation job counts each prompt's tokens as the
engine will see them (chat template, system turn and few-shot dialogues
included; `Engine.count_tokens`). A prompt over the limit is skipped with a
reason, or cut to its head and tail (`--on-long truncate`). The limit is
`--max-prompt-tokens`, or else what leaves room for every later stage: the
critique and revision turns append requests and replies to the conversation,
so a prompt cut to fit only the answer would fail in the first critique.
`ContextGuard` checks every engine call too and refuses, alone, a
conversation that would overflow all the same (`PromptRejected`).

Engines that cannot count (an OpenAI-compatible server without vLLM's
`/tokenize`) are not guarded here; the server's own refusal of that one
request takes over.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from cai.engines.base import Completion, Conversation, Engine, PromptRejected, SamplingParams
from cai.errors import CaiError

ON_LONG = ("skip", "truncate")
CUT_MARK = "\n\n[... {n:,} characters cut ...]\n\n"


@dataclass(frozen=True)
class Limit:
    """How many prompt tokens a conversation may have, and how to say why when it has more."""

    context: int | None           # the model's context; None when the engine does not know it
    reserve: int                  # tokens kept after the prompt: its reply, and later turns with their replies
    max_prompt_tokens: int | None = None     # --max-prompt-tokens; None: the context minus the reserve

    @property
    def tokens(self) -> int | None:
        if self.max_prompt_tokens is not None:
            return self.max_prompt_tokens
        return None if self.context is None else self.context - self.reserve

    def reason(self, n: int) -> str:
        if self.max_prompt_tokens is not None:
            return f"prompt is {n} tokens; --max-prompt-tokens is {self.max_prompt_tokens}"
        return context_reason(n, self.context, self.reserve)


def context_reason(n: int, context: int, reserve: int) -> str:
    return f"prompt is {n} tokens; context is {context} ({reserve} kept for what follows the prompt)"


def later_turns_tokens(engine: Engine, first: Conversation, later: list[Conversation], max_new_tokens: int) -> int:
    """Tokens that the stages after the first add to a prompt at most: each reply at full length, plus the
    turns in `later` (requests, with empty replies before them) and their chat markup."""
    counts = engine.count_tokens([first, first + [t for turns in later for t in turns]])
    if counts is None:
        return max_new_tokens
    return counts[1] - counts[0] + (len(later) + 1) * max_new_tokens


@dataclass(frozen=True)
class Fitted:
    """A prompt ready to run: the text (cut when truncated) and, when cut, what was cut."""

    prompt: str
    truncated: dict | None = None


def fit_prompts(engine: Engine, prompts: list[str], conversation_of: Callable[[int, str], Conversation],
                limit: Limit, on_long: str = "skip") -> list[Fitted | str]:
    """Each prompt as it may run (Fitted), or the reason it cannot (str).

    `conversation_of(i, text)` is the conversation the engine would get with `text` as prompt `i`.
    """
    if on_long not in ON_LONG:
        raise CaiError(f"--on-long: must be one of {', '.join(ON_LONG)}, got {on_long!r}")
    if limit.tokens is None or not prompts:
        return [Fitted(p) for p in prompts]
    counts = engine.count_tokens([conversation_of(i, p) for i, p in enumerate(prompts)])
    if counts is None:
        return [Fitted(p) for p in prompts]
    out: list[Fitted | str] = []
    for i, (prompt, n) in enumerate(zip(prompts, counts)):
        if n <= limit.tokens:
            out.append(Fitted(prompt))
        elif on_long == "skip":
            out.append(limit.reason(n))
        else:
            def tokens_of(text: str, i: int = i) -> int:
                return engine.count_tokens([conversation_of(i, text)])[0]

            cut = truncate_to_fit(prompt, tokens_of, limit.tokens, n)
            if cut is None:
                out.append(f"{limit.reason(n)}; the conversation around the prompt alone does not fit")
            else:
                text, kept = cut
                out.append(Fitted(text, {"original_tokens": n, "kept_tokens": kept,
                                         "original_chars": len(prompt), "kept_chars": len(text)}))
    return out


def head_and_tail(text: str, keep: int) -> str:
    """The first and last characters of `text`, `keep` in all, with a mark where the middle was."""
    if keep >= len(text):
        return text
    head = keep - keep // 2
    tail = text[len(text) - keep // 2:] if keep // 2 else ""
    return text[:head] + CUT_MARK.format(n=len(text) - keep) + tail


def truncate_to_fit(text: str, tokens_of: Callable[[str], int], limit: int, tokens: int) -> tuple[str, int] | None:
    """The longest head-and-tail cut of `text` whose conversation fits `limit` tokens, with its count.

    `tokens` is the count of the whole text. Each try scales the kept characters by how far the last
    one was over, so a few tokenizations do even for a prompt of hundreds of thousands of characters.
    None when even the mark alone does not fit.
    """
    floor = tokens_of(head_and_tail(text, 0))
    if floor > limit:
        return None
    keep, n = len(text), tokens
    for _ in range(30):
        keep = int(keep * (limit - floor) / max(n - floor, 1) * 0.98)
        if keep <= 0:
            break
        candidate = head_and_tail(text, keep)
        n = tokens_of(candidate)
        if n <= limit:
            return candidate, n
    candidate = head_and_tail(text, 0)
    return candidate, floor


class ContextGuard:
    """Wraps an engine: each generate() call first refuses the conversations that would overflow the context."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.name = engine.name
        self.independent_requests = engine.independent_requests

    def generate(self, conversations: list[Conversation], params: SamplingParams) -> list[Completion]:
        context = self.engine.context_length()
        counts = self.engine.count_tokens(conversations) if context is not None else None
        if counts is not None:
            over = {i: context_reason(n, context, params.max_new_tokens)
                    for i, n in enumerate(counts) if n + params.max_new_tokens > context}
            if over:
                raise PromptRejected(over)
        return self.engine.generate(conversations, params)
