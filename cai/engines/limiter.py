"""How many requests to keep in flight on one server, found while the run goes.

A server that batches (vLLM, TGI) gets more done the more requests it holds, up
to the point where its compute is full; past it, more requests only wait longer.
Netflix's concurrency-limits and Envoy's adaptive-concurrency filter find that
point from latency alone (Vegas, Gradient2: back off when latency rises over its
floor). That suits web services, not an LLM server: its latency rises with every
request it batches, long before its throughput stops growing, so a latency rule
stops far too early. Data generation waits for the last row, not the first, so
this limiter climbs on throughput and keeps the loss-based half of AIMD:

- measure completion tokens per second while the server is kept full, over a
  window of about one round of requests (`limit` completions, half as many
  while doubling), counting only requests sent since the last change: one
  sent before it ran beside more (or fewer) others than the limit says. By
  Little's law, tokens/s = requests in flight x tokens per request / latency;
  reckoned so, a window reads the same whether its requests finish one by one
  or in a burst at a shared max_tokens;
- a level is worth its tokens/s divided by limit ** PRICE: a raise is kept when
  throughput grows by more than the extra requests cost (a doubling must gain
  7%, a step of a quarter 2.3%), a cut when it loses less. Moves are doublings
  at first (slow start), then steps of a quarter, and go on while they pay;
- a move that does not pay goes back to the level before it, which is measured
  again: the work drifts (a later stage's prompts are longer, so every window
  is slower than the one before), and a move is judged against the held
  level's mean before and after it, not against the faster window before it;
- 429 / 503 / a timed-out request halves the limit (at most once a window);
  latency twice the held level's tries a step down at once, kept if it pays
  (another client took part of the server) and undone if not (a later
  stage's longer prompts: the server is as busy as before, with longer work);
- every `HOLD` windows at a level, try a step up, the next time a step down:
  the best level moves when the work (longer prompts in a later stage) or the
  server's other load changes, and the level to beat is the recent windows'
  mean, not a figure from another stage.

Time when the server was not kept full (too little work to send: the end of a
stage) says nothing about the server and is not measured. The limiter is pure
bookkeeping (no threads, no clock): `ServerPool` does the waiting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

PRICE = 0.10           # a level's worth: tokens/s / limit ** PRICE (a doubling must gain 2 ** 0.1 - 1 = 7%)
SLOWER = 2.0           # latency this many times the held level's: try a step down at once
HOLD = 4               # windows at a level before trying a step up or down
MIN_WINDOW = 8         # completions in a window, however low the limit
CHANGES_KEPT = 64      # the last limit changes, with their reasons, kept for the manifest


@dataclass
class _Level:
    """A limit and what it gave: completion tokens per second and mean latency."""

    limit: int
    rate: float
    latency: float

    @property
    def worth(self) -> float:
        return math.log(max(self.rate, 1e-9)) - PRICE * math.log(self.limit)


def _needed(before: int, after: int) -> float:
    """The change in throughput at which moving the limit from `before` to `after` breaks even."""
    return (after / before) ** PRICE - 1


class AdaptiveLimit:
    """Requests in flight for one server; `fixed` when `low == high` (`--concurrency N`)."""

    def __init__(self, initial: int = 16, *, low: int = 1, high: int = 512):
        self.low, self.high = max(1, low), max(1, low, high)
        self.limit = min(max(initial, self.low), self.high)
        self.lowest = self.highest = self.limit           # the range over the run, for the manifest
        self._slow_start = True
        self._held: _Level | None = None                  # the level judged good so far
        self._holds = 0
        self._probe_up = False                            # the direction of the last probe from a held level
        self._trial: _Level | None = None                 # a move that did not pay, while the held level is re-measured
        self._last_full = False                           # whether the previous completion found the server full
        self.generation = 0                               # bumped at every change of the limit
        self.changes: list[str] = []                      # "16->32: raise paid (41.0 -> 55.2 tok/s)", the last few
        self._restart()

    @property
    def fixed(self) -> bool:
        return self.low == self.high

    def done(self, tokens: int, latency: float, full: bool, sent_in: int | None = None) -> None:
        """A request finished: `tokens` generated in `latency` s; `full`: the server was at its limit when it did;
        `sent_in`: the `generation` it was sent in (None: the current one).

        Only a completion that found the server full, as did the one before it, is measured: the end of a
        stage, when the last requests drain and no more are queued, says nothing about what the server can do.
        """
        if self.fixed:
            return
        measured = full and self._last_full and sent_in in (None, self.generation)
        self._last_full = full
        if not measured:
            return
        self._tokens += max(tokens, 1)
        self._latency += max(latency, 1e-6)
        self._count += 1
        if self._count >= max(self.limit // (2 if self._slow_start else 1), MIN_WINDOW):
            self._close_window()

    def overloaded(self) -> None:
        """The server said it is overloaded (429, 503) or a request timed out: halve, once a window."""
        if self.fixed or self._backed_off:
            return
        self._slow_start = False
        self._held = self._trial = None
        self._set(max(self.low, self.limit // 2), "overloaded (429/503/timeout)")
        self._backed_off = True

    def reset(self) -> None:
        """The server came back after an outage: measure afresh from the current limit."""
        self._held = self._trial = None
        self.generation += 1
        self._restart()

    # --- inside ------------------------------------------------------------------------------

    def _close_window(self) -> None:
        level = _Level(self.limit, self.limit * self._tokens / self._latency,      # Little's law
                       self._latency / self._count)
        held = self._held
        versus = f"{held.rate:.1f} -> {level.rate:.1f} tok/s" if held else f"{level.rate:.1f} tok/s"
        if held is None:
            self._climb(level, up=True, why=f"first window ({versus})")
        elif level.limit != held.limit:                  # a move: kept, and pursued, if it paid
            what = "raise" if level.limit > held.limit else "cut"
            versus += f", {level.rate / held.rate - 1:+.1%} where {_needed(held.limit, level.limit):+.1%} pays"
            if level.worth >= held.worth:
                self._climb(level, up=level.limit > held.limit, why=f"{what} paid ({versus})")
            else:                                        # else back, and measure the held level again
                self._trial = level
                self._set(held.limit, f"{what} did not pay ({versus}); measuring {held.limit} again")
        elif self._trial is not None:                    # back from a move that did not pay: was it the work?
            trial, self._trial = self._trial, None
            before, held.rate = held.rate, level.rate
            around = _Level(held.limit, (before + level.rate) / 2, level.latency)   # the held level then
            up = trial.limit > held.limit
            if trial.worth >= around.worth:              # the work got slower (or faster) meanwhile, not the move
                self._climb(trial, up=up, why=f"{'raise' if up else 'cut'} paid against {held.limit} measured "
                                              f"before and after ({before:.1f}, {level.rate:.1f} -> "
                                              f"{trial.rate:.1f} tok/s)")
            else:
                self._slow_start = self._slow_start and not up
                self._restart()
        elif level.latency > SLOWER * held.latency:     # much slower at the same level (another client? longer
            slower = f"latency {held.latency:.1f} -> {level.latency:.1f} s"                  # prompts?): try less
            self._climb(level, up=False, why=f"{slower}, trying a step down")
        else:                                            # the same level: the figures to beat follow the work
            held.rate, held.latency = (held.rate + level.rate) / 2, (held.latency + level.latency) / 2
            self._holds += 1
            if self._holds >= HOLD:                      # has the best level moved? try one step up, next time down
                self._probe_up = not self._probe_up
                self._climb(held, up=self._probe_up, why=f"probe after {HOLD} windows ({held.rate:.1f} tok/s)")
            else:
                self._restart()

    def _climb(self, level: _Level, *, up: bool, why: str) -> None:
        """Hold `level` as the one to beat and try the next step up (or down) from it."""
        self._held, self._holds, n = level, 0, level.limit
        if up:
            factor = 2.0 if self._slow_start else 1.25
            self._set(min(self.high, max(n + 1, math.ceil(n * factor))), why)
        else:
            self._set(max(self.low, min(n - 1, math.floor(n * 0.8))), why)

    def _set(self, limit: int, why: str) -> None:
        if limit != self.limit:
            self.changes = [*self.changes[-(CHANGES_KEPT - 1):], f"{self.limit}->{limit}: {why}"]
            self.generation += 1
        self.limit = limit
        self.lowest, self.highest = min(self.lowest, limit), max(self.highest, limit)
        self._restart()

    def _restart(self) -> None:
        """A new window."""
        self._tokens = self._latency = 0.0
        self._count = 0
        self._backed_off = False
