"""Bench: `cai train dpo` against TRL's own DPO script, and LoRA DPO memory with vs without a reference copy.

1. Step time. The same tiny-model LoRA DPO run (random Llama, hidden 64, 2 layers, SmolLM2 tokenizer;
   72 preference pairs; batch 2; max length 128; fp32 on the CPU) through `cai train dpo` and through
   TRL's own script `trl/scripts/dpo.py` with identical settings. Both run in a child process that
   adds one timing callback to the Trainer (the same one for both) and records each optimizer step
   from one step's start to the next's, so everything a step costs (logging, cai's metrics JSONL, TRL's
   printer) is inside. Per run: the median step after the first two; per tool: the median and the best
   of the runs, which alternate (cai, trl, cai, ...) so load from other processes hits both alike, and
   the lower decile of all steady steps pooled (the cost of an undisturbed step). One compute thread
   per run (--threads) so a busy neighbour does not make OpenMP barriers spin. Target: cai / trl <= 1.05.
2. Peak memory. LoRA DPO on SmolLM2-135M-Instruct (the embedded model, saved here in bf16 as models
   ship on the hub, trained in fp32), and on random models of SmolLM2-360M's and TinyLlama-1.1B's
   shapes, through `cai train dpo`: the default reference (the base with the
   adapter disabled, no second copy) against the same run with a full reference copy
   (`--set dpo.ref_model=<the same model>`). Peak RSS of the training process: raw, and above its RSS
   just before the first model load (the CPU analogue of a GPU's allocated-memory peak), with activation
   checkpointing off (the recipe's `auto` on a CPU) and on (its `auto` on a GPU; the 1.1B shape runs
   only this way); the median of
   --memory-repeats alternating runs, since peak RSS moves by a few percent from run to run here.
   Target: without / with <= 0.65.

    .venv/bin/python bench/train_dpo.py [--repeats 5] [--steps 20] [--memory-steps 2] [--memory-repeats 3]
        [--memory-models 135m,360m,1b] [--work DIR] [--only step|memory] [--threads 1]
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
SETTINGS = {"per_device_train_batch_size": 2, "gradient_accumulation_steps": 1, "learning_rate": 5e-5,
            "warmup_steps": 0, "max_length": 128, "beta": 0.1, "logging_steps": 1, "seed": 42}


# --- inputs --------------------------------------------------------------------------------

# Random models of real models' shapes: memory does not depend on the weights' values, and the real
# checkpoints are not on this machine. name -> (label, LlamaConfig shape).
SHAPES = {
    "360m": ("SmolLM2-360M shape, random weights",
             {"hidden_size": 960, "intermediate_size": 2560, "num_hidden_layers": 32, "num_attention_heads": 15,
              "num_key_value_heads": 5}),
    "1b": ("TinyLlama-1.1B shape, random weights",
           {"hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22, "num_attention_heads": 32,
            "num_key_value_heads": 4}),
}
# Which activation-checkpointing settings each memory model runs with (the 1B one only as on a GPU: on).
CHECKPOINTING = {"135m": ("false", "true"), "360m": ("false", "true"), "1b": ("true",)}


def build_inputs(work: Path, shapes: list[str]) -> tuple[Path, Path, dict[str, tuple[str, Path]]]:
    """(dataset dir, tiny model dir, {name: (label, bf16 model dir)} for the memory half)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    from cai.models import resolve_model
    from cai.preferences.export import write_dataset

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
    tokenizer = AutoTokenizer.from_pretrained(embedded)
    tiny = work / "tiny-model"
    if not (tiny / "config.json").exists():
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
    models = {}
    bf16 = work / "smollm2-135m-bf16"
    if "135m" in shapes:
        if not (bf16 / "config.json").exists():
            AutoModelForCausalLM.from_pretrained(embedded, dtype=torch.bfloat16).save_pretrained(bf16)
            tokenizer.save_pretrained(bf16)
        models["135m"] = ("SmolLM2-135M-Instruct", bf16)
    for name in (n for n in shapes if n in SHAPES):
        label, shape = SHAPES[name]
        path = work / f"{name}-shape-random-bf16"
        if not (path / "config.json").exists():
            config = LlamaConfig(vocab_size=len(tokenizer), max_position_embeddings=2048, tie_word_embeddings=True,
                                 bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                 pad_token_id=tokenizer.pad_token_id, **shape)
            torch.manual_seed(0)
            LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(path)
            tokenizer.save_pretrained(path)
        models[name] = (label, path)
    return data, tiny, models


def cai_args(data: Path, model: Path, out: Path, steps: int, extra: list[str] = ()) -> list[str]:
    sets = [f"training.{k}={v}" for k, v in SETTINGS.items()] + [f"lora.{k}={v}" for k, v in LORA.items()]
    sets += [f"training.max_steps={steps}", "training.loss_type=[sigmoid]", "training.save_strategy=no",
             "training.eval_strategy=no", "data.eval_split=null", *extra]
    args = ["train", "dpo", "--recipe", "smoke/dpo", "--data", str(data), "--model", str(model), "--out", str(out),
            "--overwrite"]
    for s in sets:
        args += ["--set", s]
    return args


def trl_args(data: Path, model: Path, out: Path, steps: int) -> list[str]:
    """trl/scripts/dpo.py arguments for the settings cai resolves on a CPU."""
    values = {**SETTINGS, "max_steps": steps, "loss_type": "sigmoid", "save_strategy": "no", "eval_strategy": "no",
              "use_cpu": True, "bf16": False, "fp16": False, "gradient_checkpointing": False,
              "dataloader_pin_memory": False, "report_to": "none", "disable_tqdm": True, "dtype": "float32",
              "use_peft": True, "lora_r": LORA["r"], "lora_alpha": LORA["alpha"], "lora_dropout": LORA["dropout"],
              "lora_target_modules": LORA["target_modules"], "dataset_name": str(data),
              "dataset_train_split": "train_prefs", "dataset_test_split": "test_prefs",
              "model_name_or_path": str(model), "output_dir": str(out)}
    args = []
    for k, v in values.items():
        args += [f"--{k}", str(v)]
    return args


def run_cai(args: list[str], env: dict) -> None:
    proc = subprocess.run([sys.executable, "-m", "cai.cli.main", *args], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"cai failed ({proc.returncode}):\n{proc.stderr[-4000:]}")


# --- main ----------------------------------------------------------------------------------

def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], "trl.scripts.dpo" if sys.argv[3] == "trl" else sys.argv[3], sys.argv[4:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--memory-steps", type=int, default=2)
    parser.add_argument("--memory-repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--memory-models", default="135m,360m,1b",
                        help="Models of the memory half: 135m (the embedded one), 360m and 1b (random, real shapes).")
    parser.add_argument("--only", choices=("step", "memory"), default=None, help="Run one half of the bench.")
    parser.add_argument("--threads", type=int, default=1, help="Compute threads per step-time run (OMP_NUM_THREADS).")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="cai-bench-train-"))
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false")
    # One compute thread per run for the step-time half: with two threads on a shared 2-core machine a busy
    # neighbour makes every OpenMP barrier spin and step times jump 3x; one thread keeps both tools comparable.
    step_env = dict(env, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    shapes = [] if args.only == "step" else args.memory_models.split(",")
    unknown = sorted(set(shapes) - set(CHECKPOINTING))
    if unknown:
        parser.error(f"unknown --memory-models {unknown[0]!r}; choose from {', '.join(CHECKPOINTING)}")
    data, tiny, models = build_inputs(work, shapes)
    result: dict = {"date": time.strftime("%Y-%m-%d %H:%M %Z"),
                    "machine": f"{os.cpu_count()} cores, {platform.machine()}, CPU only",
                    "command": " ".join([sys.executable, *sys.argv])}

    if args.only != "memory":
        runs = {"cai": [], "trl": []}
        for i in range(args.repeats):
            for tool in ("cai", "trl"):
                out = work / f"{tool}-{i}"
                argv = cai_args(data, tiny, out, args.steps) if tool == "cai" else trl_args(data, tiny, out, args.steps)
                runs[tool].append(timed_run(__file__, tool, argv, step_env, work))
                r = runs[tool][-1]
                print(f"{tool} run {i}: {r['wall']:.3f} s/step wall, {r['cpu']:.3f} s/step CPU "
                      f"(median of steps 3..{r['steps']})", flush=True)
        summary = compare(runs)
        result["step_time"] = {"steps": args.steps, "repeats": args.repeats, "runs": runs, "summary": summary}

    if args.only != "step":
        memory, ratios = {}, {}
        for name, (label, model) in models.items():
            for checkpointing in CHECKPOINTING[name]:
                pair = {}
                peaks: dict[str, list] = {"lora": [], "copy": []}
                befores: dict[str, list] = {"lora": [], "copy": []}
                for i in range(args.memory_repeats):          # alternate; peak RSS varies by a few percent run to run
                    for ref, extra in (("lora", []), ("copy", [f"dpo.ref_model={model}"])):
                        out = work / f"mem-{model.name}-{ref}-{checkpointing}-{i}"
                        run_cai(cai_args(data, model, out, args.memory_steps,
                                         [*extra, f"training.activation_checkpointing={checkpointing}"]), env)
                        s = json.loads((out / "summary.json").read_text())
                        peaks[ref].append(s["peak_rss_mib"])
                        befores[ref].append(s["rss_before_model_mib"])
                        print(f"memory {label}, {ref}, activation checkpointing {checkpointing}, run {i}: "
                              f"peak {s['peak_rss_mib']} MiB", flush=True)
                for ref in ("lora", "copy"):
                    pair[ref] = {"peak_rss_mib": statistics.median(peaks[ref]), "runs": peaks[ref],
                                 "rss_before_model_mib": statistics.median(befores[ref])}
                key = f"{label}, activation_checkpointing={checkpointing}"
                memory[key] = pair
                lora, copy = pair["lora"], pair["copy"]
                ratios[key] = {
                    "raw": lora["peak_rss_mib"] / copy["peak_rss_mib"],
                    "above_pre_model_rss": (lora["peak_rss_mib"] - lora["rss_before_model_mib"])
                    / (copy["peak_rss_mib"] - copy["rss_before_model_mib"]),
                    "reference_copy_cost_mib": copy["peak_rss_mib"] - lora["peak_rss_mib"],
                }
        result["memory"] = {"steps": args.memory_steps, "runs": memory, "ratios": ratios}

    (work / "result.json").write_text(json.dumps(result, indent=1))
    print(f"raw figures: {work / 'result.json'}")
    print_tables(result)


def print_tables(result: dict) -> None:
    """Markdown tables on stdout: bench/run_all.py copies them into bench/RESULTS.md."""
    if "step_time" in result:
        print_table(result["step_time"], "Step time, tiny-model LoRA DPO")
    if "memory" in result:
        print(f"\nPeak RSS of LoRA DPO, {result['memory']['steps']} steps, median of alternating runs "
              "(target: adapter-disabled reference / full reference copy <= 0.65):\n")
        print("| model | activation checkpointing | adapter-disabled reference MiB | full reference copy MiB | "
              "ratio | ratio above pre-model RSS | the copy costs MiB |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for key, r in result["memory"]["ratios"].items():
            label, checkpointing = key.rsplit(", activation_checkpointing=", 1)
            pair = result["memory"]["runs"][key]
            print(f"| {label} | {checkpointing} | {pair['lora']['peak_rss_mib']:.0f} | "
                  f"{pair['copy']['peak_rss_mib']:.0f} | "
                  f"{r['raw']:.3f} | {r['above_pre_model_rss']:.3f} | {r['reference_copy_cost_mib']:.0f} |")

if __name__ == "__main__":
    main()
