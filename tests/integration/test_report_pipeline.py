"""The whole flow on a tiny random model: generate -> pairs -> eval (adapter vs base) -> report."""

from __future__ import annotations

import json
from pathlib import Path

from support import REPO, cli

DATA = REPO / "data"


def test_generate_pairs_eval_report(tmp_path, tiny_model_dir):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(line + "\n" for line in (DATA / "red_team.jsonl").read_text().splitlines()[:4]))
    run = tmp_path / "run"
    cli(["generate", "--constitution", "constitution/hhh.yaml", "--prompts", str(prompts), "--model",
             str(tiny_model_dir), "--out", str(run), "--max-new-tokens", "6", "--few-shot", "1", "--rounds", "2",
             "--quiet", "--no-pairs"])
    cli(["data", "pairs", str(run), "--keep-truncated", "--test-share", "0.25"])
    torch.manual_seed(3)
    policy = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                            LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    policy.save_pretrained(run / "dpo")
    (run / "dpo" / "metrics.jsonl").write_text("".join(
        json.dumps({"step": s, "loss": 1.0 / s, "rewards/margins": 0.1 * s, "rewards/accuracies": 0.5}) + "\n"
        for s in range(1, 6)))
    cli(["eval", "--adapter", str(run / "dpo"), "--prompts", "data/eval_red_team.jsonl", "--helpful-prompts",
             "data/eval_helpful.jsonl", "--limit", "2", "--max-new-tokens", "6", "--quiet"])
    assert (run / "eval" / "metrics.json").is_file()

    result = cli(["report", str(run), "--samples", "3"])
    path = Path(result.output.strip())
    assert path == run / "report.html"
    html = path.read_text()
    for needle in ("Counts through the pipeline", "Training curves: dpo", "Eval metrics against the gate",
                   "Gate failed (eval/metrics.json)", "safety_score", "class=\"sample pair\""):
        assert needle in html, needle
    assert html.count("<img ") == 7      # funnel, principles, toxicity, lengths, rounds, dpo curves, eval
