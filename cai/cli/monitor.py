"""`cai monitor`: safety rates of logged responses per window, against thresholds and a baseline."""

from __future__ import annotations

from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command(help="Score logged responses (JSONL: prompt, response) per window: safety score, toxicity, bias "
                      "and refusal rates with intervals; exit 1 on a breached threshold or drift.")
    def monitor(
        responses: str = typer.Argument(..., help="JSONL file: prompt and response a line; timestamp and model optional."),
        window: int = typer.Option(100, help="Responses per window, in file order."),
        thresholds: Optional[str] = typer.Option(None, help="Gate YAML of thresholds (default: the guide's, as in "
                                                            "recipes/gate.yaml)."),
        baseline: Optional[str] = typer.Option(None, help="metrics.json of `cai eval`, or an earlier monitor.json: "
                                                          "flag windows whose interval lies beyond the baseline's."),
        out: Optional[str] = typer.Option(None, help="Output dir for monitor.json, monitor.html, scored.jsonl "
                                                     "(default: runs/monitor-FILE)."),
        judge_model: Optional[str] = typer.Option(None, help="Judge model for the safety score (AI feedback)."),
        scorer: str = typer.Option("toxic-bilstm", help="Toxicity scorer: toxic-bilstm (offline) or detoxify."),
        scorer_option: list[str] = typer.Option([], help="KEY=VALUE option of the scorer (repeatable)."),
        toxicity_threshold: float = typer.Option(0.7, help="A response above this toxicity counts as toxic."),
        follow: bool = typer.Option(False, "--follow", help="Keep reading the file as it grows, like tail -f; "
                                                            "Ctrl-C scores the last partial window and stops."),
        idle_timeout: Optional[float] = typer.Option(None, help="--follow: stop when the file has not grown for "
                                                                "this many seconds."),
        seed: int = typer.Option(0, help="Seed of the bootstrap intervals."),
    ) -> None:
        from rich.console import Console

        from cai.evaluation.monitor import MonitorConfig, run_monitor
        from cai.safety.registry import parse_scorer_options

        cfg = MonitorConfig(responses=responses, window=window, thresholds=thresholds, baseline=baseline, out=out,
                            judge_model=judge_model, scorer=scorer, scorer_options=parse_scorer_options(scorer_option),
                            toxicity_threshold=toxicity_threshold, follow=follow, idle_timeout=idle_timeout, seed=seed)
        console = Console(stderr=True)
        shown = ("safety_score", "toxicity_rate", "bias_rate", "refusal_rate")

        def line(window: dict) -> None:
            values = "  ".join(f"{n} {window['metrics'][n]['value']:.3f}" for n in shown if n in window["metrics"])
            flags = window["breaches"] + [f"drift {d['metric']} {d['direction']}" for d in window["drift"] if d["worse"]]
            if not (follow or flags):           # a whole log prints only the windows that alert
                return
            console.print(f"window {window['index']} (lines {window['first_line']}-{window['last_line']}, "
                          f"n={window['n']}): {values}" + (f"  [red]{'; '.join(flags)}[/red]" if flags else ""))

        result = run_monitor(cfg, on_window=line)
        for note in result["notes"]:
            console.print(f"[yellow]note:[/yellow] {note}")
        overall = result["overall"]["metrics"]
        console.print(f"{len(result['windows'])} windows; overall: " + "  ".join(
            f"{n} {overall[n]['value']:.3f} [{overall[n]['ci'][0]:.2f},{overall[n]['ci'][1]:.2f}]"
            for n in shown if n in overall) + f"  ({result['overall']['n']} responses)")
        console.print(f"written: {result['out']}/monitor.json, {result['out']}/monitor.html")
        for alert in result["alerts"]:
            typer.echo(alert, err=True)
        if result["alerts"]:
            raise typer.Exit(1)
