"""`cai eval rm`: accuracy of a reward model, and of a DPO policy, on held-out preference pairs.

- Reward-model accuracy: share of pairs with RM(prompt, chosen) > RM(prompt,
  rejected) (ties count half).
- Preference accuracy of a policy adapter (`--adapter`): DPO's implicit reward
  is r(y) = beta * (log pi(y|x) - log pi_ref(y|x)), the policy's log-prob gain
  over its base model; accuracy is the share of pairs where r(chosen) >
  r(rejected). The sign does not depend on beta; the margin is reported with
  `--beta` (TRL's default 0.1).
Both come with 95% bootstrap intervals over pairs.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

from cai.errors import CaiError
from cai.evaluation.config import RMEvalConfig


def _content(value, where: str, key: str):
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(m, dict) and "content" in m for m in value):
        return value
    raise CaiError(f"{where}: {key}: expected a string or a list of messages with `content`")


def load_pairs(data: str | Path, split: str = "test_prefs") -> tuple[list[dict], Path]:
    """Rows with prompt/chosen/rejected from a dataset dir (its `hf/` DatasetDict) or a JSONL file."""
    path = Path(data)
    if path.is_dir():
        return _dataset_pairs(path, split), path
    if not path.is_file():
        raise CaiError(f"{data}: preference data not found")
    rows = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path}: line {n}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise CaiError(f"{where}: not valid JSON ({err.msg})") from None
            if not isinstance(row, dict):
                raise CaiError(f"{where}: expected a JSON object")
            for key in ("prompt", "chosen", "rejected"):
                if key not in row:
                    raise CaiError(f"{where}: missing `{key}`")
                _content(row[key], where, key)
            rows.append(row)
    if not rows:
        raise CaiError(f"{path}: no preference pairs (the {split} split is empty)")
    return rows, path


def _dataset_pairs(folder: Path, split: str) -> list[dict]:
    from cai.dataset_folder import PAIR_COLUMNS, split_of

    rows = split_of(folder, split, columns=PAIR_COLUMNS, hint="; choose one with --split")
    if len(rows) == 0:
        raise CaiError(f"{folder}: no preference pairs (the {split} split is empty)")
    return [dict(row) for row in rows]


def run_rm_eval(cfg: RMEvalConfig, *, quiet: bool = False) -> dict:
    from cai.evaluation.bootstrap import estimate, win_indicators
    from cai.evaluation.heldout import run_dir_of
    from cai.evaluation.run import _Progress

    if not cfg.reward_model and not cfg.adapter:
        raise CaiError("give --reward-model DIR (reward-model accuracy) and/or --adapter DIR (DPO preference accuracy)")
    if cfg.beta <= 0:
        raise CaiError(f"--beta: must be positive, got {cfg.beta}")
    rows, source = load_pairs(cfg.data, cfg.split)
    if cfg.limit is not None:
        rows = rows[:cfg.limit]
    prompts = [r["prompt"] for r in rows]
    opts = {"n_resamples": cfg.n_resamples, "seed": cfg.seed}
    metrics: dict = {}
    per_pair = [{"pair_id": r.get("pair_id", str(i))} for i, r in enumerate(rows)]
    timing = {}
    with _Progress(quiet) as progress:
        if cfg.reward_model:
            from cai.train.reward_model import RewardModel

            start = time.perf_counter()
            rm = RewardModel(cfg.reward_model, batch_size=cfg.batch_size)
            rm.load()
            advance = progress.task("reward model", 2 * len(rows))
            try:
                chosen = rm.score(prompts, [r["chosen"] for r in rows], on_batch=advance)
                rejected = rm.score(prompts, [r["rejected"] for r in rows], on_batch=advance)
            finally:
                rm.close()
            wins = win_indicators(chosen, rejected)
            metrics["rm_accuracy"] = estimate(wins, **opts).to_dict()
            metrics["rm_mean_margin"] = estimate([c - j for c, j in zip(chosen, rejected)], **opts).to_dict()
            for row, c, j in zip(per_pair, chosen, rejected):
                row.update(reward_chosen=c, reward_rejected=j)
            timing["reward_model_s"] = round(time.perf_counter() - start, 2)
        if cfg.adapter:
            margins = _implicit_margins(cfg, rows, progress)
            wins = win_indicators(margins, [0.0] * len(margins))
            metrics["preference_accuracy"] = estimate(wins, **opts).to_dict()
            metrics["implicit_margin"] = estimate([cfg.beta * m for m in margins], **opts).to_dict()
            for row, m in zip(per_pair, margins):
                row["implicit_margin"] = cfg.beta * m
    result = {"kind": "cai-eval-rm", "version": 1, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "config": asdict(cfg), "data": str(source), "pairs": len(rows),
              "metrics": {"rm": metrics}, "per_pair": per_pair, "timing": timing}
    out = Path(cfg.out) if cfg.out else None
    if out is None:
        run = run_dir_of(cfg.data)
        out = run / "eval" / "rm.json" if run else None
    if out is not None:
        from cai.io import write_atomic

        out.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(out, json.dumps(result, indent=2, ensure_ascii=False) + "\n")
        result["out"] = str(out)
    return result


def _implicit_margins(cfg: RMEvalConfig, rows: list[dict], progress) -> list[float]:
    """(gain(chosen) - gain(rejected)) per pair, gain = log pi_adapter(y|x) - log pi_base(y|x)."""
    from cai.evaluation.adapter_engine import AdapterTransformersEngine
    from cai.models import adapter_base, find_adapter_dir, resolve_model

    adapter_dir = find_adapter_dir(cfg.adapter)
    base = cfg.model or adapter_base(adapter_dir)
    if not base:
        raise CaiError(f"{adapter_dir}: adapter config names no base model; pass --model BASE")
    engine = AdapterTransformersEngine(resolve_model(base).path, adapter_dir, batch_size=cfg.batch_size)
    engine.load()
    prompts = [r["prompt"] for r in rows]
    advance = progress.task("policy log-probs", 4 * len(rows))
    try:
        logp = {}
        for label, enabled in (("policy", True), ("ref", False)):
            context = engine.model.disable_adapter() if not enabled else _null()
            with context:
                for key in ("chosen", "rejected"):
                    logp[(label, key)] = completion_logprobs(engine.model, engine.tokenizer, prompts,
                                                             [r[key] for r in rows], batch_size=cfg.batch_size)
                    advance(len(rows))
    finally:
        engine.close()
    return [(pc - rc) - (pr - rr) for pc, rc, pr, rr in zip(logp[("policy", "chosen")], logp[("ref", "chosen")],
                                                            logp[("policy", "rejected")], logp[("ref", "rejected")])]


def _null():
    import contextlib

    return contextlib.nullcontext()


def completion_logprobs(model, tokenizer, prompts: list, completions: list, *, batch_size: int = 8,
                        max_length: int = 1024) -> list[float]:
    """Sum of log P(completion tokens | prompt) for each pair, under `model` as it is called.

    The completion starts after the longest common prefix of the tokenized
    prompt (with the generation prompt) and the tokenized full conversation,
    as TRL does, so templates that render the two slightly differently still
    work.
    """
    import torch

    from cai.engines.chat import apply_chat_template
    from cai.train.reward_model import as_messages

    rows = []
    for prompt, completion in zip(prompts, completions):
        prompt_msgs = as_messages(prompt, "user")
        full = prompt_msgs + as_messages(completion, "assistant")
        p_ids = tokenizer(apply_chat_template(tokenizer, prompt_msgs, add_generation_prompt=True),
                          add_special_tokens=False)["input_ids"]
        f_ids = tokenizer(apply_chat_template(tokenizer, full, add_generation_prompt=False),
                          add_special_tokens=False)["input_ids"][:max_length]
        start = 0
        while start < min(len(p_ids), len(f_ids)) and p_ids[start] == f_ids[start]:
            start += 1
        rows.append((f_ids, max(1, start)))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out: list[float] = []
    with torch.inference_mode():
        for begin in range(0, len(rows), batch_size):
            chunk = rows[begin:begin + batch_size]
            width = max(len(ids) for ids, _ in chunk)
            input_ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for i, (ids, _) in enumerate(chunk):
                input_ids[i, :len(ids)] = torch.tensor(ids)
                mask[i, :len(ids)] = 1
            logits = model(input_ids=input_ids, attention_mask=mask).logits.float()
            logprobs = torch.log_softmax(logits[:, :-1, :], dim=-1)
            targets = input_ids[:, 1:]
            token_lp = logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
            for i, (ids, start) in enumerate(chunk):
                # token t (t >= start) is predicted at position t - 1
                out.append(float(token_lp[i, start - 1:len(ids) - 1].sum()))
    return out
