"""Step time of a training run in a child process, cai's CLI against a TRL script: shared by
bench/train_dpo.py and bench/train_grpo.py.

The child adds one timing callback to every Trainer (the same for both tools) and records each
optimizer step from its start to the next step's start, so everything a step costs (logging, cai's
metrics JSONL, TRL's printer) is inside. Runs alternate between the tools so load from other
processes hits both alike.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path


def child(times_file: str, tool: str, args: list[str]) -> None:
    """Run cai's CLI (`tool` "cai") or a TRL script module (e.g. "trl.scripts.dpo") with a step timer."""
    import runpy

    from transformers import TrainerCallback, trainer_callback

    starts: list[tuple[float, float]] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            starts.append((time.perf_counter(), time.process_time()))

        def on_train_end(self, args, state, control, **kwargs):
            starts.append((time.perf_counter(), time.process_time()))

    original = trainer_callback.CallbackHandler.__init__

    def init(self, callbacks, *rest, **kw):
        original(self, [*callbacks, StepTimer()], *rest, **kw)

    trainer_callback.CallbackHandler.__init__ = init
    code = 0
    try:
        if tool == "cai":
            from cai.cli.main import main

            sys.argv = ["cai", *args]
            main()
        else:
            sys.argv = [tool.replace(".", "/") + ".py", *args]
            runpy.run_module(tool, run_name="__main__")
    except SystemExit as exc:
        code = exc.code or 0
    wall = [b[0] - a[0] for a, b in zip(starts, starts[1:])]
    cpu = [b[1] - a[1] for a, b in zip(starts, starts[1:])]
    Path(times_file).write_text(json.dumps({"wall": wall, "cpu": cpu}))
    sys.exit(code)


def timed_run(script: str, tool: str, args: list[str], env: dict, work: Path) -> dict:
    """Run `script --child TIMES tool ARGS`; the medians of its steps after the first two."""
    times = work / f"times-{tool}-{time.time_ns()}.json"
    cmd = [sys.executable, script, "--child", str(times), tool, *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{tool} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    data = json.loads(times.read_text())
    steady = slice(2, None)                       # the first steps pay for lazy initialisation
    return {"wall": statistics.median(data["wall"][steady]), "cpu": statistics.median(data["cpu"][steady]),
            "steps": len(data["wall"]), "wall_steps": data["wall"][steady]}


def compare(runs: dict[str, list[dict]]) -> dict:
    """cai / trl: median and best of the run medians (wall, CPU), and the pooled lower decile of all steps."""
    summary = {}
    for measure in ("wall", "cpu"):
        cai_m = statistics.median(r[measure] for r in runs["cai"])
        trl_m = statistics.median(r[measure] for r in runs["trl"])
        cai_b = min(r[measure] for r in runs["cai"])
        trl_b = min(r[measure] for r in runs["trl"])
        summary[measure] = {"cai_median": cai_m, "trl_median": trl_m, "ratio_median": cai_m / trl_m,
                            "cai_best": cai_b, "trl_best": trl_b, "ratio_best": cai_b / trl_b}
    # Every steady step of every run: the lower decile is the cost of a step nobody disturbed.
    pooled = {tool: sorted(t for r in runs[tool] for t in r["wall_steps"]) for tool in runs}
    p10 = {tool: values[len(values) // 10] for tool, values in pooled.items()}
    summary["wall_p10_pooled"] = {"cai": p10["cai"], "trl": p10["trl"], "ratio": p10["cai"] / p10["trl"],
                                  "steps_per_tool": len(pooled["cai"])}
    return summary


def print_table(step_time: dict, title: str) -> None:
    """The markdown table bench/run_all.py copies into bench/RESULTS.md."""
    s, p10 = step_time["summary"], step_time["summary"]["wall_p10_pooled"]
    print(f"\n{title}, {step_time['steps']} steps x {step_time['repeats']} alternating runs per tool "
          f"(target cai / TRL <= 1.05):\n")
    print("| measure | cai s/step | TRL script s/step | cai / TRL |")
    print("| --- | --- | --- | --- |")
    for label, a, b in (("median of run medians, wall", s["wall"]["cai_median"], s["wall"]["trl_median"]),
                        ("median of run medians, CPU", s["cpu"]["cai_median"], s["cpu"]["trl_median"]),
                        (f"lower decile of {p10['steps_per_tool']} steps, wall", p10["cai"], p10["trl"]),
                        ("best run, wall", s["wall"]["cai_best"], s["wall"]["trl_best"])):
        print(f"| {label} | {a:.3f} | {b:.3f} | {a / b:.3f} |")
