"""The critique -> revise stages over one batch of prompts.

Pure orchestration: each stage is ONE engine call over every conversation in
the batch, so engines can batch (transformers) or schedule continuously (vLLM).
An engine of independent requests (a server pool) instead gets each prompt's
next stage as soon as its reply is back: a stage boundary would leave the
servers idle while the slowest replies of the stage finish. The records are the
same either way. The loop knows nothing about where records go.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Callable

from cai.engines.base import Completion, Conversation, Engine, PromptRejected, SamplingParams
from cai.generation import conversation as conv
from cai.generation.principles import principle_plan
from cai.generation.prompt_files import PromptRecord
from cai.generation.templates import Templates
from cai.text import strip_preamble


@dataclass(frozen=True)
class LoopConfig:
    rounds: int
    seed: int
    params: SamplingParams
    few_shot: int | None = None        # how many of the constitution's dialogues lead each chat


@dataclass
class StageStats:
    """What one engine call cost; the CLI turns these into progress and log lines."""

    stage: str
    prompts: int
    prompt_tokens: int
    completion_tokens: int
    seconds: float


@dataclass
class BatchResult:
    records: list[dict]
    stages: list[StageStats] = field(default_factory=list)
    preambles_stripped: int = 0


StageHook = Callable[[StageStats], None]
_MAX_LANES = 1024                  # prompts of one batch in flight at once on an engine of independent requests


def _call(engine: Engine, stage: str, chats: list[Conversation], params: SamplingParams,
          stats: list[StageStats], on_stage: StageHook | None) -> list[Completion]:
    start = time.perf_counter()
    out = engine.generate(chats, params)
    if len(out) != len(chats):
        raise RuntimeError(f"engine returned {len(out)} completions for {len(chats)} conversations")
    s = StageStats(stage, len(chats), sum(c.prompt_tokens for c in out),
                   sum(c.completion_tokens for c in out), time.perf_counter() - start)
    stats.append(s)
    if on_stage:
        on_stage(s)
    return out


@dataclass
class _Lane:
    """One prompt's conversation on its way through the stages, and what its record will hold."""

    prompt: PromptRecord
    plan: list
    chat: Conversation
    usage: dict = field(default_factory=lambda: {"prompt_tokens": 0, "completion_tokens": 0})
    answer: Completion | None = None
    rounds: list[dict] = field(default_factory=list)
    stripped: int = 0

    def take(self, stage: conv.Stage, out: Completion) -> None:
        """Add the engine's reply to `stage` to the conversation and to the record."""
        self.usage["prompt_tokens"] += out.prompt_tokens
        self.usage["completion_tokens"] += out.completion_tokens
        text, had_preamble = out.text.strip(), False
        if stage.kind == "revise":                 # later rounds see the revision without its preamble
            text, had_preamble = strip_preamble(out.text)
            self.stripped += had_preamble
        self.chat.append(conv.reply(text))
        if stage.kind == "answer":
            self.answer = out
        elif stage.kind == "critique":
            self.rounds.append({"principle_id": self.plan[stage.round - 1].id,
                                "critique_request": self.chat[-2]["content"], "critique": text})
        else:
            self.rounds[-1].update({"revision_request": self.chat[-2]["content"], "revision": text,
                                    "preamble_stripped": had_preamble, "revision_finish": out.finish_reason})

    def record(self, cfg: LoopConfig, engine_name: str, model_name: str) -> dict:
        p, initial = self.prompt, self.answer.text.strip()
        return {
            "id": p.id,
            "prompt": p.prompt,
            "source": p.source,
            "category": p.category,
            "initial_response": initial,
            "initial_finish": self.answer.finish_reason,
            "rounds": self.rounds,
            "final_response": self.rounds[-1]["revision"] if self.rounds else initial,
            "model": model_name,
            "engine": engine_name,
            "seed": cfg.seed,
            "usage": self.usage,
        }


def run_batch(engine: Engine, batch: list[PromptRecord], constitution, templates: Templates,
              cfg: LoopConfig, *, engine_name: str, model_name: str,
              on_stage: StageHook | None = None) -> BatchResult:
    """Answer, then critique and revise `cfg.rounds` times; returns one record per prompt.

    Engines that batch get one call per stage over the whole batch. Engines whose conversations are
    independent requests (servers) get each prompt's stages one after the other, all prompts at once.
    """
    lanes = [_Lane(p, principle_plan(constitution, cfg.rounds, seed=cfg.seed, prompt_id=p.id),
                   conv.answer_conversation(templates, constitution, p.prompt, p.category, cfg.few_shot))
             for p in batch]
    stages = conv.stages(cfg.rounds)
    if getattr(engine, "independent_requests", False) and len(lanes) > 1:
        stats = _run_lanes(engine, lanes, stages, templates, cfg.params, on_stage)
    else:
        stats = []
        for stage in stages:
            for lane in lanes:
                conv.open_stage(lane.chat, templates, stage, lane.plan)
            outs = _call(engine, stage.name, [lane.chat for lane in lanes], cfg.params, stats, on_stage)
            for lane, out in zip(lanes, outs):
                lane.take(stage, out)
    return BatchResult([lane.record(cfg, engine_name, model_name) for lane in lanes], stats,
                       sum(lane.stripped for lane in lanes))


class _Stopped(Exception):
    """Another prompt of the batch failed: this one stops before its next stage."""


def _run_lanes(engine: Engine, lanes: list[_Lane], stages: list[conv.Stage], templates: Templates,
               params: SamplingParams, on_stage: StageHook | None) -> list[StageStats]:
    """Every prompt through its stages in its own thread, so a server never waits at the end of a stage.

    The engine's own limit on requests in flight decides how many run at once. A stage's StageStats is
    reported when the last prompt has passed it; its seconds run from the previous stage's report, so
    they add up to the batch's time. A prompt the engine refuses fails alone (PromptRejected names every
    refused one); any other failure stops the rest before their next stage and is raised.
    """
    lock, stop = threading.Lock(), threading.Event()
    passed = {s.name: [0, 0, 0] for s in stages}          # per stage: prompts through it, prompt and completion tokens
    stats: list[StageStats] = []
    last = [time.perf_counter()]

    def run(lane: _Lane) -> None:
        for stage in stages:
            if stop.is_set():
                raise _Stopped()
            conv.open_stage(lane.chat, templates, stage, lane.plan)
            out = engine.generate([lane.chat], params)
            if len(out) != 1:
                raise RuntimeError(f"engine returned {len(out)} completions for 1 conversation")
            lane.take(stage, out[0])
            with lock:
                tally = passed[stage.name]
                tally[0] += 1
                tally[1] += out[0].prompt_tokens
                tally[2] += out[0].completion_tokens
                if tally[0] == len(lanes):
                    now = time.perf_counter()
                    stats.append(StageStats(stage.name, len(lanes), tally[1], tally[2], now - last[0]))
                    last[0] = now
                    if on_stage:
                        on_stage(stats[-1])

    pool = ThreadPoolExecutor(max_workers=min(len(lanes), _MAX_LANES), thread_name_prefix="cai-lane")
    try:
        futures = [pool.submit(run, lane) for lane in lanes]
        for future in as_completed(futures):
            error = future.exception()
            if error is not None and not isinstance(error, (PromptRejected, _Stopped)):
                stop.set()
    finally:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
    errors = [f.exception() for f in futures]
    failure = next((e for e in errors if e is not None and not isinstance(e, (PromptRejected, _Stopped))), None)
    if failure is not None:
        raise failure
    refused = {i: "; ".join(e.reasons.values()) for i, e in enumerate(errors) if isinstance(e, PromptRejected)}
    if refused:
        raise PromptRejected(refused)
    return stats
