"""An engine spread over Ray: replicas each hold a loaded copy of a real engine, and every call is split over them.

The AI-feedback judge (`cai data pairs --strategy ai-feedback`, `--verify judge`)
makes many independent calls, so `--ray` wraps the judge engine in a
`ReplicatedEngine`: the conversations of each `generate` or `label_logprobs`
call are cut into one chunk per replica, run at once, and put back in order.
The caller sees an ordinary engine. A replica that dies is replaced and its
chunk split and run again; a single conversation whose replica dies twice
stops the job with the reason (a judge has no failed.jsonl to put it in).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from cai import cluster
from cai.engines.base import Completion, Conversation, Engine, EngineInfo, SamplingParams
from cai.errors import CaiError, SettingError


class EngineReplica:
    """One Ray actor holding one loaded engine."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def load(self) -> dict:
        self.engine.load()
        return {**cluster.replica_place(), "context_length": self.engine.context_length(),
                "engine_info": asdict(self.engine.info())}

    def generate(self, conversations: list[Conversation], params: SamplingParams) -> list[Completion]:
        return self.engine.generate(conversations, params)

    def label_logprobs(self, conversations: list[Conversation], labels: list[str]) -> list[list[float]]:
        return self.engine.label_logprobs(conversations, labels)

    def count_tokens(self, conversations: list[Conversation]) -> list[int] | None:
        return self.engine.count_tokens(conversations)


@dataclass
class _Chunk:
    start: int
    conversations: list[Conversation]
    deaths: int = 0


class ReplicatedEngine(Engine):
    """`engine` (built, not loaded) on Ray replicas, per `settings` (a `cai.cluster.RaySettings`)."""

    def __init__(self, engine: Engine, settings: cluster.RaySettings, *, verbose: bool = False):
        if engine.name == "openai":
            raise SettingError("ray", cluster.ON_SERVER)
        self.inner = engine
        self.name = engine.name
        self.model_path = getattr(engine, "model_path", "")
        self.settings = settings
        self.verbose = verbose
        self.pool: cluster.ReplicaPool | None = None

    def load(self) -> None:
        s = self.settings
        cluster.connect(s.ray, verbose=self.verbose)
        gpus = s.gpus_per_replica
        if gpus is None:
            gpus = getattr(self.inner, "tensor_parallel_size", 1) if cluster.cluster_gpus() else 0
        replicas = s.replicas or max(cluster.replicas_that_fit(s.cpus_per_replica, gpus), 1)
        self.pool = cluster.ReplicaPool(EngineReplica, (self.inner,), replicas=replicas, cpus=s.cpus_per_replica,
                                        gpus=gpus)
        self.pool.wait_loaded()

    def generate(self, conversations: list[Conversation], params: SamplingParams) -> list[Completion]:
        return self._spread("generate", conversations, params)

    def label_logprobs(self, conversations: list[Conversation], labels: list[str]) -> list[list[float]]:
        return self._spread("label_logprobs", conversations, labels)

    def _spread(self, method: str, conversations: list[Conversation], argument: Any) -> list:
        """One chunk of the conversations per replica, run at once; the results in the conversations' order."""
        out: list = [None] * len(conversations)
        size = -(-len(conversations) // max(self.pool.requested, 1)) or 1
        chunks = (_Chunk(i, conversations[i:i + size]) for i in range(0, len(conversations), size))

        def done(chunk: _Chunk, result: list) -> None:
            out[chunk.start:chunk.start + len(result)] = result

        def died(chunk: _Chunk, reason: str) -> list[_Chunk]:
            if len(chunk.conversations) > 1:
                half = len(chunk.conversations) // 2
                return [_Chunk(chunk.start, chunk.conversations[:half]),
                        _Chunk(chunk.start + half, chunk.conversations[half:])]
            if chunk.deaths < 1:
                return [_Chunk(chunk.start, chunk.conversations, chunk.deaths + 1)]
            raise CaiError(f"{self.name} judge: the Ray replica running one conversation died twice (last: {reason})")

        self.pool.run(chunks, lambda actor, c: getattr(actor, method).remote(c.conversations, argument), done, died)
        return out

    def context_length(self) -> int | None:
        live = self._first_live()
        return live.info.get("context_length") if live else None

    def count_tokens(self, conversations: list[Conversation]) -> list[int] | None:
        live = self._first_live()
        return cluster.ReplicaPool.get(live.handle.count_tokens.remote(conversations)) if live else None

    def _first_live(self):
        return next((r for r in self.pool.replicas if r.loading is None), None) if self.pool else None

    def info(self) -> EngineInfo:
        inner = self._first_live().info["engine_info"] if self._first_live() else asdict(self.inner.info())
        return EngineInfo(inner["name"], inner["model"], {**inner["extra"], "ray_replicas": self.pool.described()
                                                          if self.pool else []})

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool = None
