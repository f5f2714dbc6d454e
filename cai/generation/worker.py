"""One loaded engine running whole batches through the critique-revise loop.

A local run has one `BatchWorker` in its own process; a Ray run has one per
replica (`cai.generation.ray_replicas`). Either way the worker gets a batch of
prompts and gives back what became of each: records, or a reason it failed.
Writing them down is the job's part (`cai.generation.job`), so a run's records
are the same wherever its batches ran.

One prompt never takes good ones down with it. Before a batch runs, prompts
that do not fit the model's context are skipped or cut (`cai.generation.context`);
a prompt an engine refuses during the batch is recorded as failed and the batch
runs again without it; and a batch that fails for any other reason is split in
halves, down to single prompts, so only the prompts that really fail are lost.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from typing import Callable

from cai.constitution import Constitution, enabled_principles
from cai.engines.base import Conversation, Engine, PromptRejected
from cai.errors import CaiError
from cai.generation import conversation as conv
from cai.generation.context import ContextGuard, Fitted, Limit, fit_prompts, later_turns_tokens
from cai.generation.loop import BatchResult, LoopConfig, StageHook, run_batch
from cai.generation.prompt_files import PromptRecord
from cai.generation.templates import Templates


@dataclass(frozen=True)
class WorkSpec:
    """What a worker needs to run batches; picklable, so a Ray replica on another node gets all of it."""

    engine: str
    model: str | None            # for resolve_model() where the engine loads (None: the embedded model);
                                 # with the openai engine, the name the server serves
    model_name: str              # what records and the manifest call the model
    engine_options: dict
    constitution: Constitution
    templates: Templates
    loop: LoopConfig
    max_new_tokens: int
    max_prompt_tokens: int | None = None
    on_long: str = "skip"
    retries: int = 1


@dataclass
class BatchOutcome:
    """What became of one batch: the finished parts (unless handed on as they finished) and the failures."""

    results: list[BatchResult] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)      # prompt id -> why


class BatchWorker:
    """load() the engine once, then run() batches on it; close() frees it."""

    def __init__(self, spec: WorkSpec):
        self.spec = spec
        self.engine: Engine | None = None
        self.limit: Limit | None = None

    def load(self) -> dict:
        """Load the engine; returns what the manifest records about it (engine_info, prompt_limit, load time)."""
        from cai.engines.registry import create_engine
        from cai.models import check_memory, resolve_model

        spec, start = self.spec, time.perf_counter()
        if spec.engine == "openai":
            path = spec.model
        else:
            ref = resolve_model(spec.model)
            check_memory(ref, spec.engine_options.get("dtype") or "float32")
            path = ref.path
        self.engine = create_engine(spec.engine, path, **spec.engine_options)
        self.engine.load()
        self.limit = prompt_limit(self.engine, spec)
        return {"engine_info": asdict(self.engine.info()),
                "prompt_limit": {"context": self.limit.context, "max_prompt_tokens": self.limit.tokens},
                "load_seconds": round(time.perf_counter() - start, 2)}

    def run(self, batch: list[PromptRecord], *, on_stage: StageHook | None = None,
            on_result: Callable[[BatchResult], None] | None = None) -> BatchOutcome:
        """Fit the batch to the context, then run it through the loop; each finished part goes to `on_result`
        as soon as it is done (kept in the outcome when there is none)."""
        spec, outcome = self.spec, BatchOutcome()
        fitted = fit_prompts(self.engine, [p.prompt for p in batch], lambda i, text: conv.answer_conversation(
            spec.templates, spec.constitution, text, batch[i].category, spec.loop.few_shot), self.limit, spec.on_long)
        runnable, truncated = [], {}
        for p, f in zip(batch, fitted):
            if isinstance(f, Fitted):
                runnable.append(replace(p, prompt=f.prompt))
                if f.truncated:
                    truncated[p.id] = f.truncated
            else:
                outcome.failures[p.id] = f

        def finished(result: BatchResult) -> None:
            for record in result.records:
                if record["id"] in truncated:
                    record["prompt_truncated"] = truncated[record["id"]]
            (on_result or outcome.results.append)(result)

        guarded = ContextGuard(self.engine)
        outcome.failures.update(run_split(
            lambda part: run_batch(guarded, part, spec.constitution, spec.templates, spec.loop, engine_name=spec.engine,
                                   model_name=spec.model_name, on_stage=on_stage),
            runnable, spec.retries, finished))
        return outcome

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None


def prompt_limit(engine: Engine, spec: WorkSpec) -> Limit:
    """The prompt-token limit of this run: --max-prompt-tokens, or what leaves room for every stage."""
    constitution, templates = spec.constitution, spec.templates
    first = conv.answer_conversation(templates, constitution, "", "", spec.loop.few_shot)
    later: list[Conversation] = []
    enabled = enabled_principles(constitution)
    if enabled:
        longest = max(enabled, key=lambda p: len(p.critique) + len(p.revision))
        for r in range(1, spec.loop.rounds + 1):
            later += [[conv.reply(""), conv.critique_request(templates, longest, r)],
                      [conv.reply(""), conv.revision_request(templates, longest, r)]]
    if spec.max_prompt_tokens is not None and engine.count_tokens([first]) is None:
        raise CaiError(f"--max-prompt-tokens: the {engine.name} engine cannot count tokens here (an OpenAI-compatible "
                       "server without /tokenize); leave it out and the server refuses overlong prompts one by one")
    reserve = later_turns_tokens(engine, first, later, spec.max_new_tokens)
    return Limit(engine.context_length(), reserve, spec.max_prompt_tokens)


def run_split(run_one: Callable[[list[PromptRecord]], BatchResult], batch: list[PromptRecord], retries: int,
              on_result: Callable[[BatchResult], None]) -> dict[str, str]:
    """Run `batch` so that only prompts that really fail are lost; returns {id: reason} of those.

    Each part's result goes to `on_result` as soon as it is done. A prompt the engine refuses
    (PromptRejected) is dropped and the rest runs again. Any other fault splits the batch in halves,
    down to single prompts, and a single prompt gets `retries` more tries. A CaiError (a mistake in
    the setup, not in one prompt) stops the run.
    """
    failed: dict[str, str] = {}
    parts, tries = [list(batch)], 0
    while parts:
        part = parts.pop(0)
        try:
            result = run_one(part)
        except CaiError:
            raise
        except PromptRejected as refused:
            for i, reason in refused.reasons.items():
                failed[part[i].id] = reason
            rest = [p for i, p in enumerate(part) if i not in refused.reasons]
            if rest:
                parts.insert(0, rest)
        except Exception as err:  # an engine fault: narrow it down to the prompts that cause it
            if len(part) > 1:
                half = len(part) // 2
                parts[:0] = [part[:half], part[half:]]
            elif tries < retries:
                tries += 1
                parts.insert(0, part)
            else:
                failed[part[0].id] = f"{type(err).__name__}: {err}"
                tries = 0
        else:
            on_result(result)
            tries = 0
    return failed
