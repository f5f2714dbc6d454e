"""`cai monitor`: safety rates of logged responses per window, against thresholds and a baseline."""

from __future__ import annotations

from typing import Optional

import typer

from cai.cli import tables
from cai.cli.options import argument, option
from cai.evaluation.config import MonitorConfig


def register(root: typer.Typer) -> None:
    root.command("monitor", help="Score logged responses (JSONL: prompt, response) per window: safety score, "
                                 "toxicity, bias and refusal rates with intervals; exit 1 on a breached threshold "
                                 "or drift.")(monitor)


def monitor(
    responses: str = argument(MonitorConfig, "responses"),
    window: int = option(MonitorConfig, "window"),
    thresholds: Optional[str] = option(MonitorConfig, "thresholds"),
    baseline: Optional[str] = option(MonitorConfig, "baseline"),
    out: Optional[str] = option(MonitorConfig, "out"),
    judge_model: Optional[str] = option(MonitorConfig, "judge_model"),
    judge_engine: Optional[str] = option(MonitorConfig, "judge_engine"),
    judge_base_url: Optional[str] = option(MonitorConfig, "judge_base_url"),
    scorer: str = option(MonitorConfig, "scorer"),
    scorer_option: list[str] = option(MonitorConfig, "scorer_option"),
    toxicity_threshold: float = option(MonitorConfig, "toxicity_threshold"),
    follow: bool = option(MonitorConfig, "follow", "--follow"),
    idle_timeout: Optional[float] = option(MonitorConfig, "idle_timeout"),
    seed: int = option(MonitorConfig, "seed"),
) -> None:
    cfg = MonitorConfig(**locals())
    from cai.evaluation.monitor import run_monitor

    console = tables.console()

    def show(done) -> None:                 # following: every window; a whole log: the windows that alert
        line = tables.monitor_window(done)
        if cfg.follow or done.breaches or any(d.worse for d in done.drift):
            console.print(line)

    result = run_monitor(cfg, on_window=show)
    for text in result.notes:
        tables.note(text)
    console.print(tables.monitor_overall(result))
    for alert in result.alerts:
        typer.echo(alert, err=True)
    if result.alerts:
        raise typer.Exit(1)
