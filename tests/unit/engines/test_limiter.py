"""The adaptive limit on requests in flight, driven by a simulated batching server on a fake clock.

The simulated server is what an LLM server does: up to its `knee` requests it decodes them all at once
(throughput grows with every request), past it the extra requests only wait (throughput flat, latency up).
Real HTTP servers drive the limiter in tests/integration/test_server_pool.py.
"""

from __future__ import annotations

import pytest

from cai.engines.limiter import AdaptiveLimit

TOKENS = 100                      # completion tokens of every request


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def serve(limiter: AdaptiveLimit, clock: Clock, requests: int, *, knee: int, per_request: float = 50.0,
          full: bool = True) -> list[int]:
    """Complete `requests` requests at the limiter's level; returns the limit after each one."""
    seen = []
    for _ in range(requests):
        in_flight = limiter.limit
        tokens_per_s = per_request * min(in_flight, knee)
        requests_per_s = tokens_per_s / TOKENS
        clock.now += 1 / requests_per_s
        limiter.done(TOKENS, latency=in_flight / requests_per_s, full=full)      # Little's law
        seen.append(limiter.limit)
    return seen


def test_the_limit_rises_while_throughput_grows_and_settles_at_the_knee():
    clock = Clock()
    limiter = AdaptiveLimit(16, clock=clock)
    seen = serve(limiter, clock, 3000, knee=40)
    assert limiter.highest >= 40                      # it went past the knee to find it
    assert 32 <= limiter.limit <= 64                  # and came back near it: throughput is flat above 40
    assert max(seen) < 512                            # never ran away to the ceiling
    assert limiter.lowest == 16 and limiter.highest == max(seen)


def test_a_larger_server_gets_a_larger_limit():
    small, large = Clock(), Clock()
    a, b = AdaptiveLimit(16, clock=small), AdaptiveLimit(16, clock=large)
    serve(a, small, 3000, knee=24)
    serve(b, large, 6000, knee=200)
    assert a.limit <= 48 and b.limit >= 150


def test_no_raise_without_enough_work_to_fill_the_server():
    clock = Clock()
    limiter = AdaptiveLimit(16, clock=clock)
    serve(limiter, clock, 1000, knee=400, full=False)
    assert (limiter.limit, limiter.lowest, limiter.highest) == (16, 16, 16)


def test_the_ends_of_stages_are_not_measured():
    """Batches whose stages end in a drain (no work queued) and a pause: it climbs as without them."""
    clock = Clock()
    limiter = AdaptiveLimit(16, clock=clock)
    for _ in range(60):
        serve(limiter, clock, 3 * limiter.limit, knee=40)        # a stage of 4 x limit requests, the last
        serve(limiter, clock, limiter.limit, knee=40, full=False)  # limit of them drain,
        clock.now += 30.0                                         # then the job builds the next stage
    assert limiter.highest >= 40 and 32 <= limiter.limit <= 64


def test_overload_halves_the_limit_once_per_window():
    clock = Clock()
    limiter = AdaptiveLimit(64, clock=clock)
    for _ in range(20):                    # a burst of 429s from requests sent at one level
        limiter.overloaded()
    assert limiter.limit == 32 and limiter.lowest == 32
    serve(limiter, clock, 1 + 16 + 32, knee=400)    # settle, then one window: it climbs again
    before = limiter.limit
    limiter.overloaded()                        # and the next 429 halves again
    assert before > 32 and limiter.limit == before // 2


def test_a_server_that_gets_busy_with_other_work_gets_fewer_requests():
    clock = Clock()
    limiter = AdaptiveLimit(16, clock=clock)
    serve(limiter, clock, 3000, knee=40)
    assert limiter.limit >= 32
    serve(limiter, clock, 3000, knee=10)      # another client took three quarters of it: latency rose
    assert limiter.limit <= 20


@pytest.mark.parametrize("n", [1, 8, 64])
def test_a_fixed_limit_never_moves(n):
    clock = Clock()
    limiter = AdaptiveLimit(n, low=n, high=n, clock=clock)
    serve(limiter, clock, 500, knee=400)
    limiter.overloaded()
    assert limiter.fixed and (limiter.limit, limiter.lowest, limiter.highest) == (n, n, n)


def test_bounds_hold():
    clock = Clock()
    limiter = AdaptiveLimit(16, low=4, high=50, clock=clock)
    serve(limiter, clock, 3000, knee=1000)
    assert limiter.highest == 50 and limiter.limit >= 40       # at the ceiling, or one probe below it
    for _ in range(10):
        limiter.overloaded()
        serve(limiter, clock, 30, knee=1000)
    assert limiter.lowest >= 4
