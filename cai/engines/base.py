"""The small interface every generation engine implements.

An engine takes a batch of chat conversations and returns one completion per
conversation, in order. The loop above it never knows which engine runs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

# Prompts per engine call: the generation, eval and judge batches all start here.
DEFAULT_BATCH_SIZE = 16

Message = dict[str, str]          # {"role": "user" | "assistant" | "system", "content": "..."}
Conversation = list[Message]


@dataclass(frozen=True)
class SamplingParams:
    """Decoding settings shared by all engines. temperature 0 means greedy."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    stop: tuple[str, ...] = ()


@dataclass
class Completion:
    """One generated reply and what it cost."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"    # "stop" (EOS or a stop string) or "length"


@dataclass
class EngineInfo:
    """What the manifest records about the engine that ran."""

    name: str
    model: str
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class LabelRead:
    """One conversation's answer to a labelled question: the log-probability of each label as the reply's
    first token, or why it could not be read.

    `floored` names the labels an engine could not see (a server's top-N log-probabilities that did not
    include them); each got the lowest log-probability it did see, an upper bound on its own.
    """

    logprobs: tuple[float, ...] = ()
    floored: tuple[str, ...] = ()
    error: str | None = None


class PromptRejected(Exception):
    """Some conversations of one `generate` call cannot be served; the others could be.

    `reasons` maps the index of each refused conversation (in the call's order)
    to why, e.g. "prompt is 9000 tokens; context is 8192". The generation job
    records those prompts as failed and runs the rest without them.
    """

    def __init__(self, reasons: dict[int, str]):
        super().__init__("; ".join(f"#{i}: {r}" for i, r in sorted(reasons.items())))
        self.reasons = reasons


class Engine(ABC):
    """load() once, generate() many batches, close() to free memory."""

    name: str = "base"
    # Each conversation is its own request and generate() may be called from many threads at once (a server):
    # the loop then moves every prompt to its next stage as soon as its reply arrives, so the engine never
    # waits for the slowest prompt of a stage. Engines that batch one call together keep False.
    independent_requests: bool = False

    @abstractmethod
    def load(self) -> None: ...

    @abstractmethod
    def generate(self, conversations: list[Conversation], params: SamplingParams) -> list[Completion]: ...

    def label_logprobs(self, conversations: list[Conversation], labels: list[str]) -> list[list[float]]:
        """Log-probability of each label as the first token of the reply, per conversation.

        AI feedback reads preferences from these; engines that can see logits implement it.
        """
        from cai.errors import CaiError

        raise CaiError(f"engine {self.name!r} cannot read label log-probabilities; use transformers, vllm or openai")

    def label_reads(self, conversations: list[Conversation], labels: list[str], on_result=None) -> list[LabelRead]:
        """`label_logprobs` as LabelReads, calling `on_result(i, read)` as each conversation's read is known.

        Local engines read a whole batch at once; a server reads one conversation per request, so it
        overrides this to report each as it completes (and to fail one conversation alone).
        """
        reads = [LabelRead(tuple(row)) for row in self.label_logprobs(conversations, labels)]
        if on_result is not None:
            for i, read in enumerate(reads):
                on_result(i, read)
        return reads

    def context_length(self) -> int | None:
        """Tokens the model attends to (prompt + reply); None when unknown. Valid after load()."""
        return None

    def count_tokens(self, conversations: list[Conversation]) -> list[int] | None:
        """Prompt tokens of each conversation with the chat template applied; None when this engine cannot count."""
        return None

    def preferred_batch(self) -> int | None:
        """Conversations one call should hold to keep the engine busy, when more than the job's batch; None: no wish.

        A server pool takes as many requests as its servers batch (hundreds on a GPU), more than a batch of 16.
        """
        return None

    def close(self) -> None:
        """Free the model; engines holding processes or sockets override this."""

    def info(self) -> EngineInfo:
        return EngineInfo(name=self.name, model=str(getattr(self, "model_path", "")))

    def __enter__(self):
        self.load()
        return self

    def __exit__(self, *exc):
        self.close()


def label_token_ids(tokenizer, labels: list[str]) -> list[list[int]]:
    """Token ids that start each label, with and without a leading space ("A" and " A")."""
    out = []
    for label in labels:
        ids = set()
        for variant in (label, " " + label):
            encoded = tokenizer(variant, add_special_tokens=False)["input_ids"]
            if encoded:
                ids.add(encoded[0])
        out.append(sorted(ids))
    return out
