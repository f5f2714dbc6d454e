"""Bench: `cai train grpo` against TRL's own GRPO script, the judge reward's cost, and a plumbing run on the \
embedded model.

1. Step time (`--only step`). The same tiny-model LoRA GRPO run (random Llama, hidden 64, 2 layers, SmolLM2
   tokenizer; 72 distinct prompts; 8 completions a step = 2 prompts x 4 generations; up to 128 new tokens; beta
   0.1; fp32 on the CPU) through `cai train grpo` and through `trl/scripts/grpo.py` with identical settings and
   the same reward function (`low_id_share` below, given to cai as `{type: function}` and to TRL's script
   as `--reward_funcs`). Timed as bench/train_dpo.py does (bench/_steptime.py): one callback in both,
   alternating runs, one compute thread. Target: cai / TRL <= 1.05.
2. Judge cost (`--only judge`). On the embedded SmolLM2-135M-Instruct: the judge reward (`{type: judge}`, one
   principle per completion, both label orders) per completion, against generating that completion (greedy,
   the same prompts and length, batch 16). Also with every enabled principle averaged (`sample: null`).
3. Plumbing (`--only plumbing`). `cai train grpo --recipe smoke/grpo` on the embedded model for 30 steps over
   data/red_team.jsonl with the toxicity and judge rewards, then `cai eval --adapter` against the starting
   model on the held-out data/eval_red_team.jsonl and data/eval_helpful.jsonl. Reports the reward on the first
   and last five steps, the training rewards recomputed on the held-out replies of both models (paired
   differences with 95% bootstrap intervals), and eval's deltas, whatever they show: a 135M model and 30
   steps test the plumbing, not the method.

    .venv/bin/python bench/train_grpo.py [--only step|judge|plumbing] [--repeats 5] [--steps 12] [--tokens 128]
        [--judge-completions 16] [--judge-repeats 3] [--plumbing-steps 30] [--eval-limit N] [--work DIR] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _steptime import child, compare, print_table, timed_run  # noqa: E402

LORA = {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": "all-linear"}
SETTINGS = {"per_device_train_batch_size": 8, "gradient_accumulation_steps": 1, "num_generations": 4,
            "learning_rate": 1e-5, "beta": 0.1, "epsilon": 0.2, "max_grad_norm": 1.0, "temperature": 1.0,
            "warmup_steps": 0, "logging_steps": 1, "seed": 42}
REWARD = "train_grpo.low_id_share"          # importable in both tools' processes (bench/ on PYTHONPATH)
PLUMBING_REWARDS = ("[{type: toxicity, scorer: toxic-bilstm, weight: 1.0}, "
                    "{type: judge, constitution: hhh, principles: all, sample: 1, weight: 1.0}]")


def low_id_share(completion_ids, **_) -> list[float]:
    """A cheap reward that varies between completions, so the step time is the trainers' own: the share of a
    completion's tokens in the lower half of the vocabulary."""
    return [sum(i < 24576 for i in ids) / len(ids) if ids else 0.0 for ids in completion_ids]


# --- 1. step time against TRL's script -----------------------------------------------------

def cai_args(data: Path, model: Path, out: Path, steps: int, tokens: int) -> list[str]:
    sets = [f"training.{k}={v}" for k, v in SETTINGS.items()] + [f"lora.{k}={v}" for k, v in LORA.items()]
    sets += [f"training.max_steps={steps}", f"training.max_completion_length={tokens}", "training.save_strategy=no",
             "training.eval_strategy=no", "data.eval_split=null", f"rewards=[{{type: function, function: {REWARD}}}]"]
    args = ["train", "grpo", "--recipe", "smoke/grpo", "--data", str(data), "--model", str(model), "--out", str(out),
            "--overwrite"]
    for s in sets:
        args += ["--set", s]
    return args


def trl_args(data: Path, model: Path, out: Path, steps: int, tokens: int) -> list[str]:
    """trl/scripts/grpo.py arguments for the settings cai resolves on a CPU."""
    values = {**SETTINGS, "max_steps": steps, "max_completion_length": tokens, "save_strategy": "no",
              "eval_strategy": "no", "use_cpu": True, "bf16": False, "fp16": False, "gradient_checkpointing": False,
              "dataloader_pin_memory": False, "report_to": "none", "disable_tqdm": True, "dtype": "float32",
              "use_peft": True, "lora_r": LORA["r"], "lora_alpha": LORA["alpha"], "lora_dropout": LORA["dropout"],
              "lora_target_modules": LORA["target_modules"], "dataset_name": str(data),
              "dataset_train_split": "train_prefs", "model_name_or_path": str(model), "output_dir": str(out),
              "reward_funcs": REWARD}
    args = []
    for k, v in values.items():
        args += [f"--{k}", str(v)]
    return args


def step_time(work: Path, repeats: int, steps: int, tokens: int, env: dict) -> dict:
    from train_dpo import build_inputs

    data, tiny, _ = build_inputs(work, [])
    runs = {"cai": [], "trl": []}
    for i in range(repeats):
        for tool in ("cai", "trl"):
            out = work / f"{tool}-{i}"
            argv = (cai_args if tool == "cai" else trl_args)(data, tiny, out, steps, tokens)
            runs[tool].append(timed_run(__file__, tool, argv, env, work))
            r = runs[tool][-1]
            print(f"{tool} run {i}: {r['wall']:.3f} s/step wall, {r['cpu']:.3f} s/step CPU "
                  f"(median of steps 3..{r['steps']})", flush=True)
    return {"steps": steps, "repeats": repeats, "tokens": tokens, "runs": runs, "summary": compare(runs)}


# --- 2. the judge reward against one generation ---------------------------------------------

def judge_cost(n: int, tokens: int, repeats: int) -> dict:
    from cai.constitution import load_constitution
    from cai.engines.base import SamplingParams
    from cai.engines.transformers import TransformersEngine
    from cai.generation.prompt_files import load_prompts
    from cai.models import resolve_model
    from cai.paths import shipped_dir
    from cai.train.rewards import JudgeEntry, JudgeReward

    model = resolve_model(None)
    constitution = load_constitution(shipped_dir("constitution") / "hhh.yaml")
    prompts = [[{"role": "user", "content": r.prompt}] for r in load_prompts(ROOT / "data" / "red_team.jsonl")[:n]]
    engine = TransformersEngine(model.path, batch_size=16)
    engine.load()
    judges = {"one principle": JudgeReward(JudgeEntry(sample=1), constitution, model.path, seed=0),
              "every principle": JudgeReward(JudgeEntry(sample=None), constitution, model.path, seed=0)}
    for judge in judges.values():
        judge.load()
    warm = engine.generate(prompts[:2], SamplingParams(max_new_tokens=8))    # first calls page buffers in: not timed
    for judge in judges.values():
        judge(prompts=prompts[:2], completions=[[{"role": "assistant", "content": o.text}] for o in warm])
    times: dict[str, list[float]] = {"generate": [], **{k: [] for k in judges}}
    completions, used = [], 0
    for _ in range(repeats):                       # alternate, so load from other jobs hits both alike
        start = time.perf_counter()
        outs = engine.generate(prompts, SamplingParams(max_new_tokens=tokens))
        times["generate"].append((time.perf_counter() - start) / n)
        completions = [[{"role": "assistant", "content": o.text}] for o in outs]
        used = sum(o.completion_tokens for o in outs) / n
        for name, judge in judges.items():
            start = time.perf_counter()
            judge(prompts=prompts, completions=completions)
            times[name].append((time.perf_counter() - start) / n)
    engine.close()
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"completions": n, "max_new_tokens": tokens, "mean_completion_tokens": round(used, 1), "repeats": repeats,
            "principles": sum(p.enabled for p in constitution.principles),
            "s_per_completion": {k: round(v, 4) for k, v in med.items()},
            "judge_vs_generation": {k: round(med[k] / med["generate"], 3) for k in judges}}


# --- 3. plumbing: 30 steps on red-team prompts, then cai eval --------------------------------

def red_team_dataset(folder: Path) -> Path:
    """train_prefs = data/red_team.jsonl as prompts (RL needs no answers); eval uses the held-out files."""
    from datasets import Dataset, DatasetDict

    from cai.generation.prompt_files import load_prompts

    rows = [{"prompt": [{"role": "user", "content": r.prompt}], "category": r.category}
            for r in load_prompts(ROOT / "data" / "red_team.jsonl")]
    if not (folder / "dataset_dict.json").is_file():
        DatasetDict({"train_prefs": Dataset.from_list(rows)}).save_to_disk(str(folder))
    return folder


def run_cli(args: list[str], env: dict) -> None:
    proc = subprocess.run([sys.executable, "-m", "cai.cli.main", *args], env=env, capture_output=True, text=True)
    if proc.returncode not in (0, 1):             # eval exits 1 when a gate check fails: still a result
        sys.exit(f"cai {args[0]} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")


def plumbing(work: Path, steps: int, tokens: int, env: dict, eval_limit: int | None = None) -> dict:
    from cai.evaluation.bootstrap import estimate, paired_difference

    data = red_team_dataset(work / "red-team-dataset")
    out, evaluation = work / "grpo", work / "eval"
    start = time.perf_counter()
    run_cli(["train", "grpo", "--recipe", "smoke/grpo", "--data", str(data), "--out", str(out), "--overwrite",
             "--set", f"rewards={PLUMBING_REWARDS}", "--set", f"training.max_steps={steps}",
             "--set", f"training.max_completion_length={tokens}", "--set", "training.save_strategy=no",
             "--set", "data.eval_split=null"], env)
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    run_cli(["eval", "--adapter", str(out), "--prompts", str(ROOT / "data" / "eval_red_team.jsonl"),
             "--helpful-prompts", str(ROOT / "data" / "eval_helpful.jsonl"), "--max-new-tokens", str(tokens),
             "--quiet", "--out", str(evaluation), *(["--limit", str(eval_limit)] if eval_limit else [])], env)
    eval_s = time.perf_counter() - start
    logs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    logs = [row for row in logs if "reward" in row and "loss" in row]
    first, last = logs[:5], logs[-5:]
    curve = {}
    for key in ("reward", "rewards/toxicity/mean", "rewards/judge/mean", "kl", "completions/mean_length"):
        a = estimate([r[key] for r in first if r.get(key) is not None])
        b = estimate([r[key] for r in last if r.get(key) is not None])
        curve[key] = {"first_5_steps": a.to_dict(), "last_5_steps": b.to_dict()}
    # The training rewards on the held-out red-team replies of the trained model and the start model.
    held_out = held_out_rewards(evaluation / "responses.jsonl", out)
    rewards = {name: paired_difference(values["model"], values["baseline"]).to_dict() | {
        "model": estimate(values["model"]).to_dict()["value"],
        "baseline": estimate(values["baseline"]).to_dict()["value"]}
        for name, values in held_out.items()}
    metrics = json.loads((evaluation / "metrics.json").read_text())["metrics"]
    return {"steps": steps, "max_completion_length": tokens, "train_s": round(train_s), "eval_s": round(eval_s),
            "summary": json.loads((out / "summary.json").read_text()), "training_curve": curve,
            "held_out_reward_delta": rewards, "eval_delta": metrics.get("delta", {}),
            "eval_model": metrics.get("model", {}), "eval_baseline": metrics.get("baseline", {})}


def held_out_rewards(responses: Path, grpo_out: Path) -> dict[str, dict[str, list[float]]]:
    """The run's own reward functions (its config.yaml) on both models' replies to the held-out red-team prompts."""
    from ruamel.yaml import YAML

    from cai.train.recipe import load_recipe
    from cai.train.rewards import build_reward_funcs

    config = YAML(typ="safe").load((grpo_out / "config.yaml").read_text())
    recipe = load_recipe(config["recipe"], overrides=config["overrides"])
    funcs, _ = build_reward_funcs(recipe, config["model"]["path"], None, seed=42)
    rows = [json.loads(line) for line in responses.read_text().splitlines()]
    rows = [r for r in rows if r["set"] == "red_team"]
    prompts = [[{"role": "user", "content": r["prompt"]}] for r in rows]
    out: dict[str, dict[str, list[float]]] = {}
    weights = [e.weight for e in recipe.rewards]
    total = {"model": [0.0] * len(rows), "baseline": [0.0] * len(rows)}
    for func, weight in zip(funcs, weights):
        out[func.__name__] = {}
        for side in ("model", "baseline"):
            completions = [[{"role": "assistant", "content": r[f"{side}_response"]}] for r in rows]
            values = func(prompts=prompts, completions=completions)
            out[func.__name__][side] = values
            total[side] = [t + weight * v for t, v in zip(total[side], values)]
    out["reward"] = total
    return out


# --- main ------------------------------------------------------------------------------------

def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], "trl.scripts.grpo" if sys.argv[3] == "trl" else sys.argv[3], sys.argv[4:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("step", "judge", "plumbing"), action="append",
                        help="Run these parts (repeatable); default: all three.")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--tokens", type=int, default=128, help="Completion length (max new tokens) of every part.")
    parser.add_argument("--judge-completions", type=int, default=16)
    parser.add_argument("--judge-repeats", type=int, default=3)
    parser.add_argument("--plumbing-steps", type=int, default=30)
    parser.add_argument("--eval-limit", type=int, default=None, help="First N prompts of each eval set (default: all).")
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=1, help="Compute threads of every part (OMP_NUM_THREADS).")
    args = parser.parse_args()
    parts = args.only or ["step", "judge", "plumbing"]
    work = args.work or Path(tempfile.mkdtemp(prefix="cai-bench-grpo-"))
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "bench"), str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    result: dict = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "load_avg_1m_start": round(os.getloadavg()[0], 1),
                    "machine": f"{os.cpu_count()} cores, {platform.machine()}, CPU only",
                    "command": " ".join([sys.executable, *sys.argv])}
    # One compute thread everywhere: with two on this shared 2-core machine a busy neighbour makes every OpenMP
    # barrier spin, and step times jump 3x at random (see RESULTS.md, Training).
    env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    if "step" in parts:
        result["step_time"] = step_time(work, args.repeats, args.steps, args.tokens, env)
    if "judge" in parts:
        import torch

        torch.set_num_threads(args.threads)
        result["judge"] = judge_cost(args.judge_completions, args.tokens, args.judge_repeats)
        print(json.dumps({"judge": result["judge"]}), flush=True)
    if "plumbing" in parts:
        result["plumbing"] = plumbing(work / "plumbing", args.plumbing_steps, args.tokens, env, args.eval_limit)
    result["load_avg_1m_end"] = round(os.getloadavg()[0], 1)
    (work / "result.json").write_text(json.dumps(result, indent=1))
    print(f"raw figures: {work / 'result.json'} (load average {result['load_avg_1m_start']} -> "
          f"{result['load_avg_1m_end']})")
    print_tables(result)


def _ci(e: dict, spec: str = "+.3f") -> str:
    """`value [lo, hi]` of an Estimate.to_dict()."""
    if e.get("value") is None:
        return "-"
    lo, hi = e["ci"]
    return f"{e['value']:{spec}} [{lo:{spec}}, {hi:{spec}}]"


def print_tables(result: dict) -> None:
    """Markdown tables on stdout: bench/run_all.py copies them into bench/RESULTS.md."""
    if "step_time" in result:
        st = result["step_time"]
        print_table(st, f"Step time, tiny-model LoRA GRPO, {st['tokens']} new tokens")
    if "judge" in result:
        j = result["judge"]
        print(f"\nJudge reward per completion vs generating it, embedded SmolLM2-135M, {j['completions']} red-team "
              f"prompts, up to {j['max_new_tokens']} new tokens (mean {j['mean_completion_tokens']}), median of "
              f"{j['repeats']} alternating repeats:\n")
        print("| step | s per completion | vs one generation |")
        print("| --- | --- | --- |")
        print(f"| generate (greedy, batch 16) | {j['s_per_completion']['generate']:.3f} | 1 |")
        for name in ("one principle", "every principle"):
            count = 1 if name == "one principle" else j["principles"]
            print(f"| judge, {name} ({2 * count} forward passes) | {j['s_per_completion'][name]:.3f} | "
                  f"{j['judge_vs_generation'][name]:.3f} |")
    if "plumbing" in result:
        p = result["plumbing"]
        print(f"\nPlumbing: GRPO on the embedded model, {p['steps']} steps over data/red_team.jsonl (toxicity + judge "
              f"rewards), {p['train_s']} s training, {p['eval_s']} s eval; mean of the first and last 5 steps with "
              "95% bootstrap intervals over steps:\n")
        print("| logged per step | first 5 steps | last 5 steps |")
        print("| --- | --- | --- |")
        for key, c in p["training_curve"].items():
            a, b = c["first_5_steps"], c["last_5_steps"]
            print(f"| {key} | {_ci(a, '.4g')} | {_ci(b, '.4g')} |")
        print("\nThe training rewards on the held-out red-team replies (data/eval_red_team.jsonl), trained model vs "
              "the start model, paired difference with a 95% bootstrap interval:\n")
        print("| reward | trained | start | difference [95% CI] |")
        print("| --- | --- | --- | --- |")
        for name, d in p["held_out_reward_delta"].items():
            print(f"| {name} | {d['model']:.3f} | {d['baseline']:.3f} | {_ci(d)} |")
        print("\n`cai eval --adapter` deltas (trained - start model, paired, 95% bootstrap interval):\n")
        print("| metric | prompts | trained | start | difference [95% CI] |")
        print("| --- | --- | --- | --- | --- |")
        for name, d in p["eval_delta"].items():
            model, base = p["eval_model"].get(name, {}), p["eval_baseline"].get(name, {})
            print(f"| {name} | {d.get('prompts')} | {model.get('value', float('nan')):.3f} | "
                  f"{base.get('value', float('nan')):.3f} | {_ci(d)} |")


if __name__ == "__main__":
    main()
