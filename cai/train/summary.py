"""What a training run leaves behind for people: metrics JSONL, a summary table, a model card."""

from __future__ import annotations

import json
import math
import resource
import sys
import time
from pathlib import Path
from typing import Any

from cai.train.recipe import ONLINE_KINDS

# Which logged metric means what, per trainer (TRL 1.16 names).
ACCURACY_KEYS = {"dpo": "rewards/accuracies", "reward": "accuracy", "sft": "mean_token_accuracy"}
MARGIN_KEYS = {"dpo": "rewards/margins", "reward": "margin"}


def flatten(d: dict, prefix: str = "") -> dict:
    """Nested mappings as dotted keys: {"a": {"b": 1}} -> {"a.b": 1}."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def make_metrics_callback(path: Path):
    """A TrainerCallback appending every log (and resume events) to `path` as JSON lines, main process only."""
    from transformers import TrainerCallback

    class MetricsJSONL(TrainerCallback):
        def __init__(self):
            self.path = Path(path)
            self.started = time.time()

        def _write(self, row: dict) -> None:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row, default=_jsonable) + "\n")

        def on_train_begin(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                self._write({"event": "train_begin", "global_step": state.global_step, "max_steps": state.max_steps,
                             "world_size": args.world_size, "time": round(time.time(), 3)})

        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and logs:
                self._write({"step": state.global_step, "epoch": state.epoch, **logs,
                             "elapsed": round(time.time() - self.started, 3)})

        def on_save(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                self._write({"event": "checkpoint", "global_step": state.global_step})

    return MetricsJSONL()


def _jsonable(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def trim_log(path: Path, global_step: int) -> int:
    """Drop the rows logged after the checkpoint a run resumes from (and a torn last line); how many went.

    Steps after the checkpoint are trained and logged again on resume, so keeping their
    first rows would log them twice.
    """
    from cai.io import write_atomic

    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            dropped += 1
            continue
        step = row.get("global_step" if "event" in row else "step")
        if isinstance(step, int) and step > global_step and row.get("event") != "resume":
            dropped += 1
            continue
        kept.append(line + "\n")
    if dropped:
        write_atomic(path, "".join(kept))
    return dropped


def append_event(path: Path, row: dict) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")


def peak_memory() -> dict:
    """Peak memory of this process: CUDA allocator peak when a GPU is in use, else peak RSS."""
    out = {"peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    try:
        import torch

        if torch.cuda.is_available():
            out["peak_cuda_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    except ImportError:
        pass
    return out


def current_rss_mib() -> float | None:
    """Resident memory of this process now (Linux /proc), for "peak above what the model load started from"."""
    try:
        for line in open("/proc/self/status", encoding="ascii"):
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def summarize(kind: str, log_history: list[dict], *, eval_metrics: dict | None = None,
              extra: dict | None = None) -> dict:
    """Final figures from the trainer's log history: loss, accuracy, margins, time, tokens/s, memory."""
    train_logs = [row for row in log_history if "loss" in row]
    final = next((row for row in reversed(log_history) if "train_runtime" in row), {})
    last = train_logs[-1] if train_logs else {}
    summary: dict[str, Any] = {"kind": kind}
    summary["global_step"] = final.get("step", last.get("step"))
    summary["loss"] = last.get("loss")
    summary["train_loss"] = final.get("train_loss")
    acc, margin = ACCURACY_KEYS.get(kind), MARGIN_KEYS.get(kind)
    if acc and acc in last:
        summary["train_accuracy"] = last[acc]
    if margin and margin in last:
        summary["train_margin"] = last[margin]
    eval_metrics = eval_metrics or {}
    if "eval_loss" in eval_metrics:
        summary["eval_loss"] = eval_metrics["eval_loss"]
    if acc and f"eval_{acc}" in eval_metrics:
        summary["eval_accuracy"] = eval_metrics[f"eval_{acc}"]
    if margin and f"eval_{margin}" in eval_metrics:
        summary["eval_margin"] = eval_metrics[f"eval_{margin}"]
    runtime = final.get("train_runtime")
    summary["train_runtime_s"] = runtime
    tokens = next((row["num_tokens"] for row in reversed(log_history)
                   if "num_tokens" in row and "eval_loss" not in row), None)
    summary["tokens"] = tokens
    summary["tokens_per_s"] = round(tokens / runtime, 1) if tokens and runtime else None
    if kind in ONLINE_KINDS:
        summary.update(online_summary(log_history, eval_metrics))
    summary.update(peak_memory())
    summary.update(extra or {})
    return {k: _clean(v) for k, v in summary.items()}



def online_summary(log_history: list[dict], eval_metrics: dict) -> dict:
    """GRPO/RLOO: the total reward and each reward's mean and spread at the first and last logged step,
    the KL to the start model and the completion length at the last, and the eval reward."""
    steps = [row for row in log_history if "reward" in row and "loss" in row]
    if not steps:
        return {}
    first, last = steps[0], steps[-1]
    names = sorted({k.split("/")[1] for row in steps for k in row if k.startswith("rewards/") and k.endswith("/mean")})
    rewards = {}
    for name in names:
        means = [row[f"rewards/{name}/mean"] for row in steps if row.get(f"rewards/{name}/mean") is not None]
        rewards[name] = {"mean_first": first.get(f"rewards/{name}/mean"), "mean_last": last.get(f"rewards/{name}/mean"),
                         "std_last": last.get(f"rewards/{name}/std"),
                         "mean_over_steps": sum(means) / len(means) if means else None}
        if f"eval_rewards/{name}/mean" in eval_metrics:
            rewards[name]["eval_mean"] = eval_metrics[f"eval_rewards/{name}/mean"]
    out = {"reward_first": first.get("reward"), "reward_last": last.get("reward"),
           "reward_std_last": last.get("reward_std"),
           "rewards": {n: {k: _clean(v) for k, v in r.items()} for n, r in rewards.items()},
           "kl_last": last.get("kl"), "completion_length_last": last.get("completions/mean_length")}
    if "eval_reward" in eval_metrics:
        out["eval_reward"] = eval_metrics["eval_reward"]
    return out


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _online_rows(summary: dict) -> list[tuple[str, Any]]:
    if "reward_last" not in summary:
        return []

    def arrow(a, b):
        numbers = all(isinstance(v, (int, float)) for v in (a, b))
        return f"{a:.4g} -> {b:.4g}" if numbers else None

    rows = [("reward (first -> last step)", arrow(summary.get("reward_first"), summary["reward_last"]))]
    for name, r in summary.get("rewards", {}).items():
        spread = f" (std {r['std_last']:.3g})" if isinstance(r.get("std_last"), float) else ""
        shown = arrow(r.get("mean_first"), r.get("mean_last"))
        rows.append((f"  {name} (first -> last)", shown + spread if shown else None))
    rows += [("KL to the start model (last)", summary.get("kl_last")),
             ("completion length (last, tokens)", summary.get("completion_length_last")),
             ("eval reward (test prompts)", summary.get("eval_reward"))]
    return rows


def summary_table(summary: dict, title: str = "training summary"):
    from rich.table import Table

    rows = [
        ("steps", summary.get("global_step")),
        ("loss (last log)", summary.get("loss")),
        ("train loss (mean)", summary.get("train_loss")),
        ("reward accuracy (train)" if summary.get("kind") != "sft" else "token accuracy (train)",
         summary.get("train_accuracy")),
        ("reward margin (train)", summary.get("train_margin")),
        ("eval loss", summary.get("eval_loss")),
        ("reward accuracy (test)" if summary.get("kind") != "sft" else "token accuracy (test)",
         summary.get("eval_accuracy")),
        ("reward margin (test)", summary.get("eval_margin")),
        *_online_rows(summary),
        ("time", _seconds(summary.get("train_runtime_s"))),
        ("tokens/s", summary.get("tokens_per_s")),
        ("peak memory", _memory(summary)),
        ("processes", summary.get("world_size")),
        ("output", summary.get("out")),
        ("merged", summary.get("merged")),
    ]
    table = Table(title=title, show_header=False)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in rows:
        if value is None:
            continue
        table.add_row(name, f"{value:.4g}" if isinstance(value, float) else str(value))
    return table


def _seconds(value) -> str | None:
    if value is None:
        return None
    value = float(value)
    return f"{value:.1f} s" if value < 120 else f"{value / 60:.1f} min"


def _memory(summary: dict) -> str | None:
    if summary.get("peak_cuda_mib") is not None:
        return f"{summary['peak_cuda_mib']:.0f} MiB (CUDA, rank 0)"
    if summary.get("peak_rss_mib") is not None:
        return f"{summary['peak_rss_mib']:.0f} MiB (RSS, rank 0)"
    return None


def model_card(*, kind: str, base: dict, data: dict, recipe: str, resolved: dict, summary: dict,
               adapter: bool, command: str, versions: dict) -> str:
    """README.md for the output folder: YAML front matter the hub understands, then the story."""
    from io import StringIO

    from ruamel.yaml import YAML

    front = {
        "library_name": "peft" if adapter else "transformers",
        "base_model": base.get("name") if base.get("source") == "hub" else base.get("path"),
        "tags": ["cai", "constitutional-ai", "trl", kind] + (["lora"] if adapter else []),
        "pipeline_tag": "text-classification" if kind == "reward" else "text-generation",
    }
    buf = StringIO()
    yaml = YAML()
    yaml.default_flow_style = False
    yaml.dump(front, buf)
    what = {"sft": "supervised fine-tuning on the revisions (`train_sft`): the SL-CAI stage",
            "dpo": "direct preference optimisation on chosen (revised) vs rejected (original) answers",
            "reward": "a reward model (sequence classifier with one output) on chosen vs rejected answers",
            "grpo": "online RL (GRPO) on the dataset's prompts against the recipe's rewards",
            "rloo": "online RL (RLOO) on the dataset's prompts against the recipe's rewards"}[kind]
    flat = flatten(summary)              # rewards.NAME.mean_last, ...
    metrics = "\n".join(f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |"
                        for k, v in flat.items() if v is not None and k not in ("kind",))
    cfg = StringIO()
    YAML().dump(resolved, cfg)
    return (
        f"---\n{buf.getvalue()}---\n\n# cai {kind} model\n\n"
        f"Trained by `cai train {kind}`: {what}.\n\n"
        f"- base model: `{base.get('name')}` (`{base.get('path')}`, {base.get('source')})\n"
        f"- dataset: `{data.get('path')}` splits `{data.get('split')}` / `{data.get('eval_split')}` "
        f"({data.get('train_rows')} / {data.get('eval_rows')} rows); dataset card sha256 `{data.get('card_sha256')}`\n"
        f"- recipe: `{recipe}`\n"
        "- weights: "
        f"{'a LoRA adapter (load with peft `PeftModel.from_pretrained(base, this_dir)`)' if adapter else 'full model'}"
        f"{'; merged weights in `merged/`' if summary.get('merged') else ''}\n"
        f"- versions: {', '.join(f'{k} {v}' for k, v in versions.items())}\n"
        f"- command: `{command}`\n\n"
        "## Metrics\n\n| metric | value |\n| --- | --- |\n" + metrics + "\n\n"
        "Per-step logs are in `metrics.jsonl`; the full resolved configuration is in `config.yaml`.\n\n"
        "## Resolved configuration\n\n```yaml\n" + cfg.getvalue() + "```\n"
    )


def command_line() -> str:
    import shlex

    return " ".join(shlex.quote(a) for a in ["cai", *sys.argv[1:]]) if sys.argv else "cai"
