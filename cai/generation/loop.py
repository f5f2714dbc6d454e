"""The critique -> revise stages over one batch of prompts.

Pure orchestration: each stage is ONE engine call over every conversation in
the batch, so engines can batch (transformers) or schedule continuously (vLLM).
The loop knows nothing about which engine runs or where records go.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from cai.engines.base import Completion, Conversation, Engine, SamplingParams
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


def run_batch(engine: Engine, batch: list[PromptRecord], constitution, templates: Templates,
              cfg: LoopConfig, *, engine_name: str, model_name: str,
              on_stage: StageHook | None = None) -> BatchResult:
    """Answer, then critique and revise `cfg.rounds` times; returns one record per prompt."""
    stats: list[StageStats] = []
    usage = [{"prompt_tokens": 0, "completion_tokens": 0} for _ in batch]
    plans = [principle_plan(constitution, cfg.rounds, seed=cfg.seed, prompt_id=p.id) for p in batch]
    chats = [conv.answer_conversation(templates, constitution, p.prompt, p.category, cfg.few_shot) for p in batch]
    answers: list[Completion] = []
    rounds: list[list[dict]] = [[] for _ in batch]
    stripped = 0
    for stage in conv.stages(cfg.rounds):
        for chat, plan in zip(chats, plans):
            conv.open_stage(chat, templates, stage, plan)
        outs = _call(engine, stage.name, chats, cfg.params, stats, on_stage)
        for u, c in zip(usage, outs):
            u["prompt_tokens"] += c.prompt_tokens
            u["completion_tokens"] += c.completion_tokens
        for i, (chat, out) in enumerate(zip(chats, outs)):
            text, had_preamble = out.text.strip(), False
            if stage.kind == "revise":             # later rounds see the revision without its preamble
                text, had_preamble = strip_preamble(out.text)
                stripped += had_preamble
            chat.append(conv.reply(text))
            if stage.kind == "answer":
                answers.append(out)
            elif stage.kind == "critique":
                rounds[i].append({"principle_id": plans[i][stage.round - 1].id,
                                  "critique_request": chat[-2]["content"], "critique": text})
            else:
                rounds[i][-1].update({"revision_request": chat[-2]["content"], "revision": text,
                                      "preamble_stripped": had_preamble, "revision_finish": out.finish_reason})

    records = []
    for i, p in enumerate(batch):
        initial = answers[i].text.strip()
        records.append({
            "id": p.id,
            "prompt": p.prompt,
            "source": p.source,
            "category": p.category,
            "initial_response": initial,
            "initial_finish": answers[i].finish_reason,
            "rounds": rounds[i],
            "final_response": rounds[i][-1]["revision"] if rounds[i] else initial,
            "model": model_name,
            "engine": engine_name,
            "seed": cfg.seed,
            "usage": usage[i],
        })
    return BatchResult(records, stats, stripped)
