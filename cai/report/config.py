"""Settings of `cai report`, each with its default and help (read by the CLI)."""

from __future__ import annotations

from dataclasses import dataclass

from cai.config import REQUIRED, at_least, setting


@dataclass(kw_only=True)
class ReportConfig:
    """`cai report RUN`: one self-contained HTML page of what a run produced."""

    run: str = setting(REQUIRED, "Run directory (runs/NAME).")
    out: str | None = setting(None, "HTML file to write (default: RUN/report.html).")
    samples: int = setting(40, "Pairs (and eval replies) shown in the sample browser.")
    score: bool = setting(True, "Score initial and revised responses for toxicity with the offline classifier "
                                "(a few seconds).")
    seed: int = setting(0, "Seed for picking the samples.")

    def __post_init__(self) -> None:
        at_least("samples", self.samples, 0)
