"""The judge engine, built from its settings, and the cache and counts around it.

`create_judge_engine` is the one place a judge engine is made from a `JudgeSpec`
(every job that judges goes through it). `Judge` wraps any engine that reads
label log-probabilities: it answers from the cache what was asked before, asks
the engine the rest, stores each answer as it arrives and counts requests, cache
hits, floored labels and failures for the job's summary.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from cai.engines.base import Conversation, LabelRead
from cai.errors import CaiError
from cai.judging.cache import JudgeCache, cache_key
from cai.judging.settings import SERVER, JudgeSpec, api_key


def create_judge_engine(spec: JudgeSpec, **options):
    """The engine of a resolved judge (not loaded): a server client or a local model, `options` to its engine."""
    from cai.engines.registry import create_engine

    if spec.engine == SERVER:
        from cai.engines.openai_server import OpenAIEngine

        return OpenAIEngine(spec.model, base_url=spec.base_url, api_key=api_key(), **options)
    from cai.models import resolve_model

    return create_engine(spec.engine, resolve_model(spec.model).path, **options)


@dataclass
class JudgeStats:
    """What the judge did in one job: answers from the cache, requests made, floored labels, failures."""

    judge: str
    cache_hits: int = 0
    requests: int = 0
    floored: int = 0
    failed: int = 0
    cache: str | None = None

    def line(self) -> str:
        extra = [f"{self.floored} with a label outside the server's top log-probabilities (floored)"
                 if self.floored else "", f"{self.failed} failed" if self.failed else ""]
        return (f"judge {self.judge}: {self.requests} requests, {self.cache_hits} answers from the cache"
                + "".join(f", {e}" for e in extra if e))

    def to_dict(self) -> dict:
        return asdict(self)


class Judge:
    """An engine's label log-probabilities through the cache; engine-like (`label_reads`, `label_logprobs`)."""

    def __init__(self, engine, *, model_key: str, cache: JudgeCache | None = None, describe: str | None = None):
        self.engine = engine
        self.model_key = model_key
        self.cache = cache
        self.stats = JudgeStats(describe or model_key, cache=str(cache.path) if cache else None)
        self._lock = threading.Lock()

    def label_reads(self, conversations: list[Conversation], labels: list[str], on_result=None) -> list[LabelRead]:
        """Reads from the cache, the rest from the engine (stored as each arrives); `on_result(i, read)` as
        each conversation's read is known."""
        keys = [cache_key(self.model_key, c, labels) for c in conversations]
        reads: dict[str, LabelRead] = {}
        if self.cache is not None:
            reads = {k: r for k in keys if (r := self.cache.get(k)) is not None}
        asked = list(dict.fromkeys(k for k in keys if k not in reads))       # a question asked twice: one request
        self.stats.cache_hits += sum(1 for k in keys if k in reads)
        self.stats.requests += len(asked)
        positions: dict[str, list[int]] = {}
        for i, k in enumerate(keys):
            positions.setdefault(k, []).append(i)
        if on_result is not None:
            for k, read in reads.items():
                for i in positions[k]:
                    on_result(i, read)
        if asked:
            def keep(j: int, read: LabelRead) -> None:
                if self.cache is not None:
                    self.cache.put(asked[j], read)
                if on_result is not None:
                    for i in positions[asked[j]]:
                        on_result(i, read)

            fresh = engine_label_reads(self.engine, [conversations[positions[k][0]] for k in asked], labels, keep)
            reads.update(zip(asked, fresh))
        out = [reads[k] for k in keys]
        with self._lock:
            self.stats.floored += sum(1 for r in out if r.floored)
            self.stats.failed += sum(1 for r in out if r.error is not None)
        return out

    def label_logprobs(self, conversations: list[Conversation], labels: list[str]) -> list[list[float]]:
        reads = self.label_reads(conversations, labels)
        for read in reads:
            if read.error is not None:
                raise CaiError(f"judge {self.stats.judge}: {read.error}")
        return [list(r.logprobs) for r in reads]


def engine_label_reads(engine, conversations: list[Conversation], labels: list[str], on_result=None) -> list[LabelRead]:
    """`engine.label_reads`, or its `label_logprobs` as reads for engine-like objects without it."""
    if hasattr(engine, "label_reads"):
        return engine.label_reads(conversations, labels, on_result=on_result)
    reads = [LabelRead(tuple(row)) for row in engine.label_logprobs(conversations, labels)]
    if on_result is not None:
        for i, read in enumerate(reads):
            on_result(i, read)
    return reads


def judge_key(spec: JudgeSpec, engine) -> str:
    """The model a cached answer belongs to: the name a server serves it under, else the local engine, model
    path and the sizes and times of its files (weights rewritten in place make another judge).

    Not the server's URL: a server restarted on another port still has its answers.
    """
    if spec.engine == SERVER:
        return spec.model
    path = Path(str(getattr(engine, "model_path", spec.model)))
    files = sorted(f for f in path.iterdir() if f.is_file()) if path.is_dir() else [path] if path.exists() else []
    stamp = ",".join(f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files)
    return f"{spec.engine}:{path}:{stamp}"


def cached_judge(engine, spec: JudgeSpec, cache_dir: str | Path | None) -> Judge:
    """A Judge around a loaded `engine` (of `spec`), its answers kept in `cache_dir`/judge-cache.jsonl (None: no
    cache)."""
    from cai.judging.cache import FILE_NAME

    cache = JudgeCache(Path(cache_dir) / FILE_NAME) if cache_dir is not None else None
    return Judge(engine, model_key=judge_key(spec, engine), cache=cache, describe=spec.describe())


@contextmanager
def open_judge(spec: JudgeSpec, *, cache_dir: str | Path | None = None, ray=None, **options):
    """A loaded, cached Judge for a resolved spec (see `cached_judge`); the engine is closed on the way out.

    `ray` (a `cai.cluster.RaySettings`, or None) spreads the judge's calls over Ray replicas of its engine.
    """
    engine = create_judge_engine(spec, **options)
    if ray is not None:
        from cai.engines.replicated import ReplicatedEngine

        engine = ReplicatedEngine(engine, ray)
    engine.load()
    try:
        yield cached_judge(engine, spec, cache_dir)
    finally:
        engine.close()
