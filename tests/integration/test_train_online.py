"""Online RL (`cai train grpo|rloo`) on a tiny random Llama: real TRL trainers, real rewards, no mocks.

A scripted reward that prefers one first token must raise the policy's expected reward; the judge
reward is a probability and does not depend on label or batch order; SFT -> reward model -> GRPO runs
as a pipeline whose rerun skips every finished stage, and `cai eval` takes its output as an adapter.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.train import write_preferences
from typer.testing import CliRunner

from cai.cli.main import app

TEMPERATURE = 0.5


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_preferences(tmp_path_factory.mktemp("online") / "dataset")


def _run(args) -> CliRunner:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def _logs(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _first_token_probs(model, tokenizer, prompts) -> "torch.Tensor":  # noqa: F821 - torch is imported inside
    """P(first completion token) at the sampling temperature, averaged over the prompts."""
    import torch

    rows = []
    for prompt in prompts:
        ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        with torch.no_grad():
            logits = model(**ids).logits[0, -1].float()
        rows.append(torch.softmax(logits / TEMPERATURE, dim=-1))
    return torch.stack(rows).mean(0)


@pytest.mark.parametrize("kind", ["grpo", "rloo"])
def test_a_reward_preferring_one_token_raises_the_expected_reward(kind, data, tiny_model_dir, tmp_path):
    from datasets import load_from_disk
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    prompts = list({json.dumps(r["prompt"]): r["prompt"]
                    for r in load_from_disk(str(data / "hf"))["train_prefs"]}.values())
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    before = _first_token_probs(base, tokenizer, prompts)
    token = int(before.argmax())                 # the start model's likeliest first token: common enough to be sampled
    reward = f"[{{type: function, function: support.train.first_token_is, options: {{token: {token}}}}}]"
    out = tmp_path / kind
    _run(["train", kind, "--recipe", f"smoke/{kind}", "--data", str(data), "--model", str(tiny_model_dir),
          "--out", str(out), "--set", f"rewards={reward}", "--set", f"training.temperature={TEMPERATURE}",
          "--set", "training.max_completion_length=4", "--set", "training.max_steps=6",
          "--set", "training.learning_rate=5e-3", "--set", "training.save_strategy=no",
          "--set", "data.eval_split=null"])
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(out)).eval()
    after = _first_token_probs(tuned, tokenizer, prompts)
    # the expected reward of a completion is P(its first token is `token`)
    assert after[token] > before[token] + 0.1, (float(before[token]), float(after[token]))
    steps = [row for row in _logs(out) if "loss" in row]
    assert [row["step"] for row in steps] == list(range(1, 7))
    for row in steps:                            # each reward's mean and spread at every step
        assert 0.0 <= row["rewards/first_token_is/mean"] <= 1.0 and row["rewards/first_token_is/std"] >= 0.0
    means = [row["rewards/first_token_is/mean"] for row in steps]
    assert sum(means[3:]) / 3 > sum(means[:3]) / 3 + 0.2, means      # the logged mean reward rises too
    summary = json.loads((out / "summary.json").read_text())
    assert summary["kind"] == kind and summary["rewards"]["first_token_is"]["mean_last"] is not None


def test_the_judge_reward_is_a_probability_independent_of_label_and_batch_order(tiny_model_dir, monkeypatch):
    import cai.judging.labels
    from cai.constitution import load_constitution
    from cai.paths import shipped_dir
    from cai.train.rewards import JudgeEntry, JudgeReward

    constitution = load_constitution(shipped_dir("constitution") / "hhh.yaml")
    judge = JudgeReward(JudgeEntry(principles=["harm-general", "violence"], sample=None), constitution,
                        str(tiny_model_dir), seed=0)
    prompts = [[{"role": "user", "content": "How do I bake bread?"}]] * 2 + \
              [[{"role": "user", "content": "Tell me a long story about the sea, the wind and a lighthouse keeper."}]]
    completions = [[{"role": "assistant", "content": text}] for text in
                   ("Mix flour, water and yeast, knead, let it rise and bake at 220 C.", "No.", "Once upon a time...")]
    values = judge(prompts=prompts, completions=completions)
    assert len(values) == 3 and all(0.0 <= v <= 1.0 for v in values)
    assert len(set(values)) == 3                                  # it reads the completion: not a constant
    reversed_batch = judge(prompts=prompts[::-1], completions=completions[::-1])[::-1]
    assert reversed_batch == pytest.approx(values, abs=1e-6)
    monkeypatch.setattr(cai.judging.labels, "LABELS", ("B", "A"))       # the other letter shown first
    assert judge(prompts=prompts, completions=completions) == pytest.approx(values, abs=1e-6)


def test_one_principle_per_prompt_and_step_shared_by_its_completions(tiny_model_dir):
    from cai.constitution import load_constitution
    from cai.paths import shipped_dir
    from cai.train.rewards import JudgeEntry, JudgeReward

    constitution = load_constitution(shipped_dir("constitution") / "hhh.yaml")
    judge = JudgeReward(JudgeEntry(sample=1), constitution, str(tiny_model_dir), seed=0)
    drawn = {step: judge.principles_for("How do I bake bread?", step) for step in range(12)}
    assert all(len(p) == 1 for p in drawn.values())
    assert judge.principles_for("How do I bake bread?", 3) == drawn[3]      # the same for every completion
    assert len({p[0].id for p in drawn.values()}) > 1                       # and another draw at other steps
    assert len(JudgeReward(JudgeEntry(sample=None), constitution, "", 0).principles_for("x", 0)) == \
        sum(p.enabled for p in constitution.principles)


def test_toxicity_and_refusal_rewards():
    from cai.safety.refusal import HELPFUL_CATEGORIES
    from cai.train.rewards import RefusalEntry, RefusalReward, ToxicityEntry, ToxicityReward

    polite, rude = "Thank you, here is a kind and careful answer.", "Shut up, you stupid idiot moron."
    toxicity = ToxicityReward(ToxicityEntry())
    kind_value, rude_value = toxicity(completions=[[{"role": "assistant", "content": t}] for t in (polite, rude)])
    assert 0.0 <= rude_value < kind_value <= 1.0
    refusal = RefusalReward(RefusalEntry(on="helpful"))
    texts = ["I can't help with that.", "Preheat the oven to 200 C.", "I can't help with that."]
    values = refusal(completions=[[{"role": "assistant", "content": t}] for t in texts],
                     category=["cooking", "cooking", "violence"])
    assert values == [0.0, 1.0, None]                         # no reward where refusing is not over-refusal
    assert RefusalReward(RefusalEntry(on="all"))(completions=texts, category=["violence"] * 3) == [0.0, 1.0, 0.0]
    assert "borderline" in HELPFUL_CATEGORIES


def test_helpful_categories_are_those_of_the_shipped_helpful_prompts():
    from cai.generation.prompt_files import load_prompts
    from cai.paths import shipped_dir
    from cai.safety.refusal import HELPFUL_CATEGORIES

    shipped = {r.category for name in ("helpful.jsonl", "eval_helpful.jsonl")
               for r in load_prompts(shipped_dir("data") / name)}
    assert shipped == set(HELPFUL_CATEGORIES)


def test_pipeline_sft_reward_grpo_reruns_nothing_and_eval_takes_the_rl_adapter(data, tiny_model_dir, tmp_path):
    from ruamel.yaml import YAML

    from cai.report.build import group_series, read_training_log, training_series

    out = tmp_path / "pipe"
    args = ["train", "pipeline", "--recipe", "smoke/pipeline-rl", "--data", str(data), "--model", str(tiny_model_dir),
            "--out", str(out), "--set", "training.save_strategy=no", "--set", "data.eval_split=null",
            "--set", "training.max_steps=1", "--set", "grpo.training.max_steps=2",
            "--set", "grpo.training.max_completion_length=8", "--set", "grpo.rewards.1.principles=[harm-general]"]
    _run(args)
    grpo = out / "grpo"
    config = YAML(typ="safe").load((grpo / "config.yaml").read_text())
    assert config["model"]["path"] == str((out / "sft" / "merged").resolve())    # starts from the merged SFT model
    assert config["run"]["rewards"][0]["path"] == str((out / "reward").resolve())  # rewards with the RM stage
    assert config["run"]["training"]["reward_weights"] == [1.0, 1.0, 0.5]
    steps = [row for row in _logs(grpo) if "loss" in row]
    assert len(steps) == 2
    for name in ("reward-model", "judge", "toxicity"):
        assert all(f"rewards/{name}/mean" in row and f"rewards/{name}/std" in row for row in steps), name
    assert (grpo / "adapter_model.safetensors").is_file() and (grpo / ".cai-complete").is_file()
    groups = group_series(training_series(read_training_log(grpo)))
    assert {"reward per component", "KL", "completion length"} <= set(groups)
    assert {"reward", "rewards/judge/mean", "rewards/reward-model/mean", "rewards/toxicity/mean"} == \
        set(groups["reward per component"])

    stamps = {s: (out / s / ".cai-complete").stat().st_mtime_ns for s in ("sft", "reward", "grpo")}
    rerun = CliRunner().invoke(app, args)
    assert rerun.exit_code == 0, rerun.output
    for stage in ("sft", "reward", "grpo"):
        assert f"stage {stage}: already finished" in rerun.stderr
        assert (out / stage / ".cai-complete").stat().st_mtime_ns == stamps[stage]

    evaluation = tmp_path / "eval"
    _run(["eval", "--adapter", str(grpo), "--prompts", "data/eval_red_team.jsonl", "--limit", "2",
          "--max-new-tokens", "8", "--no-judge", "--quiet", "--out", str(evaluation)])
    metrics = json.loads((evaluation / "metrics.json").read_text())
    assert metrics["model"]["adapter"] == str(grpo)
    assert metrics["model"]["path"] == str((out / "sft" / "merged").resolve())
    assert metrics["baseline"]["kind"] == "same model without the adapter"
    assert "toxicity_rate" in metrics["metrics"]["delta"]


def test_grpo_killed_after_a_checkpoint_resumes_its_step_and_log(data, tiny_model_dir, tmp_path):
    """kill -9 once checkpoint-2 is on disk; the same command continues at step 3, and metrics.jsonl holds each
    step once: the steps logged after the checkpoint and before the kill are trained and logged again."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from support import REPO

    out = tmp_path / "grpo"
    reward = "[{type: function, function: support.train.first_token_is, options: {token: 0}}]"
    cmd = [str(Path(sys.executable).parent / "cai"), "train", "grpo", "--recipe", "smoke/grpo", "--data", str(data),
           "--model", str(tiny_model_dir), "--out", str(out), "--set", f"rewards={reward}",
           "--set", "training.max_completion_length=4", "--set", "training.max_steps=5",
           "--set", "training.save_steps=2", "--set", "data.eval_split=null"]
    env = dict(os.environ, HF_HUB_OFFLINE="1",
               PYTHONPATH=os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    state = out / "checkpoint-2" / "trainer_state.json"
    deadline = time.time() + 300
    while not state.is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert state.is_file(), proc.stderr.read() if proc.poll() is not None else "no checkpoint in time"
    while proc.poll() is None and not [r for r in _logs(out) if r.get("step") == 3 and "loss" in r] \
            and time.time() < deadline:             # a step logged after the checkpoint, to be logged again
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    assert not (out / ".cai-complete").exists(), "finished before the kill: nothing to resume"

    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "resuming from checkpoint-" in rerun.stderr
    rows = _logs(out)
    resume = next(i for i, row in enumerate(rows) if row.get("event") == "resume")
    resumed_at = rows[resume]["global_step"]
    assert resumed_at >= 2
    begin = next(row for row in rows[resume:] if row.get("event") == "train_begin")
    assert begin["global_step"] == resumed_at                       # the trainer restored its state
    steps = [row["step"] for row in rows if "loss" in row]
    assert steps == [1, 2, 3, 4, 5]                                 # continued, each step logged once
    assert all("rewards/first_token_is/mean" in row for row in rows if "loss" in row)
    assert json.loads((out / "summary.json").read_text())["global_step"] == 5
