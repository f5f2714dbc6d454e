"""Progress for long stages: rich bars for people, JSON lines for scripts."""

from __future__ import annotations

import json
import sys
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class Bars:
    """Rich bars on stderr, shown while used as a context manager; `_progress` stays None when quiet."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.console = Console(stderr=True)
        self._progress: Progress | None = None

    def __enter__(self):
        if self._progress:
            self._progress.start()
        return self

    def __exit__(self, *exc):
        if self._progress:
            self._progress.stop()


class Reporter(Bars):
    """One bar per stage, advanced by the prompts each batch pushes through it.

    With `overall` (a run spread over replicas, whose stage bars move a batch at a time) a first bar shows the
    finished prompts, the tokens per second of the whole run and the replicas alive.
    """

    def __init__(self, stages: list[str], total: int = 0, *, quiet: bool = False, overall: bool = False):
        super().__init__(quiet)
        self._stages = stages
        self._tasks: dict[str, int] = {}
        self._tokens: dict[str, int] = {s: 0 for s in stages}
        self._seconds: dict[str, float] = {s: 0.0 for s in stages}
        self._overall = overall
        self._started = time.perf_counter()
        self.expect(total)

    def expect(self, total: int) -> None:
        """Show the bars for `total` prompts (nothing when quiet or when there is nothing to do)."""
        if self.quiet or not total or self._progress:
            return
        self._progress = Progress(
            TextColumn("{task.description:<12}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[tps]:>7.1f} tok/s"), TextColumn("{task.fields[note]}"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=self.console, transient=False,
        )
        if self._overall:
            self._tasks[""] = self._progress.add_task("all prompts", total=total, tps=0.0, note="")
        for s in self._stages:
            self._tasks[s] = self._progress.add_task(s, total=total, tps=0.0, note="")

    def __enter__(self):
        self._started = time.perf_counter()
        return super().__enter__()

    def finished(self, prompts: int, completion_tokens: int, live: int | None = None) -> None:
        """After each batch: prompts finished (done or failed) and completion tokens so far, replicas alive."""
        if not self._overall:
            return
        tps = completion_tokens / max(time.perf_counter() - self._started, 1e-9)
        if self._progress:
            self._progress.update(self._tasks[""], completed=prompts, tps=tps,
                                  note="" if live is None else f"{live} replicas")
        else:
            self.log({"event": "progress", "prompts": prompts, "completion_tokens": completion_tokens,
                      "tokens_per_second": round(tps, 1), "replicas": live})

    def stage_done(self, stats) -> None:
        """Called by the loop after each batched engine call."""
        self._tokens[stats.stage] += stats.completion_tokens
        self._seconds[stats.stage] += stats.seconds
        if self._progress:
            tps = self._tokens[stats.stage] / max(self._seconds[stats.stage], 1e-9)
            self._progress.update(self._tasks[stats.stage], advance=stats.prompts, tps=tps)
        else:
            self.log({"event": "stage", "stage": stats.stage, "prompts": stats.prompts,
                      "prompt_tokens": stats.prompt_tokens, "completion_tokens": stats.completion_tokens,
                      "seconds": round(stats.seconds, 3)})

    def log(self, row: dict) -> None:
        if self.quiet:
            sys.stdout.write(json.dumps(row) + "\n")
            sys.stdout.flush()

    def note(self, text: str) -> None:
        if not self.quiet:
            self.console.print(text)
