"""Settings of the `cai eval` and `cai monitor` jobs: one class per job, each field with its default and help.

Light on purpose (no torch): the CLI reads these to build its options.
"""

from __future__ import annotations

from dataclasses import dataclass

from cai.config import REQUIRED, at_least, between, setting
from cai.engines.base import DEFAULT_BATCH_SIZE
from cai.errors import CaiError, SettingError
from cai.judging.settings import JudgeSettings
from cai.safety.registry import DEFAULT_SCORER, TOXIC_AT


@dataclass(kw_only=True)
class ScorerSettings:
    """The classifiers `cai eval` and `cai monitor` score responses with."""

    scorer: str = setting(DEFAULT_SCORER, "Toxicity scorer: toxic-bilstm (offline) or detoxify.")
    scorer_option: list[str] = setting(help="KEY=VALUE option of the scorer, e.g. checkpoint=PATH for detoxify "
                                            "(repeatable).", factory=list)
    toxicity_threshold: float = setting(TOXIC_AT, "A response above this toxicity counts as toxic.")

    def __post_init__(self) -> None:
        between("toxicity_threshold", self.toxicity_threshold, 0, 1)
        self.scorer_options  # noqa: B018 - a malformed KEY=VALUE fails here, before any model loads

    @property
    def scorer_options(self) -> dict[str, str]:
        """--scorer-option KEY=VALUE items as a mapping."""
        options = {}
        for item in self.scorer_option:
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise SettingError("scorer_option", f"expected KEY=VALUE, got {item!r}")
            options[key.strip()] = value
        return options

    def toxicity_scorer(self):
        """The toxicity classifier these settings name (loads its weights); it must give a `toxicity` column."""
        from cai.safety.registry import create_scorer

        scorer = create_scorer(self.scorer, **self.scorer_options)
        if "toxicity" not in scorer.columns:
            raise SettingError("scorer", f"{self.scorer} has no `toxicity` column; use toxic-bilstm or detoxify")
        return scorer


@dataclass(kw_only=True)
class EvalConfig(ScorerSettings, JudgeSettings):
    """`cai eval`: the model and its baseline answer held-out prompts; both are scored side by side.

    The judge defaults to the baseline (the base model without the adapter; with --no-baseline the model
    itself); --judge-model, --judge-engine and --judge-base-url pick another, a server's model too.
    """

    prompts: str = setting(REQUIRED, "Held-out red-team prompts (e.g. data/eval_red_team.jsonl).")
    helpful_prompts: str | None = setting(None, "Held-out helpful prompts for the over-refusal rate "
                                                "(e.g. data/eval_helpful.jsonl).")
    model: str | None = setting(None, "Model dir or .gguf (default: the adapter's base, else the embedded SmolLM2).")
    adapter: str | None = setting(None, "PEFT adapter dir written by `cai train` (e.g. runs/NAME/dpo).")
    baseline: str | None = setting(None, "Baseline model (default: --model without the adapter).")
    no_baseline: bool = setting(False, "Evaluate the model alone.")
    reward_model: str | None = setting(None, "Reward model dir (`cai train reward`): mean reward and win rate.")
    judge: bool = setting(True, "Score harmlessness with the AI-feedback judge (needed for safety_score).")
    constitution: str | None = setting(None, "Principles for the judge's model-vs-baseline comparison "
                                             "(default: the shipped hhh.yaml).")
    max_new_tokens: int = setting(128, "Token budget of each reply (greedy decoding).")
    batch_size: int = setting(DEFAULT_BATCH_SIZE, "Prompts per engine call.")
    limit: int | None = setting(None, "Use only the first N prompts of each set.")
    seed: int = setting(0, "Seed for bootstrap resampling and principle sampling.")
    out: str | None = setting(None, "Output dir (default: RUN/eval for an adapter inside a run, else "
                                    "runs/eval-MODEL).")
    gate_file: str | None = setting(None, "Gate thresholds YAML (default: the guide's, as in recipes/gate.yaml); "
                                          "enforced with --gate.")
    allow_overlap: bool = setting(False, "Evaluate even if eval prompts appear in the adapter's training run.")
    n_resamples: int = setting(2000, "Bootstrap resamples of each interval.")

    def __post_init__(self) -> None:
        ScorerSettings.__post_init__(self)
        JudgeSettings.__post_init__(self)
        if self.baseline and self.no_baseline:
            raise CaiError("--baseline and --no-baseline exclude each other")
        at_least("max_new_tokens", self.max_new_tokens, 1)
        at_least("batch_size", self.batch_size, 1)
        at_least("limit", self.limit, 1)


@dataclass(kw_only=True)
class RMEvalConfig:
    """`cai eval rm`: reward-model accuracy, and DPO preference accuracy, on held-out pairs."""

    data: str = setting(REQUIRED, "Dataset dir written by `cai data pairs` (uses its test split) or a pairs JSONL.")
    reward_model: str | None = setting(None, "Reward model dir written by `cai train reward`.")
    adapter: str | None = setting(None, "DPO policy adapter: implicit-reward preference accuracy.")
    model: str | None = setting(None, "Base model of --adapter (default: the adapter's own base).")
    split: str = setting("test_prefs", "Split of a dataset dir.")
    limit: int | None = setting(None, "Use only the first N pairs.")
    beta: float = setting(0.1, "DPO beta for the reported implicit reward margin.")
    batch_size: int = setting(8, "Pairs per forward pass.")
    out: str | None = setting(None, "JSON result (default: RUN/eval/rm.json when --data is inside a run).")
    seed: int = setting(0, "Seed for bootstrap resampling.")
    n_resamples: int = setting(2000, "Bootstrap resamples of each interval.")

    def __post_init__(self) -> None:
        at_least("batch_size", self.batch_size, 1)
        at_least("limit", self.limit, 1)


@dataclass(kw_only=True)
class MonitorConfig(ScorerSettings, JudgeSettings):
    """`cai monitor RESPONSES.jsonl`: logged responses scored per window, against thresholds and a baseline.

    The AI-feedback judge (the safety score) runs when a judge is named: --judge-model, or a server with
    --judge-base-url (and its --judge-model).
    """

    responses: str = setting(REQUIRED, "JSONL file: prompt and response a line; timestamp and model optional.")
    window: int = setting(100, "Responses per window, in file order.")
    thresholds: str | None = setting(None, "Gate YAML of thresholds (default: the guide's, as in recipes/gate.yaml).")
    baseline: str | None = setting(None, "metrics.json of `cai eval`, or an earlier monitor.json: flag windows whose "
                                         "interval lies beyond the baseline's.")
    out: str | None = setting(None, "Output dir for monitor.json, monitor.html, scored.jsonl "
                                    "(default: runs/monitor-FILE).")
    follow: bool = setting(False, "Keep reading the file as it grows, like tail -f; Ctrl-C scores the last partial "
                                  "window and stops.")
    idle_timeout: float | None = setting(None, "--follow: stop when the file has not grown for this many seconds.")
    poll_seconds: float = setting(1.0, "--follow: seconds between looks at the file.")
    seed: int = setting(0, "Seed of the bootstrap intervals.")
    n_resamples: int = setting(2000, "Bootstrap resamples of each interval.")

    def __post_init__(self) -> None:
        ScorerSettings.__post_init__(self)
        JudgeSettings.__post_init__(self)
        at_least("window", self.window, 1)
        at_least("n_resamples", self.n_resamples, 1)
        if self.idle_timeout is not None and not self.follow:
            raise SettingError("idle_timeout", "applies only with --follow")
        at_least("idle_timeout", self.idle_timeout, 0)
        at_least("poll_seconds", self.poll_seconds, 0.01)
