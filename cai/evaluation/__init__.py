"""Evaluation: `cai eval` (model vs baseline on held-out prompts), `cai eval rm`, and `cai monitor` of logs.

- `run`             the eval job: model and baseline answer held-out prompts, scored side by side
- `rm`              `cai eval rm`: reward-model and DPO preference accuracy
- `metrics`         metric names, meanings and which way is better
- `gate`            the safety gate: thresholds that decide whether a model may ship
- `bootstrap`       seeded bootstrap confidence intervals and win rates
- `adapter_engine`  PEFT adapters on the transformers engine
- `heldout`         eval/training prompt overlap
- `monitor`         `cai monitor`: logged responses scored per window, thresholds and drift
- `config`          the settings of `cai eval`, `cai eval rm` and `cai monitor`

Heavy libraries load inside functions, so importing this package is cheap.
"""

from cai.evaluation.metrics import METRICS, RM_METRICS

__all__ = ["METRICS", "RM_METRICS"]
