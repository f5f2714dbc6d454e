"""Evaluation of trained models: `cai eval` (model vs baseline on held-out prompts) and `cai eval rm`.

Modules: `run` (the eval job), `rm` (reward-model and DPO preference accuracy),
`metrics` (metric names and meanings), `adapter_engine` (PEFT adapters on the
transformers engine), `reward` (reward-model loading and scoring, policy
log-probs), `heldout` (eval/training prompt overlap). Heavy libraries load
inside functions, so importing this package is cheap.
"""

from cai.evaluation.metrics import METRICS, RM_METRICS

__all__ = ["METRICS", "RM_METRICS"]
