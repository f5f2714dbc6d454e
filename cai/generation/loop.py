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
from cai.generation.principles import sample_principles
from cai.generation.prompt_files import PromptRecord
from cai.generation.templates import Templates
from cai.text import strip_preamble


@dataclass(frozen=True)
class LoopConfig:
    rounds: int
    seed: int
    params: SamplingParams
    strategy: str = "uniform"
    no_repeat: bool = True
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


def stage_names(rounds: int) -> list[str]:
    return ["answer"] + [f"{kind} r{r}" for r in range(1, rounds + 1) for kind in ("critique", "revise")]


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
    principles = {p.id: p for p in constitution.principles}
    enabled = [p for p in constitution.principles if p.enabled]
    stats: list[StageStats] = []
    usage = [{"prompt_tokens": 0, "completion_tokens": 0} for _ in batch]

    def account(outs: list[Completion]) -> None:
        for u, c in zip(usage, outs):
            u["prompt_tokens"] += c.prompt_tokens
            u["completion_tokens"] += c.completion_tokens

    chats = [conv.answer_conversation(templates, constitution, p.prompt, p.category, cfg.few_shot) for p in batch]
    answers = _call(engine, "answer", chats, cfg.params, stats, on_stage)
    account(answers)
    for chat, a in zip(chats, answers):
        chat.append(conv.reply(a.text.strip()))

    draws = [sample_principles(enabled, cfg.rounds, seed=cfg.seed, strategy=cfg.strategy,
                               no_repeat=cfg.no_repeat, key=p.id) for p in batch]
    rounds: list[list[dict]] = [[] for _ in batch]
    stripped = 0
    for r in range(1, cfg.rounds + 1):
        picked = [principles[d[r - 1]] for d in draws]
        for chat, principle in zip(chats, picked):
            chat.append(conv.critique_request(templates, principle, r))
        critiques = _call(engine, f"critique r{r}", chats, cfg.params, stats, on_stage)
        account(critiques)
        for chat, principle, c in zip(chats, picked, critiques):
            chat.append(conv.reply(c.text.strip()))
            chat.append(conv.revision_request(templates, principle, r))
        revisions = _call(engine, f"revise r{r}", chats, cfg.params, stats, on_stage)
        account(revisions)
        for i, (chat, principle, c, rev) in enumerate(zip(chats, picked, critiques, revisions)):
            text, had_preamble = strip_preamble(rev.text)
            stripped += had_preamble
            chat.append(conv.reply(text))
            rounds[i].append({
                "principle_id": principle.id,
                "critique_request": chat[-4]["content"],
                "critique": c.text.strip(),
                "revision_request": chat[-2]["content"],
                "revision": text,
                "preamble_stripped": had_preamble,
                "revision_finish": rev.finish_reason,
            })

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
