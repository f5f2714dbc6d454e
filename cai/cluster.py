"""Ray, the cluster cai scales out on: attach to it, check a replica fits, and keep replicas busy.

`cai generate --ray` and the judge of `cai data pairs --ray` run the same way:
N replicas (Ray actors), each holding one loaded engine, are handed work items
one at a time; results come back to the driver as they finish. Ray does the
scheduling, placement, transport and failure detection; this module only
decides what to do with its answers:

- a replica that dies (its process killed, its node gone) is replaced by a new
  actor, and the item it was running goes back to the caller's `on_death`,
  which splits or retries it (a prompt that kills replicas again and again
  ends up failed instead of looping);
- an error raised inside a replica (a CaiError: a bad model path, a bad
  template) stops the run with its one line, as it would locally.

Ray is imported only here and only when `--ray` is given: `cai --help` and
local runs never load it.
"""

from __future__ import annotations

import os
import re
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Iterator, TypeVar

from cai.config import at_least, setting
from cai.errors import CaiError, SettingError

RAY_INSTALL = "pip install -e '.[ray]'"
LOCAL = "local"                  # a bare `--ray`: RAY_ADDRESS, else a cluster on this machine, else a new one
LOAD_DEATHS = 3                  # replicas dying while loading, in a row, before the run gives up
CONNECT_SECONDS = 5.0            # a host:port that does not accept a connection by then is unreachable
ON_SERVER = "the openai engine runs on its server, not in Ray replicas: leave --ray out"


@dataclass(kw_only=True)
class RaySettings:
    """Where and how wide a job runs on Ray (a base of the settings classes of the jobs that can)."""

    ray: str | None = setting(None, "Run on a Ray cluster: --ray HOST:PORT (or ray://HOST:PORT, auto) attaches to "
                                    "one; a bare --ray uses RAY_ADDRESS, else starts a local cluster.")
    replicas: int | None = setting(None, "--ray: engine replicas (default: as many as the cluster holds).")
    gpus_per_replica: float | None = setting(None, "--ray: GPUs each replica holds (default: the tensor-parallel "
                                                   "size on a cluster with GPUs, else 0).")
    cpus_per_replica: float = setting(1, "--ray: CPU cores each replica holds (on a CPU, its engine's threads).")

    def __post_init__(self) -> None:
        parent = getattr(super(), "__post_init__", None)
        if parent:                                   # settings classes that also derive from another one
            parent()
        at_least("replicas", self.replicas, 1)
        at_least("gpus_per_replica", self.gpus_per_replica, 0)
        if self.cpus_per_replica <= 0:
            raise SettingError("cpus_per_replica", f"must be above 0, got {self.cpus_per_replica:g}")
        if self.ray is None:
            for name in ("replicas", "gpus_per_replica"):
                if getattr(self, name) is not None:
                    raise SettingError(name, "applies only with --ray")


# --- attaching ---------------------------------------------------------------------------

def connect(address: str, *, verbose: bool = False) -> str:
    """Attach this process to the Ray cluster `address` (LOCAL: Ray's default) and return the cluster's address.

    A process already attached (a test, a notebook that called `ray.init`) keeps its cluster.
    """
    ray = _ray()
    if ray.is_initialized():
        current = ray.get_runtime_context().gcs_address
        if address not in (LOCAL, "auto", current):
            raise SettingError("ray", f"{address}: this process is attached to the Ray cluster at {current} already")
        return current
    target = None if address == LOCAL else address
    _check_reachable(target or os.environ.get("RAY_ADDRESS"), "" if target else "RAY_ADDRESS=")
    try:
        ray.init(address=target, log_to_driver=verbose, logging_level="INFO" if verbose else "WARNING")
    except (ConnectionError, ValueError, RuntimeError, TimeoutError) as err:
        raise SettingError("ray", f"{address}: cannot attach to a Ray cluster: {_first_line(err)}") from None
    return ray.get_runtime_context().gcs_address


def _ray():
    try:
        import ray
    except ImportError:
        raise SettingError("ray", f"needs the ray package: {RAY_INSTALL}") from None
    return ray


def _check_reachable(address: str | None, named: str = "") -> None:
    """Ray keeps retrying an address that does not answer for minutes: refuse one that does not accept a connection.

    Only plain HOST:PORT addresses are checked here; `auto` and `ray://` ones are left to Ray. `named` is how
    the error shows where the address came from (`RAY_ADDRESS=` for the environment variable).
    """
    if not address or address == "auto" or "://" in address:
        return
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise SettingError("ray", f"{named}{address}: expected HOST:PORT (e.g. 10.0.0.1:6379), ray://HOST:PORT "
                                  "or auto")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_SECONDS).close()
    except OSError as err:
        why = err.strerror or type(err).__name__
        raise SettingError("ray", f"{named}{address}: no Ray cluster answers there ({why.lower()})") from None


# --- what the cluster holds ------------------------------------------------------------

@dataclass(frozen=True)
class Node:
    address: str
    cpus: float
    gpus: float


def nodes() -> list[Node]:
    """The live nodes of the attached cluster."""
    return [Node(n["NodeManagerAddress"], n["Resources"].get("CPU", 0.0), n["Resources"].get("GPU", 0.0))
            for n in _ray().nodes() if n.get("Alive")]


def cluster_gpus() -> float:
    return sum(n.gpus for n in nodes())


def replicas_that_fit(cpus: float, gpus: float) -> int:
    """How many replicas of this size the cluster's nodes hold now; a size no node holds is a SettingError."""
    live = nodes()
    for field_name, need, have in (("gpus_per_replica", gpus, [n.gpus for n in live]),
                                   ("cpus_per_replica", cpus, [n.cpus for n in live])):
        if need and need > max(have, default=0):
            what = "GPUs" if field_name.startswith("gpus") else "CPUs"
            raise SettingError(field_name, f"a replica needs {need:g} {what}, but no node of the Ray cluster has "
                                           f"that many (the largest has {max(have, default=0):g}; "
                                           f"{sum(have):g} in all on {len(live)} nodes)")
    return sum(min(int(n.cpus // cpus) if cpus else 1 << 30, int(n.gpus // gpus) if gpus else 1 << 30)
               for n in live)


# --- replicas ---------------------------------------------------------------------------

T = TypeVar("T")


@dataclass
class Replica:
    """One actor of the pool and what it told about itself when it loaded."""

    index: int
    handle: Any
    loading: Any = None                    # the ObjectRef of its load() call until it answers
    info: dict = field(default_factory=dict)
    busy: bool = False
    died: str | None = None                # why, once it has


class ReplicaPool(Generic[T]):
    """`replicas` actors of `actor_class` (built with `args`), each given one work item at a time.

    The actor class has `load() -> dict` (what it is and where it runs, for the manifest) and the method
    that `submit` calls. close() kills the actors.
    """

    def __init__(self, actor_class: type, args: tuple, *, replicas: int, cpus: float, gpus: float,
                 on_note: Callable[[str], None] | None = None):
        ray = _ray()
        self._class = ray.remote(actor_class).options(num_cpus=cpus, num_gpus=gpus, max_restarts=0,
                                                      max_task_retries=0)
        self._args = args
        self.requested = replicas
        self.replicas: list[Replica] = []      # the live and loading ones
        self.loaded: list[Replica] = []        # every replica that loaded, dead ones too
        self.started = 0
        self.deaths: list[str] = []
        self._load_deaths = 0
        self._note = on_note or (lambda text: None)
        for _ in range(replicas):
            self._start()

    def close(self) -> None:
        ray = _ray()
        for r in self.replicas:
            ray.kill(r.handle, no_restart=True)
        self.replicas = []

    @property
    def live(self) -> int:
        return sum(1 for r in self.replicas if r.loading is None)

    def described(self) -> list[dict]:
        """Every replica that loaded, as its load() told it (node, pid, GPUs, ...) and why it died if it did."""
        return [{"replica": r.index, **r.info, "died": r.died} for r in self.loaded]

    def _start(self) -> None:
        handle = self._class.remote(*self._args)
        self.replicas.append(Replica(self.started, handle, loading=handle.load.remote()))
        self.started += 1

    def _lost(self, replica: Replica, err: Exception) -> str:
        """Forget a dead replica, start another in its place; returns why it died."""
        _ray().kill(replica.handle, no_restart=True)
        self.replicas.remove(replica)
        reason = replica.died = death_reason(err)
        self.deaths.append(reason)
        self._note(f"[yellow]replica {replica.index} died[/yellow] ({reason}); starting another")
        self._start()
        return reason

    def wait_loaded(self) -> None:
        """Block until at least one replica has loaded (its first load error, if any, is raised)."""
        while not self.live:
            self._settle(self._next_ready([r.loading for r in self.replicas]))

    def run(self, items: Iterator[T], submit: Callable[[Any, T], Any], on_done: Callable[[T, Any], None],
            on_death: Callable[[T, str], list[T]]) -> None:
        """Hand `items` to idle replicas (`submit(actor, item)` returns the call's ObjectRef) until all are done.

        `on_done(item, result)` gets each result as it arrives, in the driver's thread. When a replica
        dies while running an item, `on_death(item, reason)` returns the items to run instead (the item
        itself, its halves, or none when the caller gives up on it).
        """
        retry: deque[T] = deque()
        running: dict[Any, tuple[Replica, T]] = {}
        exhausted = False

        def fill() -> None:
            """Give every idle, loaded replica its next item: one handed back first, else a new one."""
            nonlocal exhausted
            for replica in self.replicas:
                if replica.loading is not None or replica.busy:
                    continue
                item = retry.popleft() if retry else None
                if item is None and not exhausted:
                    item = next(items, None)
                    exhausted = item is None
                if item is None:
                    return
                replica.busy = True
                running[submit(replica.handle, item)] = (replica, item)

        while True:
            fill()
            if not running and exhausted and not retry:
                return
            ref = self._next_ready(list(running) + [r.loading for r in self.replicas if r.loading is not None])
            if ref not in running:
                self._settle(ref)
                continue
            replica, item = running.pop(ref)
            replica.busy = False
            try:
                result = self.get(ref)
            except _ray().exceptions.RayActorError as err:
                retry.extendleft(reversed(on_death(item, self._lost(replica, err))))
                continue
            fill()                      # the replica gets its next item before this one is written down
            on_done(item, result)

    def _next_ready(self, refs: list) -> Any:
        if not refs:
            raise CaiError("every Ray replica has died and none can be started; rerun the same command to resume")
        ready, _ = _ray().wait(refs, num_returns=1)
        return ready[0]

    def _settle(self, ref) -> None:
        """A replica's load() answered: it is live now, or it died loading (three in a row stop the run)."""
        replica = next(r for r in self.replicas if r.loading == ref)
        try:
            replica.info = self.get(ref)
        except _ray().exceptions.RayActorError as err:
            self._load_deaths += 1
            reason = self._lost(replica, err)
            if self._load_deaths >= LOAD_DEATHS:
                raise CaiError(f"Ray replicas die while loading the engine ({self._load_deaths} in a row; "
                               f"last: {reason})") from None
            return
        replica.loading = None
        self.loaded.append(replica)
        self._load_deaths = 0

    @staticmethod
    def get(ref):
        """ray.get, with an error raised inside the replica re-raised as itself (a CaiError keeps its one line)."""
        ray = _ray()
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as err:
            cause = err.cause
            if isinstance(cause, CaiError):
                raise cause from None
            raise CaiError(f"a Ray replica failed: {type(cause).__name__}: {_first_line(cause)}") from None


def death_reason(err: Exception) -> str:
    """Ray's long ActorDiedError text cut to what a user needs: where it ran and why it died."""
    text = str(err)
    where = re.search(r"pid: (\d+)", text), re.search(r"ip: ([\w.:-]+)", text)
    why = re.search(r"The actor is dead because ([^.]*)", text)
    place = f"pid {where[0][1]} on {where[1][1]}" if all(where) else "replica"
    return f"{place}: {why[1] if why else _first_line(err)}"


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:300]


def replica_place() -> dict:
    """Where the calling actor runs: node, pid and the GPUs Ray gave it (for the manifest)."""
    ray = _ray()
    context = ray.get_runtime_context()
    return {"node": ray.util.get_node_ip_address(), "node_id": context.get_node_id(), "pid": os.getpid(),
            "gpus": [str(g) for g in ray.get_gpu_ids()], "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
