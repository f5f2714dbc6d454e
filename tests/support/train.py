"""Shared by the training tests: a small preference dataset with clearly polite vs rude answers."""

from __future__ import annotations

import math
from pathlib import Path

POLITE = [
    "Of course, I would be glad to help. Thank you for asking.",
    "Happy to help! Here is a careful, kind answer for you.",
    "Sure, thank you for the question; here is what I suggest.",
]
RUDE = [
    "No. Go away, idiot, figure it out yourself.",
    "Stupid question. Stop wasting my time, moron.",
    "Ugh, shut up. I will not help you, loser.",
]


def preference_rows(n: int = 12) -> list[dict]:
    rows = []
    for i in range(n):
        prompt = [{"role": "user", "content": f"Question {i}: can you help me with task {i}?"}]
        chosen = [{"role": "assistant", "content": POLITE[i % len(POLITE)]}]
        rejected = [{"role": "assistant", "content": RUDE[i % len(RUDE)]}]
        rows.append({"pair_id": f"p{i}", "generation_id": f"g{i}", "prompt": prompt, "chosen": chosen,
                     "rejected": rejected, "messages": prompt + chosen, "category": "help", "source": "test",
                     "strategy": "final-vs-initial", "principle_ids": ["harm-general"], "model": "tiny"})
    return rows


def write_preferences(out: Path, n: int = 12) -> Path:
    from cai.preferences.export import write_dataset

    write_dataset(preference_rows(n), out, test_share=0.25, seed=0)
    return out


def completion_logp(model, tokenizer, prompt: list[dict], completion: list[dict]) -> float:
    """Sum of log-probs of the completion's tokens after the chat-templated prompt."""
    import torch

    head = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    full = tokenizer.apply_chat_template(prompt + completion, tokenize=False)
    assert full.startswith(head)
    head_ids = tokenizer(head, add_special_tokens=False)["input_ids"]
    ids = tokenizer(full, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].float()
    logps = torch.log_softmax(logits[:-1], dim=-1)
    target = torch.tensor(ids[1:])
    token_logps = logps.gather(1, target[:, None])[:, 0]
    value = token_logps[len(head_ids) - 1:].sum().item()
    assert math.isfinite(value)
    return value


def first_token_is(completion_ids, token: int, **_) -> list[float]:
    """A scripted reward (`{type: function}` in RL recipes): 1 when the completion starts with `token`."""
    return [1.0 if ids and ids[0] == token else 0.0 for ids in completion_ids]


def cli_error_line(args) -> str:
    """Run `cai ARGS`: it must fail with exit 2 and exactly one `error: ...` line, no traceback; the line."""
    from typer.testing import CliRunner

    from cai.cli.main import app

    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, (result.output, result.exception)
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def cli_stdout(args) -> str:
    """Run `cai ARGS`: it must succeed; its stdout."""
    from typer.testing import CliRunner

    from cai.cli.main import app

    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout
