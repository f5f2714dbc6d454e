"""`cai generate --ray`: batches run on Ray replicas, each a `BatchWorker` actor holding one loaded engine.

The driver (the `cai generate` process) hands out batches of prompts in file
order and writes each replica's records as they arrive, into the same run
directory as a local run, under the same lock: a run can be resumed with or
without `--ray`. A replica that dies is replaced (`cai.cluster.ReplicaPool`);
the batch it was running is split in halves and run again, and a single prompt
whose replica dies more than `--retries` times is recorded as failed with the
reason, so one prompt that crashes the engine cannot loop forever.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

from cai import cluster
from cai.generation.config import GenerateConfig
from cai.generation.prompt_files import PromptRecord
from cai.generation.worker import BatchOutcome, BatchWorker, WorkSpec


class ReplicaWorker(BatchWorker):
    """The BatchWorker as a Ray actor: its load() also says where it runs."""

    def load(self) -> dict:
        return {**cluster.replica_place(), **super().load()}

    def run(self, batch: list[PromptRecord]) -> BatchOutcome:        # results travel back with the outcome
        return super().run(batch)


@dataclass
class Attempt:
    """A batch on its way to a replica, with how many replicas died running it."""

    batch: list[PromptRecord]
    deaths: int = 0


class RayBatches:
    """Where batches run in a Ray run: attach and size up the cluster at once, start() the replicas, run() the
    batches, describe() them, close()."""

    worker: type[ReplicaWorker] = ReplicaWorker       # the actor class of a replica

    def __init__(self, spec: WorkSpec, cfg: GenerateConfig, note: Callable[[str], None]):
        self.address = cluster.connect(cfg.ray, verbose=cfg.verbose)
        gpus = cfg.gpus_per_replica
        if gpus is None:                 # a replica holds what its engine spreads over; nothing on a CPU cluster
            gpus = cfg.tensor_parallel_size * cfg.data_parallel_size if cluster.cluster_gpus() else 0
        fit = cluster.replicas_that_fit(cfg.cpus_per_replica, gpus)
        self.replicas = cfg.replicas or max(fit, 1)
        self.fit, self.gpus, self.cpus = fit, gpus, cfg.cpus_per_replica
        self.spec, self.retries, self.note = spec, cfg.retries, note
        self.pool: cluster.ReplicaPool | None = None

    def start(self) -> dict:
        """Start the replicas and wait for the first to load; returns what it said (engine_info, prompt_limit, ...)."""
        if self.replicas > self.fit:
            self.note(f"[yellow]{self.replicas} replicas asked for; {self.fit} fit the Ray cluster now[/yellow] "
                      "(the others start when it has room)")
        self.note(f"starting {self.replicas} {self.spec.engine} replicas on the Ray cluster at {self.address} "
                  f"({self.cpus:g} CPUs, {self.gpus:g} GPUs each) ...")
        self.pool = cluster.ReplicaPool(self.worker, (self.spec,), replicas=self.replicas, cpus=self.cpus,
                                        gpus=self.gpus, on_note=self.note)
        self.pool.wait_loaded()
        return next(r.info for r in self.pool.replicas if r.loading is None)

    @property
    def live(self) -> int:
        return self.pool.live

    def run(self, batches: Iterator[list[PromptRecord]], writer) -> None:
        """Every batch through a replica; `writer.write(batch, outcome)` as each comes back."""
        def died(attempt: Attempt, reason: str) -> list[Attempt]:
            batch = attempt.batch
            if len(batch) > 1:
                half = len(batch) // 2
                return [Attempt(batch[:half]), Attempt(batch[half:])]
            if attempt.deaths < self.retries:
                return [Attempt(batch, attempt.deaths + 1)]
            writer.write(batch, BatchOutcome(failures={batch[0].id: (
                f"the Ray replica running it died {attempt.deaths + 1} times (last: {reason})")}), live=self.pool.live)
            return []

        self.pool.run((Attempt(b) for b in batches), lambda actor, a: actor.run.remote(a.batch),
                      lambda a, outcome: writer.write(a.batch, outcome, live=self.pool.live), died)

    def batch_size(self, given: int) -> int:
        return given

    def engine_info(self) -> None:
        """None: the manifest keeps what the replicas' engines reported when they loaded."""
        return None

    def describe(self) -> dict | None:
        """The manifest's `ray` entry: the cluster, its nodes and the replicas that ran."""
        if self.pool is None:
            return None
        per_run = ("engine_info", "prompt_limit")          # the same for every replica: in the manifest once
        return {"address": self.address, "replicas_requested": self.pool.requested,
                "replicas_started": self.pool.started, "deaths": len(self.pool.deaths),
                "replicas": [{k: v for k, v in r.items() if k not in per_run} for r in self.pool.described()],
                "nodes": [vars(n) for n in cluster.nodes()]}

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
