"""Bench: `cai train dpo` against TRL's own DPO script, and LoRA DPO memory with vs without a reference copy.

1. Step time. The same tiny-model LoRA DPO run (random Llama, hidden 64, 2 layers, SmolLM2 tokenizer;
   64 preference pairs; batch 2; max length 128; fp32 on the CPU) through `cai train dpo` and through
   `python -m trl.scripts.dpo` (TRL's DPOTrainer script) with identical settings. Runs alternate
   (cai, trl, cai, trl, ...) so load from other processes hits both alike; the figure is the
   median of train_runtime / steps per tool. Target: cai / trl <= 1.05.
2. Peak memory. LoRA DPO on the embedded SmolLM2-135M-Instruct through `cai train dpo`: the default
   reference (the base with the adapter disabled, no second copy) against the same run with a full
   reference copy (`--set dpo.ref_model=<the same model>`). Peak RSS of the training process: raw, net of
   the Python + torch + TRL runtime (a process that only imports them), and the part the run adds above
   its own RSS just before the first model load (the CPU analogue of a GPU's allocated-memory peak).
   Target: without / with <= 0.65.

    .venv/bin/python bench/train_dpo.py [--repeats 3] [--steps 20] [--memory-steps 3] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LORA = {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": "all-linear"}
SETTINGS = {"per_device_train_batch_size": 2, "gradient_accumulation_steps": 1, "learning_rate": 5e-5,
            "warmup_steps": 0, "max_length": 128, "beta": 0.1, "logging_steps": 1, "seed": 42}


def build_inputs(work: Path) -> tuple[Path, Path, Path]:
    """(dataset dir, tiny model dir, embedded model dir)."""
    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    from cai.dataset import write_dataset
    from cai.models import resolve_model

    embedded = Path(resolve_model(None).path)
    data = work / "dataset"
    if not data.exists():
        polite = ["Of course, I would be glad to help. Thank you for asking.",
                  "Happy to help! Here is a careful, kind answer for you."]
        rude = ["No. Go away, idiot, figure it out yourself.", "Stupid question. Stop wasting my time, moron."]
        rows = []
        for i in range(72):
            prompt = [{"role": "user", "content": f"Question {i}: can you help me with task {i}?"}]
            chosen = [{"role": "assistant", "content": polite[i % 2]}]
            rejected = [{"role": "assistant", "content": rude[i % 2]}]
            rows.append({"pair_id": f"p{i}", "generation_id": f"g{i}", "prompt": prompt, "chosen": chosen,
                         "rejected": rejected, "messages": prompt + chosen, "category": "c", "source": "bench",
                         "strategy": "final-vs-initial", "principle_ids": ["p"], "model": "bench"})
        write_dataset(rows, data, test_share=0.1, seed=0)
    tiny = work / "tiny-model"
    if not (tiny / "config.json").exists():
        tokenizer = AutoTokenizer.from_pretrained(embedded)
        config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=2048,
                             tie_word_embeddings=True, initializer_range=0.2, bos_token_id=tokenizer.bos_token_id,
                             eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
        model.generation_config = GenerationConfig(bos_token_id=tokenizer.bos_token_id,
                                                   eos_token_id=tokenizer.eos_token_id,
                                                   pad_token_id=tokenizer.pad_token_id)
        model.save_pretrained(tiny)
        tokenizer.save_pretrained(tiny)
    return data, tiny, embedded


def cai_command(data: Path, model: Path, out: Path, steps: int, extra: list[str] = ()) -> list[str]:
    sets = [f"training.{k}={v}" for k, v in SETTINGS.items()] + [f"lora.{k}={v}" for k, v in LORA.items()]
    sets += [f"training.max_steps={steps}", "training.loss_type=[sigmoid]", "training.save_strategy=no",
             "training.eval_strategy=no", "data.eval_split=null", *extra]
    cmd = [sys.executable, "-m", "cai.cli.main", "train", "dpo", "--recipe", "smoke/dpo", "--data", str(data),
           "--model", str(model), "--out", str(out), "--overwrite"]
    for s in sets:
        cmd += ["--set", s]
    return cmd


def trl_command(data: Path, model: Path, out: Path, steps: int) -> list[str]:
    """TRL's own script (trl/scripts/dpo.py) with the settings cai resolves on a CPU."""
    args = {**SETTINGS, "max_steps": steps, "loss_type": "sigmoid", "save_strategy": "no", "eval_strategy": "no",
            "use_cpu": True, "bf16": False, "fp16": False, "gradient_checkpointing": False,
            "dataloader_pin_memory": False, "report_to": "none", "disable_tqdm": True, "dtype": "float32",
            "use_peft": True, "lora_r": LORA["r"], "lora_alpha": LORA["alpha"], "lora_dropout": LORA["dropout"],
            "lora_target_modules": LORA["target_modules"], "dataset_name": str(data),
            "dataset_train_split": "train_prefs", "dataset_test_split": "test_prefs",
            "model_name_or_path": str(model), "output_dir": str(out)}
    cmd = [sys.executable, "-m", "trl.scripts.dpo"]
    for k, v in args.items():
        cmd += [f"--{k}", str(v)]
    return cmd


def run(cmd: list[str], env: dict) -> tuple[float, str]:
    start = time.time()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-4000:]}")
    return time.time() - start, proc.stdout + proc.stderr


def runtime_from_logs(text: str) -> float:
    found = re.findall(r"'train_runtime': '?([0-9.]+)'?", text)
    if not found:
        sys.exit("no train_runtime in TRL's output")
    return float(found[-1])


def baseline_rss(env: dict) -> float:
    code = ("import resource, torch, transformers, trl, peft, datasets, accelerate;"
            "from trl import DPOTrainer, DPOConfig;"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
    return float(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                check=True).stdout.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--memory-steps", type=int, default=3)
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="cai-bench-train-"))
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false")
    data, tiny, embedded = build_inputs(work)

    step = {"cai": [], "trl": []}
    for i in range(args.repeats):
        for tool in ("cai", "trl"):
            out = work / f"{tool}-{i}"
            if tool == "cai":
                wall, _ = run(cai_command(data, tiny, out, args.steps), env)
                summary = json.loads((out / "summary.json").read_text())
                runtime = summary["train_runtime_s"]
            else:
                wall, logs = run(trl_command(data, tiny, out, args.steps), env)
                runtime = runtime_from_logs(logs)
            step[tool].append(runtime / args.steps)
            print(f"{tool} run {i}: {runtime / args.steps:.3f} s/step (wall {wall:.1f} s)", flush=True)
    cai_step, trl_step = statistics.median(step["cai"]), statistics.median(step["trl"])

    memory = {}
    for name, extra in (("adapter-disabled reference", []), ("full reference copy", [f"dpo.ref_model={embedded}"])):
        out = work / f"mem-{'copy' if extra else 'lora'}"
        run(cai_command(data, embedded, out, args.memory_steps, extra), env)
        summary = json.loads((out / "summary.json").read_text())
        memory[name] = {"peak_rss_mib": summary["peak_rss_mib"], "rss_before_model_mib": summary["rss_before_model_mib"],
                        "train_runtime_s": summary["train_runtime_s"]}
        print(f"memory {name}: {memory[name]}", flush=True)
    base = baseline_rss(env)
    lora, copy = memory["adapter-disabled reference"], memory["full reference copy"]
    without, with_copy = lora["peak_rss_mib"], copy["peak_rss_mib"]
    added = (lora["peak_rss_mib"] - lora["rss_before_model_mib"]) / (copy["peak_rss_mib"] - copy["rss_before_model_mib"])

    result = {
        "date": time.strftime("%Y-%m-%d"), "machine": f"{os.cpu_count()} cores, {platform.machine()}, CPU only",
        "steps": args.steps, "repeats": args.repeats,
        "cai_s_per_step": step["cai"], "trl_s_per_step": step["trl"],
        "cai_median": cai_step, "trl_median": trl_step, "step_time_ratio": cai_step / trl_step,
        "memory_steps": args.memory_steps, "peak_rss_mib": memory, "runtime_baseline_rss_mib": base,
        "memory_ratio_raw": without / with_copy,
        "memory_ratio_net_of_runtime": (without - base) / (with_copy - base),
        "memory_ratio_above_pre_model_rss": added,
    }
    (work / "result.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    print(f"\nstep time: cai {cai_step:.3f} s/step, TRL script {trl_step:.3f} s/step, ratio {cai_step / trl_step:.3f} "
          f"(target <= 1.05)")
    print(f"peak RSS: {without:.0f} MiB without vs {with_copy:.0f} MiB with a reference copy: ratio "
          f"{without / with_copy:.3f} raw, {(without - base) / (with_copy - base):.3f} net of the {base:.0f} MiB "
          f"runtime, {added:.3f} counting only what the run adds above its RSS just before the model load "
          f"(target <= 0.65)")


if __name__ == "__main__":
    main()
