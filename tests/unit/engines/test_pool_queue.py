"""The server pool's bookkeeping without HTTP: who gets a slot, in which order, and where."""

from __future__ import annotations

import threading
import time

import pytest

from cai.engines.server_pool import Cancelled, ServerPool


def wait_for(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_waiting_requests_get_slots_first_come_first_served_and_a_retry_keeps_its_place():
    pool = ServerPool(["http://a/v1"], concurrency=1)
    held = pool.acquire()                                   # the only slot
    first_ticket = pool.ticket()                            # a request that failed once and retries ...
    order: list[str] = []

    def wait(name: str, ticket: int | None = None) -> None:
        server = pool.acquire(ticket=ticket)
        order.append(name)
        pool.release(server)

    threads = [threading.Thread(target=wait, args=(f"new {i}",)) for i in range(3)]
    threads.append(threading.Thread(target=wait, args=("retry", first_ticket)))   # ... arrives last
    for queued, thread in enumerate(threads, 1):
        thread.start()
        wait_for(lambda n=queued: len(pool._queue) == n)
    pool.release(held)
    for thread in threads:
        thread.join(5)
    assert order == ["retry", "new 0", "new 1", "new 2"]


def test_a_waiting_request_is_cancelled_when_its_call_stops():
    pool = ServerPool(["http://a/v1"], concurrency=1)
    pool.acquire()
    stop = threading.Event()
    stop.set()
    with pytest.raises(Cancelled):
        pool.acquire(stop)
    assert pool._queue == []


def test_a_retry_goes_to_another_free_server_else_to_the_one_it_failed_on():
    pool = ServerPool(["http://a/v1", "http://b/v1"], concurrency=2)
    assert pool.acquire(avoid={"http://a/v1"}).url == "http://b/v1"
    assert pool.acquire(avoid={"http://a/v1"}).url == "http://b/v1"
    assert pool.acquire(avoid={"http://a/v1"}).url == "http://a/v1"      # b is full: a rather than waiting
