"""Training on a cai dataset: SFT, DPO, reward models and online RL (GRPO, RLOO) with TRL + PEFT.

- `recipe.py`   YAML recipes -> dataclasses, every `training:` key checked against the installed TRL class
- `sft.py`, `dpo.py`, `reward.py`, `grpo.py`, `rloo.py`   one recipe dataclass and one trainer factory each
- `online.py`   what GRPO and RLOO share: prompts, the `rewards:` section, the trainer build
- `rewards.py`  the rewards of online RL: reward model, judge, toxicity, refusal, your function
- `runner.py`   the shared run: plan + validation, output dir (resume, fingerprint), train, save, merge
- `launch.py`   `accelerate launch` for many processes (named presets: ddp, zero2, zero3, fsdp)
- `entry.py`    what each launched process runs
- `pipeline.py` SFT -> DPO / SFT -> reward / SFT -> reward -> GRPO|RLOO, stage by stage, resumable
- `summary.py`  metrics JSONL callback, summary table, model card

Nothing here imports torch or TRL at module import time, so `cai --help` stays fast.
"""

from cai.train.recipe import KINDS

__all__ = ["KINDS"]
