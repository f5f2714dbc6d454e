"""Settings of the `cai data` jobs: one class per job, each field with its default and help.

Light on purpose (no pydantic, no torch): the CLI reads these to build its options.
"""

from __future__ import annotations

from dataclasses import dataclass

from cai.config import REQUIRED, at_least, between, one_of, setting

STRATEGIES = ("final-vs-initial", "per-round", "ai-feedback")
VERIFY = ("none", "judge")
TEST_SHARE = 0.1            # share of prompts held out in the test splits


def _check_split(test_share: float) -> None:
    if not 0 <= test_share < 1:
        from cai.errors import SettingError

        raise SettingError("test_share", f"must be in [0, 1), got {test_share:g}")


@dataclass(kw_only=True)
class SafetySettings:
    """Where the safety thresholds come from: a rules YAML file, with flags on top."""

    rules: str | None = setting(None, "YAML file of safety thresholds (and a `quality:` section for `cai data pairs`).")
    scorer: str | None = setting(None, "Toxicity scorer: toxic-bilstm (default, offline) or detoxify.")
    toxicity_max: float | None = setting(None, "Drop pairs whose chosen toxicity is above this (default 0.7, the "
                                               "alignment guide's cut-off).")

    def __post_init__(self) -> None:
        between("toxicity_max", self.toxicity_max, 0, 1)


@dataclass(kw_only=True)
class PairsConfig(SafetySettings):
    """`cai data pairs`: a run's records -> pairs -> quality rules -> safety rules -> [judge] -> dataset."""

    run: str = setting(REQUIRED, "Run directory made by `cai generate`.")
    strategy: str = setting("final-vs-initial", "final-vs-initial, per-round or ai-feedback.")
    out: str | None = setting(None, "Dataset directory (default: RUN/dataset).")
    filter: bool = setting(True, "Score pairs with the safety classifiers and drop by the rules.")
    test_share: float = setting(TEST_SHARE, "Share of prompts held out in the test splits.")
    seed: int = setting(0, "Seed of the split (and of the judge's principle draw).")
    keep_truncated: bool = setting(False, "Keep pairs whose texts hit the token budget.")
    skip_rule: list[str] = setting(help="Turn a quality rule off: few-shot-copy, critique-echo, repetition-loop, "
                                        "meta-comment or off-topic (repeatable).", factory=list)
    verify: str = setting("none", "judge: drop pairs the AI-feedback judge does not prefer under their own "
                                  "principles (`judge disagrees`).")
    verify_margin: float = setting(0.1, "--verify judge: keep pairs with P(chosen better) >= 0.5 + this.")
    feedback_margin: float = setting(0.1, "ai-feedback: keep pairs whose soft label is this far from 0.5.")
    feedback_model: str | None = setting(None, "ai-feedback and --verify judge: judge model (default: the run's "
                                               "model).")
    feedback_engine: str | None = setting(None, "Engine of the judge (default: the run's; transformers for a "
                                                "server run).")

    def __post_init__(self) -> None:
        super().__post_init__()
        one_of("strategy", self.strategy, STRATEGIES, "strategy")
        one_of("verify", self.verify, VERIFY, "check")
        _check_split(self.test_share)
        between("verify_margin", self.verify_margin, 0, 0.5)
        between("feedback_margin", self.feedback_margin, 0, 0.5)
        if self.verify == "judge" and self.strategy == "ai-feedback":
            from cai.errors import SettingError

            raise SettingError("verify", "ai-feedback pairs are already chosen by the judge; use another --strategy")


@dataclass(kw_only=True)
class FilterConfig(SafetySettings):
    """`cai data filter`: score existing pairs with the safety classifiers, drop by the rules, write a dataset."""

    path: str = setting(REQUIRED, "A pairs JSONL file or a dataset directory.")
    out: str = setting(REQUIRED, "Dataset directory to write.")
    test_share: float = setting(TEST_SHARE, "Share of prompts held out in the test splits.")
    seed: int = setting(0, "Seed of the split.")

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_split(self.test_share)


@dataclass(kw_only=True)
class AuditConfig:
    """`cai data audit`: what each quality rule flags, refusals by category, length change."""

    path: str = setting(REQUIRED, "Run directory or dataset directory.")
    out: str | None = setting(None, "Also write an HTML page of the flagged pairs (e.g. audit.html).")
    rules: str | None = setting(None, "YAML rules file (its `quality:` section); default thresholds otherwise.")
    examples: int = setting(3, "Flagged pairs kept per rule for the HTML page.")

    def __post_init__(self) -> None:
        at_least("examples", self.examples, 1)


@dataclass(kw_only=True)
class AnnotationsConfig:
    """`cai data import-annotations`: human preferences in the alignment guide's format -> pairs + agreement."""

    path: str = setting(REQUIRED, "JSONL or JSON list of annotations.")
    out: str | None = setting(None, "Dataset directory to write (pairs.jsonl is written inside).")
    min_seconds: float = setting(10.0, "Annotations faster than this are flagged too fast.")
    test_share: float = setting(TEST_SHARE, "Share of items held out in the test splits.")
    seed: int = setting(0, "Seed of the split.")

    def __post_init__(self) -> None:
        at_least("min_seconds", self.min_seconds, 0)
        _check_split(self.test_share)
