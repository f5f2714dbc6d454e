"""The servers behind `--engine openai`: which are up, which one takes the next request, how many each holds.

The llm-swarm pattern (several inference servers behind one client, as under
Slurm or Kubernetes), kept inside the client so no proxy has to run:

- each request goes to the server with the fewest requests outstanding among
  those that are up and below their limit; while every one is full, requests
  wait and get slots first come first served (a retry keeps its place);
- each server has its own limit on requests in flight (`AdaptiveLimit`: raised
  while its throughput grows, halved on 429/503), or the fixed `--concurrency`;
- a server that stops answering (connection refused or reset, or three 5xx in a
  row) is taken out; the caller retries its requests on the others; a thread
  probes it every `probe_every` seconds and puts it back when it answers;
- when every server is out, requests go to the one taken out longest ago, so the
  caller's retries with backoff decide when to give up, as with one server.

HTTP stays in the engine: the pool is given a `probe(server)` function.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Callable
from urllib.parse import urlsplit

from cai.engines.limiter import AdaptiveLimit
from cai.errors import CaiError

FAILURES_TO_TAKE_OUT = 3        # 5xx answers in a row that take a server out (a dropped connection does at once)


class Cancelled(CaiError):
    """The caller gave up waiting for a server (another request of its call failed)."""


def parse_base_urls(values: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """Server URLs from `--base-url` given once or more, each possibly a comma list; one CaiError line per bad URL."""
    if values is None:
        return []
    items = [values] if isinstance(values, str) else list(values)
    urls = [part.strip() for item in items for part in str(item).split(",")]
    out: list[str] = []
    for url in urls:
        problem = url_problem(url)
        if problem:
            raise CaiError(f"{url!r}: {problem}")
        url = url.rstrip("/")
        if url in out:
            raise CaiError(f"{url!r}: given twice")
        out.append(url)
    return out


def url_problem(url: str) -> str | None:
    """What is wrong with a server URL (None when nothing): it needs http(s)://host[:port][/path]."""
    if not url:
        return "empty (a stray comma?)"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as err:                      # a port that is not a number or out of range
        return f"not a URL ({err})"
    if parts.scheme not in ("http", "https"):
        return "needs http:// or https:// in front, e.g. http://127.0.0.1:8000/v1"
    if not parts.hostname:
        return "has no host, e.g. http://127.0.0.1:8000/v1"
    if port == 0:
        return "port 0 is not a server's port"
    if parts.query or parts.fragment:
        return "has a ?query or #fragment; give the server's base, e.g. http://127.0.0.1:8000/v1"
    return None


@dataclass
class Server:
    """One server of the pool and what the pool knows about it."""

    url: str                                   # the base URL, ending in /v1 for OpenAI-compatible servers
    limiter: AdaptiveLimit
    in_flight: int = 0
    up: bool = True
    reason: str = ""                           # why it was taken out
    out_since: float = 0.0
    failures: int = 0                          # 5xx answers in a row
    requests: int = 0                          # answered
    taken_out: int = 0
    info: dict = field(default_factory=dict)   # what the probe learnt (e.g. max_model_len)

    @property
    def root(self) -> str:
        """The server's root: vLLM serves /tokenize and /health beside /v1, not under it."""
        return self.url.removesuffix("/v1")

    def summary(self) -> dict:
        limiter = self.limiter
        return {"url": self.url, "up": self.up, "requests": self.requests, "taken_out": self.taken_out,
                "limit": limiter.limit, "limit_range": [limiter.lowest, limiter.highest],
                **({"limit_changes": limiter.changes} if limiter.changes else {}),
                **({"reason": self.reason} if not self.up else {})}


@dataclass(order=True)
class _Waiter:
    """A request waiting for a slot; the pool sets `server` and `ready` when it gets one."""

    ticket: int
    avoid: frozenset = field(compare=False)
    server: Server | None = field(default=None, compare=False)
    ready: threading.Event = field(default_factory=threading.Event, compare=False)


class ServerPool:
    """Balances requests over servers by least outstanding requests, each under its own limit."""

    def __init__(self, urls: list[str], *, concurrency: int | None = None, initial: int = 16, high: int = 512,
                 probe: Callable[[Server], str | None] | None = None, probe_every: float = 2.0,
                 on_change: Callable[[str], None] | None = None):
        if not urls:
            raise CaiError("no server URL given")

        def limiter() -> AdaptiveLimit:
            if concurrency is not None:
                return AdaptiveLimit(concurrency, low=concurrency, high=concurrency)
            return AdaptiveLimit(initial, high=high)

        self.servers = [Server(url, limiter()) for url in urls]
        self.adaptive = concurrency is None
        self._probe = probe
        self._probe_every = probe_every
        self._on_change = on_change or (lambda message: None)
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        self._next = 0                                  # rotates ties between equally loaded servers
        self._queue: list[_Waiter] = []                 # requests waiting for a slot, a heap by ticket
        self._tickets = itertools.count()

    # --- taking and giving back a slot ---------------------------------------------------------

    def ticket(self) -> int:
        """A place in the queue for one request; its retries keep it, so they go before requests sent later."""
        with self._lock:
            return next(self._tickets)

    def acquire(self, stop: threading.Event | None = None, avoid: set[str] = frozenset(),
                ticket: int | None = None) -> Server:
        """A server for one request, its slot taken; waits, in ticket order, while every server that is up is full.

        `avoid`: URLs this request already failed on; another free server is taken before them.
        """
        with self._lock:
            waiter = _Waiter(next(self._tickets) if ticket is None else ticket, frozenset(avoid))
            heapq.heappush(self._queue, waiter)
            self._dispatch()
        while not waiter.ready.wait(0.5):
            if stop is not None and stop.is_set():
                with self._lock:
                    if waiter.server is None:
                        self._queue.remove(waiter)
                        heapq.heapify(self._queue)
                        self._dispatch()
                        raise Cancelled("cancelled after another request failed")
        return waiter.server

    def _dispatch(self) -> None:
        """Give free slots to the waiting requests, first come first served (called with the lock held)."""
        while self._queue:
            head = self._queue[0]
            server = self._pick(head.avoid)
            if server is None:
                return
            heapq.heappop(self._queue)
            server.in_flight += 1
            head.server = server
            head.ready.set()

    def _pick(self, avoid: set[str]) -> Server | None:
        up = [s for s in self.servers if s.up]
        if not up:                                      # all out: the one out longest, so retries decide
            return min(self.servers, key=lambda s: s.out_since)
        free = [s for s in up if s.in_flight < s.limiter.limit]
        if not free:
            return None
        free = [s for s in free if s.url not in avoid] or free
        n = len(self.servers)
        self._next = (self._next + 1) % n
        return min(free, key=lambda s: (s.in_flight, (self.servers.index(s) - self._next) % n))

    def done(self, server: Server, tokens: int, latency: float, sent_in: int | None = None) -> None:
        """The request was answered: its tokens and latency feed the server's limiter (`sent_in`: the limiter's
        generation when it was sent)."""
        with self._lock:
            full = server.in_flight >= server.limiter.limit
            server.in_flight -= 1
            server.requests += 1
            server.failures = 0
            server.limiter.done(tokens, latency, full, sent_in)
            self._dispatch()

    def overloaded(self, server: Server) -> None:
        """The server said it is overloaded (429/503) or a request timed out: its limit backs off."""
        with self._lock:
            server.in_flight -= 1
            server.limiter.overloaded()
            self._dispatch()

    def failed(self, server: Server, reason: str, *, at_once: bool) -> None:
        """The server did not answer (`at_once`: the connection failed) or answered 5xx: out when it keeps on."""
        with self._lock:
            server.in_flight -= 1
            server.failures += 1
            if server.up and (at_once or server.failures >= FAILURES_TO_TAKE_OUT):
                self._take_out(server, reason)
            self._dispatch()

    def release(self, server: Server) -> None:
        """The request ended in a way that says nothing about the server (a 4xx, a cancel)."""
        with self._lock:
            server.in_flight -= 1
            self._dispatch()

    def least_busy(self) -> Server:
        """The server that is up with the fewest requests in flight, no slot taken (for light calls: /tokenize)."""
        with self._lock:
            up = [s for s in self.servers if s.up]
            return min(up, key=lambda s: s.in_flight) if up else min(self.servers, key=lambda s: s.out_since)

    def take_out(self, server: Server, reason: str) -> None:
        """Take the server out now (a light call found it gone)."""
        with self._lock:
            if server.up:
                self._take_out(server, reason)
                self._dispatch()

    def others_up(self, server: Server) -> bool:
        """Whether another server is up to retry on at once (without a backoff)."""
        with self._lock:
            return any(s.up for s in self.servers if s is not server)

    # --- health --------------------------------------------------------------------------------

    def check_all(self) -> dict[str, str]:
        """Probe every server now (at start): those that do not answer are taken out. {url: reason} of those."""
        if self._probe is None:
            return {}
        reasons: dict[str, str] = {}
        threads = [threading.Thread(target=lambda s=s: reasons.__setitem__(s.url, self._probe(s))) for s in
                   self.servers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        with self._lock:
            for server in self.servers:
                if reasons[server.url] is not None:
                    self._take_out(server, reasons[server.url])
        return {url: reason for url, reason in reasons.items() if reason is not None}

    def start(self) -> None:
        """Start probing servers that are out, every `probe_every` seconds, until close()."""
        if self._probe is not None and self._thread is None:
            self._thread = threading.Thread(target=self._probe_loop, name="cai-server-probe", daemon=True)
            self._thread.start()

    def close(self) -> None:
        self._closed.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _probe_loop(self) -> None:
        while not self._closed.wait(self._probe_every):
            for server in [s for s in self.servers if not s.up]:
                if self._closed.is_set():
                    return
                if self._probe(server) is None:
                    with self._lock:
                        server.up, server.reason, server.failures = True, "", 0
                        server.limiter.reset()
                        self._dispatch()
                    self._on_change(f"{server.url} answers again: back in")

    def _take_out(self, server: Server, reason: str) -> None:
        server.up, server.reason, server.out_since = False, reason, time.monotonic()
        server.taken_out += 1
        left = sum(s.up for s in self.servers)
        self._on_change(f"{server.url} taken out ({reason}); {left} of {len(self.servers)} servers up")

    # --- what the run records -----------------------------------------------------------------

    def total_limit(self) -> int:
        """Requests the servers that are up take at once now (all servers when none is up)."""
        with self._lock:
            up = [s for s in self.servers if s.up] or self.servers
            return sum(s.limiter.limit for s in up)

    def summary(self) -> dict:
        with self._lock:
            return {"mode": "adaptive" if self.adaptive else "fixed",
                    "servers": [s.summary() for s in self.servers]}
