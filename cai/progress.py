"""Progress for long stages: rich bars for people, JSON lines for scripts."""

from __future__ import annotations

import json
import sys

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
    """One bar per stage, advanced by the prompts each batch pushes through it."""

    def __init__(self, stages: list[str], total: int, *, quiet: bool = False):
        super().__init__(quiet)
        self._tasks: dict[str, int] = {}
        self._tokens: dict[str, int] = {s: 0 for s in stages}
        self._seconds: dict[str, float] = {s: 0.0 for s in stages}
        if not quiet and total:
            self._progress = Progress(
                TextColumn("{task.description:<12}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[tps]:>7.1f} tok/s"), TimeElapsedColumn(), TimeRemainingColumn(),
                console=self.console, transient=False,
            )
            for s in stages:
                self._tasks[s] = self._progress.add_task(s, total=total, tps=0.0)

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
