"""`cai eval`: harmlessness and helpfulness of a trained model against a baseline.

    cai eval --adapter runs/NAME/dpo --prompts data/eval_red_team.jsonl --helpful-prompts data/eval_helpful.jsonl
    cai eval rm --reward-model runs/NAME/reward --data runs/NAME/dataset [--adapter runs/NAME/dpo]
    cai eval gate runs/NAME/eval/metrics.json [--gate-file recipes/gate.yaml]
"""

from __future__ import annotations

from typing import Optional

import typer

from cai.cli import tables
from cai.cli.options import group, option
from cai.evaluation.config import EvalConfig, RMEvalConfig

app = group("Evaluate a trained model: toxicity, bias, harmlessness, refusals, reward; safety gate.")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="eval")


def _report_gate(result: dict, enforce: bool) -> None:
    gate = result.get("gate") or {}
    failed = [c for c in gate.get("checks", []) if not c["passed"]]
    console = tables.console()
    if not failed:
        console.print(f"[green]gate passed[/green] ({len(gate.get('checks', []))} checks, {gate.get('source')})")
        return
    if not enforce:
        console.print(f"[yellow]gate would fail[/yellow] on {', '.join(c['metric'] for c in failed)} "
                      "(pass --gate to exit non-zero)")
        return
    for c in failed:
        typer.echo(f"gate failed: {c['message']}", err=True)
    raise typer.Exit(1)


@app.callback(invoke_without_command=True)
def evaluate(
    ctx: typer.Context,
    prompts: Optional[str] = option(EvalConfig, "prompts", default=None),
    helpful_prompts: Optional[str] = option(EvalConfig, "helpful_prompts"),
    model: Optional[str] = option(EvalConfig, "model"),
    adapter: Optional[str] = option(EvalConfig, "adapter"),
    baseline: Optional[str] = option(EvalConfig, "baseline"),
    no_baseline: bool = option(EvalConfig, "no_baseline", "--no-baseline"),
    reward_model: Optional[str] = option(EvalConfig, "reward_model"),
    judge: bool = option(EvalConfig, "judge", "--judge/--no-judge"),
    judge_model: Optional[str] = option(EvalConfig, "judge_model"),
    judge_engine: Optional[str] = option(EvalConfig, "judge_engine"),
    judge_base_url: Optional[str] = option(EvalConfig, "judge_base_url"),
    constitution: Optional[str] = option(EvalConfig, "constitution"),
    scorer: str = option(EvalConfig, "scorer"),
    scorer_option: list[str] = option(EvalConfig, "scorer_option"),
    toxicity_threshold: float = option(EvalConfig, "toxicity_threshold"),
    max_new_tokens: int = option(EvalConfig, "max_new_tokens"),
    batch_size: int = option(EvalConfig, "batch_size"),
    limit: Optional[int] = option(EvalConfig, "limit"),
    seed: int = option(EvalConfig, "seed"),
    out: Optional[str] = option(EvalConfig, "out"),
    gate_file: Optional[str] = option(EvalConfig, "gate_file"),
    allow_overlap: bool = option(EvalConfig, "allow_overlap"),
    gate: bool = typer.Option(False, "--gate", help="Exit 1 when a gate threshold fails (for CI)."),
    quiet: bool = typer.Option(False, help="No progress bars."),
) -> None:
    """Generate with the model and its baseline on held-out prompts, score both, print and save metrics.

    Run `cai eval rm --help` for reward-model accuracy and `cai eval gate --help` to re-check a saved result.
    """
    settings = {k: v for k, v in locals().items() if k not in ("ctx", "gate", "quiet")}
    if ctx.invoked_subcommand is not None:
        return
    from rich.console import Console

    from cai.errors import CaiError
    from cai.evaluation.run import run_eval

    if prompts is None:
        raise CaiError("--prompts is required (e.g. --prompts data/eval_red_team.jsonl)")
    result = run_eval(EvalConfig(**settings), quiet=quiet)
    console = Console()
    console.print(tables.eval_metrics(result))
    console.print(f"metrics: {result['out']}/metrics.json  per-prompt: {result['out']}/responses.jsonl")
    _report_gate(result, enforce=gate)


@app.command("rm", help="Reward-model accuracy (and DPO preference accuracy with --adapter) on held-out pairs.")
def rm(
    data: str = option(RMEvalConfig, "data"),
    reward_model: Optional[str] = option(RMEvalConfig, "reward_model"),
    adapter: Optional[str] = option(RMEvalConfig, "adapter"),
    model: Optional[str] = option(RMEvalConfig, "model"),
    split: str = option(RMEvalConfig, "split"),
    limit: Optional[int] = option(RMEvalConfig, "limit"),
    beta: float = option(RMEvalConfig, "beta"),
    batch_size: int = option(RMEvalConfig, "batch_size"),
    out: Optional[str] = option(RMEvalConfig, "out"),
    seed: int = option(RMEvalConfig, "seed"),
    quiet: bool = typer.Option(False, help="No progress bars."),
) -> None:
    settings = {k: v for k, v in locals().items() if k != "quiet"}
    from rich.console import Console

    from cai.evaluation.rm import run_rm_eval

    result = run_rm_eval(RMEvalConfig(**settings), quiet=quiet)
    console = Console()
    console.print(tables.rm_metrics(result))
    if result.get("out"):
        console.print(f"written to {result['out']}")


@app.command("gate", help="Check saved eval results (metrics.json, rm.json) against the gate; exit 1 when one fails.")
def gate_command(
    metrics: list[str] = typer.Argument(..., help="metrics.json from `cai eval` (and rm.json from `cai eval rm`)."),
    gate_file: Optional[str] = typer.Option(None, help="Gate thresholds YAML (default: the guide's thresholds)."),
) -> None:
    from cai.evaluation.gate import check_gate, gate_summary, load_gate, load_results

    gate_cfg = load_gate(gate_file)
    results = check_gate(gate_cfg, load_results(metrics))
    summary = gate_summary(gate_cfg, results, gate_file)
    for r in results:
        typer.echo(("ok: " if r.passed else "gate failed: ") + r.message, err=not r.passed)
    if not summary["passed"]:
        raise typer.Exit(1)
    typer.echo(f"gate passed ({len(results)} checks)")
