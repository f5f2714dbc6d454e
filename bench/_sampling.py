"""A background sampler for benchmarks: measure something every few tenths of a second while a run goes."""

from __future__ import annotations

import threading


class Sampler:
    """Calls `sample()` every `every` seconds on a thread while the `with` block runs."""

    def __init__(self, every: float):
        self.every = every
        self._stop = threading.Event()

    def sample(self) -> None:
        raise NotImplementedError

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            self.sample()

    def __enter__(self):
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
