"""How many requests to keep in flight on one server, found while the run goes.

A server that batches (vLLM, TGI) gets more done the more requests it holds, up
to the point where its compute is full; past it, more requests only wait longer.
Netflix's concurrency-limits and Envoy's adaptive-concurrency filter find that
point from latency alone (Vegas, Gradient2: back off when latency rises over its
floor). That suits web services, not an LLM server: its latency rises with every
request it batches, long before its throughput stops growing, so a latency rule
stops far too early. This limiter climbs on throughput instead (Little's law:
throughput = in flight / latency, so more in flight pays only while latency
grows slower than it), and keeps the loss-based half of AIMD:

- measure completion tokens per second while the server is kept full, over a
  window of about one round of requests (`limit` completions, after half as
  many to settle after a change);
- while the last raise made throughput grow by `GAIN`, raise again: doubling at
  first (slow start), then by a quarter;
- when a raise bought nothing, go back to the level before it: the extra
  requests only added latency;
- 429 / 503 / a timed-out request halves the limit (at most once a window);
  latency twice what it was at the held level (the server got slower: another
  client, a lost peer) takes a quarter off;
- every `HOLD` windows at a level, try a step up, the next time a step down
  (kept while throughput holds within GAIN / 2): the best level moves when
  the work or the server's other load changes, and a slow start that doubled
  past the knee comes back down to it.

Time when the server was not kept full (too little work to send: the end of a
stage) says nothing about the server and is not measured. The limiter is pure bookkeeping (no
threads, a clock passed in): `ServerPool` does the waiting.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

GAIN = 0.10            # a raise counts when throughput grew by at least this share
SLOWER = 2.0           # latency this many times the held level's: the server got slower
HOLD = 4               # windows at a level before trying a step up or down
MIN_WINDOW = 8         # completions in a window, however low the limit
CHANGES_KEPT = 64      # the last limit changes, with their reasons, kept for the manifest


@dataclass
class _Level:
    """A limit and what it gave: completion tokens per second and mean latency."""

    limit: int
    rate: float
    latency: float


class AdaptiveLimit:
    """Requests in flight for one server; `fixed` when `low == high` (`--concurrency N`)."""

    def __init__(self, initial: int = 16, *, low: int = 1, high: int = 512,
                 clock: Callable[[], float] = time.monotonic):
        self.low, self.high = max(1, low), max(1, low, high)
        self.limit = min(max(initial, self.low), self.high)
        self.lowest = self.highest = self.limit           # the range over the run, for the manifest
        self._clock = clock
        self._slow_start = True
        self._held: _Level | None = None                  # the level judged good so far
        self._holds = 0
        self._probe_up = False                            # the direction of the last probe from a held level
        self._last, self._last_full = clock(), False      # the previous completion: when, and whether full
        self.changes: list[str] = []                      # "16->32: raise paid (41.0 -> 55.2 tok/s)", the last few
        self._restart()

    @property
    def fixed(self) -> bool:
        return self.low == self.high

    def done(self, tokens: int, latency: float, full: bool) -> None:
        """A request finished: `tokens` generated in `latency` s; `full`: the server was at its limit when it did.

        Only stretches between two completions that both found the server full are measured: the end of a
        stage, when the last requests drain and no more are queued, and the gap before the next stage say
        nothing about what the server can do.
        """
        if self.fixed:
            return
        now = self._clock()
        measured = full and self._last_full
        self._last_full, gap, self._last = full, now - self._last, now
        if not measured:
            return
        if self._settle > 0:
            self._settle -= 1
            return
        self._busy += gap
        self._tokens += max(tokens, 1)
        self._latency += latency
        self._count += 1
        if self._count >= max(self.limit, MIN_WINDOW):
            self._close_window()

    def overloaded(self) -> None:
        """The server said it is overloaded (429, 503) or a request timed out: halve, once a window."""
        if self.fixed or self._backed_off:
            return
        self._slow_start = False
        self._held = None
        self._set(max(self.low, self.limit // 2), "overloaded (429/503/timeout)")
        self._backed_off = True

    def reset(self) -> None:
        """The server came back after an outage: measure afresh from the current limit."""
        self._held = None
        self._restart()

    # --- inside ------------------------------------------------------------------------------

    def _close_window(self) -> None:
        level = _Level(self.limit, self._tokens / max(self._busy, 1e-6), self._latency / self._count)
        held = self._held
        versus = f"{held.rate:.1f} -> {level.rate:.1f} tok/s" if held else f"{level.rate:.1f} tok/s"
        if held is None:
            self._climb(level, up=True, why=f"first window ({versus})")
        elif level.limit > held.limit:                   # a raise: kept if it paid, else back to the level before
            if level.rate >= held.rate * (1 + GAIN):
                self._climb(level, up=True, why=f"raise paid ({versus})")
            else:
                self._slow_start = False
                self._set(held.limit, f"raise bought nothing ({versus})")
        elif level.limit < held.limit:                   # a cut: kept while it costs no throughput (less latency)
            if level.rate >= held.rate * (1 - GAIN / 2):
                self._climb(level, up=False, why=f"cut cost nothing ({versus})")
            else:
                self._set(held.limit, f"cut cost throughput ({versus})")
        elif level.latency > SLOWER * held.latency:      # same level, much slower: take a quarter off
            self._held = None
            self._set(max(self.low, math.floor(self.limit * 0.75)),
                      f"latency {held.latency:.2f} -> {level.latency:.2f} s")
        else:
            self._holds += 1
            if self._holds >= HOLD:                      # has the best level moved? try one step up, next time down
                self._probe_up = not self._probe_up
                self._climb(level, up=self._probe_up, why=f"probe after {HOLD} windows ({versus})")
            else:
                self._restart(settle=False)

    def _climb(self, level: _Level, *, up: bool, why: str) -> None:
        """Hold `level` as the one to beat and try the next step up (or down)."""
        self._held, self._holds = level, 0
        if up:
            factor = 2.0 if self._slow_start else 1.25
            self._set(min(self.high, max(self.limit + 1, math.ceil(self.limit * factor))), why)
        else:
            self._set(max(self.low, min(self.limit - 1, math.floor(self.limit * 0.8))), why)

    def _set(self, limit: int, why: str) -> None:
        changed = limit != self.limit
        if changed:
            self.changes = [*self.changes[-(CHANGES_KEPT - 1):], f"{self.limit}->{limit}: {why}"]
        self.limit = limit
        self.lowest, self.highest = min(self.lowest, limit), max(self.highest, limit)
        self._restart(settle=changed)

    def _restart(self, settle: bool = True) -> None:
        """A new window; after a change, first let half a round of requests finish at the new level."""
        self._settle = math.ceil(self.limit / 2) if settle else 0
        self._busy = self._tokens = self._latency = 0.0
        self._count = 0
        self._backed_off = False
