"""`cai generate`: answer prompts, then critique and revise them under a constitution."""

from __future__ import annotations

from typing import List, Optional

import typer

from cai.cli import tables
from cai.cli.options import BareRay, option
from cai.generation.config import GenerateConfig
from cai.judging.settings import JudgeSettings


def register(root: typer.Typer) -> None:
    root.command(cls=BareRay,
                 help="Answer prompts with a local model, then critique and revise under a constitution.")(generate)


def generate(
    constitution: str = option(GenerateConfig, "constitution", "--constitution", "-c"),
    prompts: str = option(GenerateConfig, "prompts"),
    prompt_column: Optional[str] = option(GenerateConfig, "prompt_column"),
    model: Optional[str] = option(GenerateConfig, "model"),
    engine: str = option(GenerateConfig, "engine"),
    rounds: Optional[int] = option(GenerateConfig, "rounds"),
    out: Optional[str] = option(GenerateConfig, "out"),
    seed: int = option(GenerateConfig, "seed"),
    max_new_tokens: int = option(GenerateConfig, "max_new_tokens"),
    temperature: float = option(GenerateConfig, "temperature"),
    top_p: float = option(GenerateConfig, "top_p"),
    limit: Optional[int] = option(GenerateConfig, "limit"),
    shard: Optional[str] = option(GenerateConfig, "shard"),
    batch_size: int = option(GenerateConfig, "batch_size"),
    few_shot: Optional[int] = option(GenerateConfig, "few_shot"),
    prompts_dir: Optional[str] = option(GenerateConfig, "prompts_dir"),
    chat_template: Optional[str] = option(GenerateConfig, "chat_template"),
    dtype: Optional[str] = option(GenerateConfig, "dtype"),
    max_prompt_tokens: Optional[int] = option(GenerateConfig, "max_prompt_tokens"),
    on_long: str = option(GenerateConfig, "on_long"),
    retry_failed: bool = option(GenerateConfig, "retry_failed", "--retry-failed/--no-retry-failed"),
    max_batch_tokens: Optional[int] = option(GenerateConfig, "max_batch_tokens"),
    verbose: bool = option(GenerateConfig, "verbose"),
    force_new: bool = option(GenerateConfig, "force_new"),
    quiet: bool = option(GenerateConfig, "quiet"),
    pairs: bool = option(GenerateConfig, "pairs", "--pairs/--no-pairs"),
    strategy: str = option(GenerateConfig, "strategy"),
    tensor_parallel_size: int = option(GenerateConfig, "tensor_parallel_size"),
    data_parallel_size: int = option(GenerateConfig, "data_parallel_size"),
    enforce_eager: Optional[bool] = option(GenerateConfig, "enforce_eager", "--enforce-eager/--compile"),
    base_url: Optional[List[str]] = option(GenerateConfig, "base_url"),
    concurrency: Optional[int] = option(GenerateConfig, "concurrency"),
    judge_engine: Optional[str] = option(JudgeSettings, "judge_engine"),
    judge_base_url: Optional[str] = option(JudgeSettings, "judge_base_url"),
    judge_model: Optional[str] = option(JudgeSettings, "judge_model"),
    ray: Optional[str] = option(GenerateConfig, "ray", metavar="[ADDRESS]"),
    replicas: Optional[int] = option(GenerateConfig, "replicas"),
    gpus_per_replica: Optional[float] = option(GenerateConfig, "gpus_per_replica"),
    cpus_per_replica: float = option(GenerateConfig, "cpus_per_replica"),
) -> None:
    # The judge flags are the pairs step's (--strategy ai-feedback), checked before any model loads.
    judge = JudgeSettings(judge_engine=judge_engine, judge_base_url=judge_base_url, judge_model=judge_model)
    cfg = GenerateConfig(**{k: v for k, v in locals().items() if not k.startswith("judge")})
    if cfg.pairs:
        from cai.config import one_of
        from cai.preferences.strategies import STRATEGIES

        one_of("strategy", cfg.strategy, STRATEGIES, "strategy")
    import json
    from dataclasses import asdict

    from cai.generation.job import run

    summary = run(cfg)
    if cfg.quiet:
        typer.echo(json.dumps({"event": "summary", **asdict(summary),
                               "tokens_per_second": round(summary.tokens_per_second, 1)}))
    else:
        tables.console().print(tables.generation(summary))
    if cfg.pairs and summary.records > 0:
        from cai.cli.data import build_pairs
        from cai.preferences.config import PairsConfig

        build_pairs(PairsConfig(run=summary.run, strategy=cfg.strategy, seed=cfg.seed, **asdict(judge)))
