"""Does training on the data move the model? The end-to-end alignment benchmark.

    python bench/alignment.py [--data DATASET] [--model PATH] [--engine transformers|vllm] [--work DIR]
                              [--recipes recipes/small] [--split test|validation] [--quick] [--no-write]

Every step is a `cai` command, run as a user would run it (wall time and peak RSS of each recorded):

0. data: `cai data import hh-rlhf data/hh-rlhf/harmless-base-test.jsonl.gz` (the public HH-RLHF
   harmless-base test file shipped in data/, MIT), then `cai data split --test-share 0.2
   --validation-share 0.1`: train, validation and test splits sharing no prompt. `--data` takes any
   cai export instead (its own test split is kept; validation comes out of train). The harmful eval
   prompts are the first user turns of the held-out split (near-duplicates of training prompts left
   out); the helpful ones are data/eval_helpful.jsonl.
1. reward model: `cai train reward` on train, `cai eval rm` on the held-out pairs (accuracy against
   50% chance, with published figures for scale).
2. DPO: `cai train dpo` on train, `cai eval` of the policy against its start model on the held-out
   prompts, with the step-1 reward model for the win rate (it has seen no eval prompt).
3. online RL: `cai train grpo` from the start model, rewarded by the step-1 reward model, toxicity
   and refusals (recipes/small/grpo.yaml), then the same `cai eval`.
4. `cai report WORK`: the before/after page.

`--split validation` evaluates on the validation split instead (and data/helpful.jsonl as the
helpful prompts): settings are chosen that way, never on the test split. The figures go to
bench/RESULTS.md (between this script's markers) and WORK/results.json. Killed, the same command
skips the finished steps. `--quick` is the CPU-sized plumbing version (a few dozen pairs, a few
steps) that the test suite runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

HH = ROOT / "data" / "hh-rlhf" / "harmless-base-test.jsonl.gz"
RESULTS = ROOT / "bench" / "RESULTS.md"
BEGIN, END = "<!-- bench/alignment.py: begin -->", "<!-- bench/alignment.py: end -->"
TEST_SHARE, VALIDATION_SHARE = 0.2, 0.1
# The CPU-sized version: every stage runs, on a few dozen pairs and a few steps.
QUICK = {"import": ["--limit", "60"], "harmful": 6, "max_new_tokens": 8, "eval": ["--limit", "4"],
         "train": ["--set", "training.max_steps=2", "--set", "training.save_strategy=no"],
         "grpo": ["--set", "training.max_completion_length=8", "--set", "training.num_generations=2",
                  "--set", "training.per_device_train_batch_size=4"]}
# Published reward-model accuracies on the same data, for scale (quoted from the papers, not measured here).
PUBLISHED = [
    ("Bai et al. 2022, *Training a Helpful and Harmless Assistant with RLHF* (arXiv:2204.05862), Figure 7 "
     "(right): preference models trained on the static harmlessness comparisons (about 42k) reach about 72% "
     "test accuracy at 10^9 to 10^10 parameters and about 68% at 10^8, read off the paper's plot "
     "(preference-model pretraining first; their own 5% test split of the static data)"),
    ("Lee et al. 2023, *RLAIF vs. RLHF* (arXiv:2309.00267), Appendix H, Table 5: a PaLM 2 XS reward model "
     "trained on the harmless-base training split reaches 72.1% pairwise accuracy on held-out human preferences "
     "(69.7% when trained on AI preferences); from the paper"),
]
ROWS = ("harmless_rate", "safety_score", "mean_toxicity", "toxicity_rate", "red_team_refusal_rate", "refusal_rate",
        "mean_length", "mean_reward", "win_rate", "ai_win_rate")


def cai_command() -> list[str]:
    exe = Path(sys.executable).parent / "cai"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "cai.cli.main"]


class Steps:
    """Runs each `cai` step once: wall time and the peak RSS of its process tree, kept in WORK/steps.json."""

    def __init__(self, work: Path):
        self.work = work
        self.path = work / "steps.json"
        self.done: dict = json.loads(self.path.read_text()) if self.path.is_file() else {}

    def run(self, name: str, args: list[str], *, output: Path) -> dict:
        if name in self.done and output.exists():
            print(f"[alignment] {name}: done earlier ({self.done[name]['seconds']} s)", file=sys.stderr)
            return self.done[name]
        log = self.work / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        shown = "cai " + " ".join(str(a) for a in args)
        print(f"[alignment] {name}: {shown}", file=sys.stderr, flush=True)
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
               "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
        start = time.perf_counter()
        with open(log, "w") as fh:
            proc = subprocess.Popen([*cai_command(), *map(str, args)], stdout=fh, stderr=subprocess.STDOUT, env=env,
                                    cwd=ROOT)
            _, status, usage = os.wait4(proc.pid, 0)           # this child's own rusage: its peak RSS
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = round(time.perf_counter() - start, 1)
        if proc.returncode != 0:
            tail = log.read_text(errors="replace").strip().splitlines()[-5:]
            raise SystemExit(f"[alignment] {name} failed (exit {proc.returncode}, log {log}):\n" + "\n".join(tail))
        self.done[name] = {"command": shown, "seconds": seconds, "peak_rss_mib": round(usage.ru_maxrss / 1024),
                           "load_avg_1m": round(os.getloadavg()[0], 1), "finished": time.strftime("%H:%M:%S")}
        self.path.write_text(json.dumps(self.done, indent=1))
        print(f"[alignment] {name}: {seconds} s", file=sys.stderr, flush=True)
        return self.done[name]


def prepare_data(args, steps: Steps) -> Path:
    """WORK/dataset: train, validation and test by prompt, from the shipped HH-RLHF file or --data."""
    from cai.preferences.split import read_pairs

    dataset = args.work / "dataset"
    if args.data is None:
        source = args.work / "import"
        steps.run("import", ["data", "import", "hh-rlhf", HH, "--out", source,
                             *(QUICK["import"] if args.quick else [])], output=source)
        test_share = ["--test-share", str(TEST_SHARE)]
    else:
        source = Path(args.data)
        test_share = [] if read_pairs(source).get("test_prefs") else ["--test-share", str(TEST_SHARE)]
    steps.run("split", ["data", "split", source, "--out", dataset, "--validation-share", str(VALIDATION_SHARE),
                        *test_share, "--seed", str(args.seed)], output=dataset)
    return dataset


def eval_prompts(args, dataset: Path) -> tuple[Path, Path, dict]:
    """The harmful prompts of the held-out split (a JSONL file) and the helpful prompt file, checked held out."""
    from cai.evaluation.heldout import draw, find_overlap, first_turn_prompts
    from cai.generation.prompt_files import load_prompts
    from cai.preferences.split import read_pairs

    pairs = read_pairs(dataset)
    held = f"{args.split}_prefs"
    seen = [s for s in ("train_prefs", "validation_prefs", "test_prefs") if s != held and
            not (args.split == "validation" and s == "test_prefs")]
    training = [m["content"] for s in seen for r in pairs.get(s, []) for m in r["prompt"] if m["role"] == "user"]
    every = first_turn_prompts(dataset, held)
    kept = first_turn_prompts(dataset, held, exclude=training)
    harmful = draw(kept, args.harmful, args.seed)
    path = args.work / "prompts" / f"harmful-{args.split}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in harmful))
    helpful = Path(args.helpful or ROOT / "data" / ("eval_helpful.jsonl" if args.split == "test" else "helpful.jsonl"))
    grpo_prompts = [r.prompt for r in load_prompts(ROOT / "data" / "helpful.jsonl")] if args.split == "test" else []
    helpful_prompts = [r.prompt for r in load_prompts(helpful)]
    facts = {"harmful_prompts": len(harmful), "held_out_first_turns": len(every),
             "near_duplicates_left_out": len(every) - len(kept),
             "helpful_prompts": len(helpful_prompts), "helpful_file": str(helpful.relative_to(ROOT))
             if helpful.is_relative_to(ROOT) else str(helpful),
             "helpful_overlap_with_rl_prompts": len(find_overlap(helpful_prompts, grpo_prompts))}
    return path, helpful, facts


def train_and_eval(args, steps: Steps, dataset: Path, harmful: Path, helpful: Path) -> None:
    work, recipes = args.work, Path(args.recipes)
    model = ["--model", args.model] if args.model else []
    quick = QUICK["train"] if args.quick else []
    steps.run("reward", ["train", "reward", "--recipe", recipes / "reward.yaml", "--data", dataset,
                         "--out", work / "reward", *model, *quick], output=work / "reward" / ".cai-complete")
    steps.run("reward-eval", ["eval", "rm", "--reward-model", work / "reward", "--data", dataset, "--split",
                              f"{args.split}_prefs", "--out", work / "eval-rm" / "rm.json", "--quiet"],
              output=work / "eval-rm" / "rm.json")
    vllm = ["--set", "training.use_vllm=true", "--set", "training.vllm_mode=colocate"] if args.engine == "vllm" else []
    for kind, extra in (("dpo", []), ("grpo", [*vllm, *(QUICK["grpo"] if args.quick else [])])):
        steps.run(kind, ["train", kind, "--recipe", recipes / f"{kind}.yaml", "--data", dataset, "--out", work / kind,
                         *model, *quick, *extra], output=work / kind / ".cai-complete")
        steps.run(f"{kind}-eval", ["eval", "--adapter", work / kind, "--prompts", harmful, "--helpful-prompts", helpful,
                                   "--reward-model", work / "reward", "--max-new-tokens", args.max_new_tokens,
                                   "--seed", args.seed, "--out", work / f"eval-{kind}", "--quiet",
                                   *(QUICK["eval"] if args.quick else [])],
                  output=work / f"eval-{kind}" / "metrics.json")
    steps.run("report", ["report", work, "--no-score"], output=work / "report.html")


# ----------------------------------------------------------------------------- the results


def gather(args, steps: Steps, dataset: Path, facts: dict) -> dict:
    from cai.preferences.export import read_card
    from cai.report.build import before_after

    work = args.work
    rm = json.loads((work / "eval-rm" / "rm.json").read_text())
    evals = {kind: json.loads((work / f"eval-{kind}" / "metrics.json").read_text()) for kind in ("dpo", "grpo")}
    table = before_after([(kind, evals[kind]) for kind in evals] + [("reward model", rm)])
    summaries = {kind: json.loads((work / kind / "summary.json").read_text()) for kind in ("reward", "dpo", "grpo")}
    return {"kind": "cai-bench-alignment", "created": time.strftime("%Y-%m-%d %H:%M %Z"),
            "command": " ".join(["python", "bench/alignment.py", *sys.argv[1:]]), "split": args.split,
            "data": str(args.data or HH.relative_to(ROOT)), "model": args.model or "embedded SmolLM2-135M-Instruct",
            "recipes": str(args.recipes), "counts": (read_card(dataset) or {}).get("counts"), "prompts": facts,
            "machine": machine(), "steps": steps.done, "rm": rm["metrics"]["rm"], "rm_pairs": rm["pairs"],
            "before_after": table, "train": {k: {key: s.get(key) for key in ("global_step", "train_runtime_s", "loss",
                                                                             "train_loss")}
                                             for k, s in summaries.items()},
            "start_values_agree": evals["dpo"]["metrics"]["baseline"] == evals["grpo"]["metrics"]["baseline"]}


def machine() -> dict:
    cpu = platform.machine()
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    from cai.io import versions

    return {"cpu": cpu, "cores": os.cpu_count(), **versions("torch", "transformers", "trl", "peft")}


def _ci(entry: dict | None, signed: bool = False) -> str:
    from cai.evaluation.metrics import format_metric

    return format_metric(entry, signed=signed)


def markdown(result: dict) -> str:
    """The RESULTS.md section: every figure with its interval, the commands, wall time and peak memory."""
    ba, rm, counts = result["before_after"], result["rm"], result["counts"] or {}
    held = "test" if result["split"] == "test" else "validation"
    lines = [BEGIN, "", "## Alignment: does training on the data move the model? (`bench/alignment.py`)", "",
             f"`{result['command']}` on {result['created']}, {result['machine']['cpu']}, "
             f"{result['machine']['cores']} cores; {result['model']}; recipes `{_shown(result['recipes'])}`; "
             f"data `{result['data']}` split by prompt: "
             + ", ".join(f"{k} {v}" for k, v in counts.items() if k.endswith("_prefs")) + " pairs. "
             f"Harmful eval prompts: {result['prompts']['harmful_prompts']} first user turns of the {held} split "
             f"({result['prompts']['near_duplicates_left_out']} near-duplicates of training prompts left out); "
             f"helpful: {result['prompts']['helpful_prompts']} from `{result['prompts']['helpful_file']}`.", "",
             "### Reward model", "",
             "| figure | value [95% CI] | against | beyond the interval? |", "| --- | --- | --- | --- |",
             f"| pairwise accuracy on {result['rm_pairs']} held-out {held} pairs | {_ci(rm.get('rm_accuracy'))} | "
             f"chance 0.5 | {_verdict(rm.get('rm_accuracy'), 0.5)} |",
             f"| mean reward margin (chosen - rejected) | {_ci(rm.get('rm_mean_margin'), True)} | 0 | "
             f"{_verdict(rm.get('rm_mean_margin'), 0.0)} |", "",
             "Published accuracies of large reward models on the same data, for scale (from the papers, not measured "
             "here; their test splits and training sets differ from this bench's):", ""]
    lines += [f"- {text}." for text in PUBLISHED]
    cols = [c for c in ba["columns"] if c in ("dpo", "grpo")]
    lines += ["", "### Policies against their start model", "",
              "Paired differences on the same prompts (policy minus start model), 95% bootstrap intervals; the win "
              "rate is the share of prompts where the step-1 reward model scores the policy's reply above the start "
              "model's (ties half), against 0.5.", "",
              "| metric | prompts | start | " + " | ".join(f"{c.upper()} | {c.upper()} - start [95% CI] | moved?"
                                                       for c in cols) + " |",
              "| --- | --- | --- |" + " --- | --- | --- |" * len(cols)]
    for row in ba["rows"]:
        if row["name"] not in ROWS:
            continue
        cells = [row["cells"][ba["columns"].index(c)] for c in cols]
        start = next((c["before"] for c in cells if c and c.get("before")), None)
        parts = []
        for cell in cells:
            if not cell:
                parts += ["-", "-", "-"]
            elif "delta" in cell:
                parts += [_ci(cell["after"]), _ci(cell["delta"], True), cell["moved"] or "no"]
            else:
                parts += [_ci(cell["after"]), "vs 0.5", cell["moved"] or "no"]
        lines.append(f"| {row['name']} | {row['prompts']} | {_ci(start) if start else '-'} | "
                     + " | ".join(parts) + " |")
    lines += ["", "### Steps", "", "| step | command | wall s | peak RSS MiB | load avg at end |",
              "| --- | --- | --- | --- | --- |"]
    for name, step in result["steps"].items():
        note = f" ({step['note']})" if step.get("note") else ""
        lines.append(f"| {name} | `{_shown(step['command'])}` | {step['seconds']}{note} | {step['peak_rss_mib']} | "
                     f"{step['load_avg_1m']} |")
    total = sum(step["seconds"] for step in result["steps"].values())
    partial = " (the steps with a note counted in part)" if any(s.get("note") for s in result["steps"].values()) else ""
    lines += ["", f"Total wall time {total / 60:.1f} min{partial}. What moved beyond its 95% interval, and what did "
              "not:", ""]
    lines += [f"- {line}" for line in movement(ba)]
    lines += ["", END]
    return "\n".join(lines) + "\n"


def _shown(text: str) -> str:
    """Paths inside the checkout written relative to it, as a user types them there."""
    return text.replace(f"{ROOT}/", "")


def _verdict(entry: dict | None, null: float) -> str:
    from cai.report.build import moved

    if not entry or entry.get("value") is None:
        return "-"
    return {"up": "yes, above", "down": "yes, below"}.get(moved(entry, null), "no")


def movement(table: dict) -> list[str]:
    from cai.report.build import movement_lines

    return [line["text"] for line in movement_lines(table)]


def write_section(text: str) -> None:
    """Replace this script's marked section of RESULTS.md, or append it; the rest of the file stays."""
    current = RESULTS.read_text(encoding="utf-8")
    if BEGIN in current and END in current:
        head, rest = current.split(BEGIN, 1)
        new = head + text.rstrip("\n") + rest.split(END, 1)[1]
    else:
        new = current.rstrip("\n") + "\n\n" + text
    tmp = RESULTS.with_name(f".{RESULTS.name}.tmp")
    tmp.write_text(new, encoding="utf-8")
    os.replace(tmp, RESULTS)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="a cai export (default: the shipped HH-RLHF harmless-base test file, imported)")
    p.add_argument("--model", help="start model of every stage (default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument("--engine", choices=("transformers", "vllm"), default="transformers",
                   help="generation inside online RL: vllm colocated with the trainer (GPUs)")
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "bench" / "alignment")
    p.add_argument("--recipes", default=str(ROOT / "recipes" / "small"), help="folder of reward, dpo, grpo .yaml")
    p.add_argument("--split", choices=("test", "validation"), default="test",
                   help="held-out split to measure on (validation: for choosing settings)")
    p.add_argument("--harmful", type=int, default=200, help="harmful eval prompts drawn from the held-out split")
    p.add_argument("--helpful", help="helpful eval prompts (default: data/eval_helpful.jsonl; validation: "
                                     "data/helpful.jsonl)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="CPU-sized plumbing run: a few dozen pairs, a few steps")
    p.add_argument("--no-write", action="store_true", help="leave bench/RESULTS.md alone")
    args = p.parse_args(argv)
    if args.quick:
        args.harmful = min(args.harmful, QUICK["harmful"])
        args.max_new_tokens = min(args.max_new_tokens, QUICK["max_new_tokens"])
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    args.work = args.work.resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    steps = Steps(args.work)
    dataset = prepare_data(args, steps)
    harmful, helpful, facts = eval_prompts(args, dataset)
    train_and_eval(args, steps, dataset, harmful, helpful)
    result = gather(args, steps, dataset, facts)
    (args.work / "results.json").write_text(json.dumps(result, indent=1, default=str))
    text = markdown(result)
    print(text)
    if not (args.quick or args.no_write or args.split != "test"):
        write_section(text)
    return result


if __name__ == "__main__":
    main()
