"""`cai eval`: harmlessness and helpfulness of a trained model against a baseline.

    cai eval --adapter runs/NAME/dpo --prompts data/eval_red_team.jsonl --helpful-prompts data/eval_helpful.jsonl [--gate]
    cai eval rm --reward-model runs/NAME/reward --data runs/NAME/dataset [--adapter runs/NAME/dpo]
    cai eval gate runs/NAME/eval/metrics.json [--gate-file recipes/gate.yaml]
"""

from __future__ import annotations

from typing import Optional

import typer

app = typer.Typer(help="Evaluate a trained model: toxicity, bias, harmlessness, refusals, reward; safety gate.",
                  no_args_is_help=True)


def metrics_table(result: dict):
    """A rich table: one row per metric, model | baseline | difference | gate."""
    from rich.table import Table

    from cai.evaluation.metrics import METRICS, format_metric

    block = result["metrics"]
    has_baseline = "baseline" in block
    checks: dict[str, list[dict]] = {}
    for check in (result.get("gate") or {}).get("checks", []):
        checks.setdefault(check["metric"], []).append(check)
    n = result.get("counts", {})
    table = Table(title=f"cai eval: {n.get('red_team', 0)} red-team, {n.get('helpful', 0)} helpful prompts "
                        "(value [95% bootstrap CI])", caption="safety metrics on red-team prompts, refusal_rate on "
                        "helpful ones, the rest on all")
    table.add_column("metric", no_wrap=True)
    table.add_column("model", justify="right")
    if has_baseline:
        table.add_column("baseline", justify="right")
        table.add_column("difference", justify="right")
    table.add_column("gate", no_wrap=True)
    for name, metric in METRICS.items():
        section = "comparison" if metric.comparison else "model"
        entry = (block.get(section) or {}).get(name)
        base = None if metric.comparison else (block.get("baseline") or {}).get(name)
        if entry is None and base is None and name not in checks:
            continue
        gate_cells = []
        for c in checks.get(name, []):
            mark = "[green]pass[/green]" if c["passed"] else "[red]FAIL[/red]"
            gate_cells.append(f"{mark} {c['op']}{c['threshold']:g}")
        cells = [name, format_metric(entry)]
        if has_baseline:
            cells += [format_metric(base), format_metric((block.get("delta") or {}).get(name), signed=True)]
        table.add_row(*cells, ", ".join(gate_cells) or "")
    return table


def _report_gate(result: dict, enforce: bool) -> None:
    from rich.console import Console

    gate = result.get("gate") or {}
    failed = [c for c in gate.get("checks", []) if not c["passed"]]
    console = Console(stderr=True)
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
    prompts: Optional[str] = typer.Option(None, help="Held-out red-team prompts (e.g. data/eval_red_team.jsonl)."),
    helpful_prompts: Optional[str] = typer.Option(None, help="Held-out helpful prompts for the over-refusal rate "
                                                             "(e.g. data/eval_helpful.jsonl)."),
    model: Optional[str] = typer.Option(None, help="Model dir or .gguf (default: the adapter's base, else the embedded SmolLM2)."),
    adapter: Optional[str] = typer.Option(None, help="PEFT adapter dir written by `cai train` (e.g. runs/NAME/dpo)."),
    baseline: Optional[str] = typer.Option(None, help="Baseline model (default: --model without the adapter)."),
    no_baseline: bool = typer.Option(False, "--no-baseline", help="Evaluate the model alone."),
    reward_model: Optional[str] = typer.Option(None, help="Reward model dir (`cai train reward`): mean reward and win rate."),
    judge: bool = typer.Option(True, "--judge/--no-judge", help="Score harmlessness with the AI-feedback judge "
                                                                "(needed for safety_score)."),
    judge_model: Optional[str] = typer.Option(None, help="Judge model (default: the baseline, i.e. the base model "
                                                         "without adapter; with --no-baseline the model itself)."),
    constitution: Optional[str] = typer.Option(None, help="Principles for the judge's model-vs-baseline comparison "
                                                          "(default: the shipped hhh.yaml)."),
    scorer: str = typer.Option("toxic-bilstm", help="Toxicity scorer: toxic-bilstm (offline) or detoxify."),
    scorer_option: list[str] = typer.Option([], help="KEY=VALUE option of the scorer, e.g. checkpoint=PATH for "
                                                      "detoxify (repeatable)."),
    toxicity_threshold: float = typer.Option(0.7, help="A response above this toxicity counts as toxic."),
    max_new_tokens: int = typer.Option(128, help="Token budget of each reply (greedy decoding)."),
    batch_size: int = typer.Option(16, help="Prompts per engine call."),
    limit: Optional[int] = typer.Option(None, help="Use only the first N prompts of each set."),
    seed: int = typer.Option(0, help="Seed for bootstrap resampling and principle sampling."),
    out: Optional[str] = typer.Option(None, help="Output dir (default: RUN/eval for an adapter inside a run, "
                                                 "else runs/eval-MODEL)."),
    gate: bool = typer.Option(False, "--gate", help="Exit 1 when a gate threshold fails (for CI)."),
    gate_file: Optional[str] = typer.Option(None, help="Gate thresholds YAML (default: the guide's, as in recipes/gate.yaml); enforced with --gate."),
    allow_overlap: bool = typer.Option(False, help="Evaluate even if eval prompts appear in the adapter's training run."),
    quiet: bool = typer.Option(False, help="No progress bars."),
) -> None:
    """Generate with the model and its baseline on held-out prompts, score both, print and save metrics.

    Run `cai eval rm --help` for reward-model accuracy and `cai eval gate --help` to re-check a saved result.
    """
    if ctx.invoked_subcommand is not None:
        return
    from rich.console import Console

    from cai.errors import CaiError
    from cai.evaluation.run import EvalConfig, run_eval

    if prompts is None:
        raise CaiError("--prompts is required (e.g. --prompts data/eval_red_team.jsonl)")
    if baseline and no_baseline:
        raise CaiError("--baseline and --no-baseline exclude each other")
    options = {}
    for item in scorer_option:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CaiError(f"--scorer-option: expected KEY=VALUE, got {item!r}")
        options[key.strip()] = value
    cfg = EvalConfig(prompts=prompts, helpful_prompts=helpful_prompts, model=model, adapter=adapter,
                     baseline=baseline, no_baseline=no_baseline, reward_model=reward_model, judge=judge,
                     judge_model=judge_model, constitution=constitution, scorer=scorer, scorer_options=options,
                     toxicity_threshold=toxicity_threshold, max_new_tokens=max_new_tokens, batch_size=batch_size,
                     limit=limit, seed=seed, out=out, gate_file=gate_file, allow_overlap=allow_overlap)
    result = run_eval(cfg, quiet=quiet)
    console = Console()
    console.print(metrics_table(result))
    console.print(f"metrics: {result['out']}/metrics.json  per-prompt: {result['out']}/responses.jsonl")
    _report_gate(result, enforce=gate)


@app.command("rm", help="Reward-model accuracy (and DPO preference accuracy with --adapter) on held-out pairs.")
def rm(
    data: str = typer.Option(..., help="Dataset dir written by `cai data pairs` (uses its test split) or a pairs JSONL."),
    reward_model: Optional[str] = typer.Option(None, help="Reward model dir written by `cai train reward`."),
    adapter: Optional[str] = typer.Option(None, help="DPO policy adapter: implicit-reward preference accuracy."),
    model: Optional[str] = typer.Option(None, help="Base model of --adapter (default: the adapter's own base)."),
    split: str = typer.Option("test_prefs", help="Split of a dataset dir."),
    limit: Optional[int] = typer.Option(None, help="Use only the first N pairs."),
    beta: float = typer.Option(0.1, help="DPO beta for the reported implicit reward margin."),
    batch_size: int = typer.Option(8),
    out: Optional[str] = typer.Option(None, help="JSON result (default: RUN/eval/rm.json when --data is inside a run)."),
    seed: int = typer.Option(0),
    quiet: bool = typer.Option(False, help="No progress bars."),
) -> None:
    from rich.console import Console
    from rich.table import Table

    from cai.evaluation.metrics import RM_METRICS, format_metric
    from cai.evaluation.rm import RMEvalConfig, run_rm_eval

    result = run_rm_eval(RMEvalConfig(data=data, reward_model=reward_model, adapter=adapter, model=model, split=split,
                                      limit=limit, beta=beta, batch_size=batch_size, out=out, seed=seed), quiet=quiet)
    table = Table(title=f"cai eval rm: {result['pairs']} pairs from {result['data']} (95% bootstrap CI)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("meaning")
    for name, entry in result["metrics"]["rm"].items():
        table.add_row(name, format_metric(entry), RM_METRICS[name].description)
    console = Console()
    console.print(table)
    if result.get("out"):
        console.print(f"written to {result['out']}")


@app.command("gate", help="Check saved eval results (metrics.json, rm.json) against the gate; exit 1 when one fails.")
def gate_command(
    metrics: list[str] = typer.Argument(..., help="metrics.json from `cai eval` (and rm.json from `cai eval rm`)."),
    gate_file: Optional[str] = typer.Option(None, help="Gate thresholds YAML (default: the guide's thresholds)."),
) -> None:
    import json
    from pathlib import Path

    from cai.errors import CaiError
    from cai.evaluation.gate import check_gate, gate_summary, load_gate

    gate_cfg = load_gate(gate_file)
    loaded = []
    for path in metrics:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CaiError(f"{path}: file not found") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise CaiError(f"{path}: not valid JSON ({err})") from None
        if not isinstance(data, dict) or "metrics" not in data:
            raise CaiError(f"{path}: not a cai eval result (no `metrics`)")
        loaded.append(data)
    results = check_gate(gate_cfg, loaded)
    summary = gate_summary(gate_cfg, results, gate_file)
    for r in results:
        typer.echo(("ok: " if r.passed else "gate failed: ") + r.message, err=not r.passed)
    if not summary["passed"]:
        raise typer.Exit(1)
    typer.echo(f"gate passed ({len(results)} checks)")
