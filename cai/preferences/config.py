"""Settings of the `cai data` jobs: one class per job, each field with its default and help.

Light on purpose (no pydantic, no torch): the CLI reads these to build its options.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cai.cluster import RaySettings
from cai.config import REQUIRED, at_least, between, one_of, setting
from cai.errors import SettingError
from cai.judging.settings import JudgeSettings
from cai.preferences.imports import FORMATS
from cai.preferences.strategies import STRATEGIES
from cai.safety.registry import DEFAULT_SCORER

VERIFY = ("none", "judge")
TEST_SHARE = 0.1            # share of prompts held out in the test splits


def _check_split(test_share: float) -> None:
    if not 0 <= test_share < 1:
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
class PairsConfig(RaySettings, SafetySettings, JudgeSettings):
    """`cai data pairs`: a run's records -> pairs -> quality rules -> safety rules -> [judge] -> dataset.

    The judge (ai-feedback, --verify judge) defaults to the run's own model on the run's engine: its server
    for a run generated with --engine openai. With `--ray` (`RaySettings`) the judge's calls are spread over
    Ray replicas of the judge engine.
    """

    run: str = setting(REQUIRED, "Run directory made by `cai generate`.")
    strategy: str = setting("final-vs-initial", "final-vs-initial, per-round or ai-feedback.")
    out: str | None = setting(None, "Dataset directory (default: RUN/dataset).")
    filter: bool = setting(True, "Score pairs with the safety classifiers and drop by the rules.")
    test_share: float = setting(TEST_SHARE, "Share of prompts held out in the test splits.")
    seed: int = setting(0, "Seed of the split (and of the judge's principle draw).")
    keep_truncated: bool = setting(False, "Keep pairs whose texts hit the token budget.")
    skip_rule: list[str] = setting(help="Turn a quality rule off: few-shot-copy, critique-echo, repetition-loop, "
                                        "meta-comment, off-topic, repeated-item, rejected-kept or "
                                        "refusal-not-improved (repeatable).", factory=list)
    verify: str = setting("none", "judge: drop pairs the AI-feedback judge does not prefer under their own "
                                  "principles (`judge disagrees`).")
    verify_margin: float = setting(0.1, "--verify judge: keep pairs with P(chosen better) >= 0.5 + this.")
    feedback_margin: float = setting(0.1, "ai-feedback: keep pairs whose soft label is this far from 0.5.")

    def __post_init__(self) -> None:
        SafetySettings.__post_init__(self)
        JudgeSettings.__post_init__(self)
        one_of("strategy", self.strategy, STRATEGIES, "strategy")
        one_of("verify", self.verify, VERIFY, "check")
        _check_split(self.test_share)
        between("verify_margin", self.verify_margin, 0, 0.5)
        between("feedback_margin", self.feedback_margin, 0, 0.5)
        if self.verify == "judge" and self.strategy == "ai-feedback":
            raise SettingError("verify", "ai-feedback pairs are already chosen by the judge; use another --strategy")
        if self.ray is not None and self.verify != "judge" and self.strategy != "ai-feedback":
            raise SettingError("ray", "only the judge runs on Ray: add --strategy ai-feedback or --verify judge")


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


SPLIT_TARGETS = ("train", "test", "skip")
# Options that only one import format reads: option -> that format.
FORMAT_OPTIONS = {"min_rating": "hh-rlhf-red-team", "min_score_ratio": "shp"}


@dataclass(kw_only=True)
class ImportConfig:
    """`cai data import FORMAT SOURCE`: a public dataset as users hold it -> what cai's next step reads."""

    format: str = setting(REQUIRED, ", ".join(FORMATS) + ".")
    source: str = setting(REQUIRED, "A .jsonl/.json(.gz)/.parquet/.arrow file, a folder of them, a save_to_disk "
                                    "folder, or a dataset id in the local HF cache.")
    out: str = setting(REQUIRED, "Dataset dir (pairs formats), prompt dir (hh-rlhf-red-team) or run dir "
                                 "(cai-harmless).")
    split_map: list[str] = setting(help="SOURCE_SPLIT=train|test|skip (repeatable), e.g. validation=test.",
                                   factory=list)
    limit: int | None = setting(None, "Read only the first N rows of each source split.")
    score: bool = setting(False, "Add toxicity and bias score columns (pairs formats).")
    scorer: str = setting(DEFAULT_SCORER, "Toxicity scorer for --score: toxic-bilstm or detoxify.")
    test_share: float = setting(TEST_SHARE, "Share of prompts held out when the source has no test split.")
    seed: int = setting(0, "Seed of that split.")
    min_rating: float | None = setting(None, "hh-rlhf-red-team: keep attacks rated at least this (0-4; 3 keeps the "
                                             "ones that worked).")
    min_score_ratio: float | None = setting(None, "shp: keep pairs whose preferred comment scored at least this many "
                                                  "times the other (2 in the SHP paper).")

    def __post_init__(self) -> None:
        one_of("format", self.format, FORMATS, "format")
        for option, only in FORMAT_OPTIONS.items():
            if getattr(self, option) is not None and self.format != only:
                raise SettingError(option, f"applies only to the {only} format, not {self.format}")
        at_least("limit", self.limit, 1)
        between("min_rating", self.min_rating, 0, 4)
        at_least("min_score_ratio", self.min_score_ratio, 1)
        _check_split(self.test_share)
        self.split_targets  # noqa: B018 - a malformed SPLIT=TARGET fails here, before any file is read

    @property
    def split_targets(self) -> dict[str, str]:
        """--split-map items: source split -> train | test | skip (train_prefs/test_prefs read as train/test)."""
        out = {}
        for item in self.split_map:
            name, sep, target = (x.strip() for x in item.partition("="))
            if not sep or not name:
                raise SettingError("split_map", f"expected SOURCE_SPLIT=TARGET, got {item!r}")
            target = {"train_prefs": "train", "test_prefs": "test"}.get(target, target)
            if target not in SPLIT_TARGETS:
                raise SettingError("split_map", f"{item}: target must be one of {', '.join(SPLIT_TARGETS)}, "
                                                f"got {target!r}")
            out[name] = target
        return out


@dataclass(kw_only=True)
class MixConfig:
    """`cai data mix A B ...`: one preference dataset from several, each a weighted share of the train split."""

    datasets: list[str] = setting(REQUIRED, "Dataset dirs (cai exports, save_to_disk dirs, folders of split files) "
                                            "or cached dataset ids.")
    out: str = setting(REQUIRED, "Dataset directory to write.")
    weights: str | None = setting(None, "Shares of the mixed train split, e.g. 0.85,0.15 (default: by size).")
    seed: int = setting(0, "Seed of the sampling: the same seed gives the same mix.")

    def __post_init__(self) -> None:
        if len(self.datasets) < 2:
            raise SettingError("datasets", f"give at least two datasets to mix, got {len(self.datasets)}")
        self.shares  # noqa: B018 - bad weights fail here, before any dataset is read

    @property
    def shares(self) -> list[float] | None:
        """--weights as shares summing to 1; None to mix by size."""
        if self.weights is None:
            return None
        try:
            weights = [float(x) for x in self.weights.split(",")]
        except ValueError:
            raise SettingError("weights", "expected numbers separated by commas, e.g. 0.85,0.15; "
                                          f"got {self.weights!r}") from None
        if len(weights) != len(self.datasets):
            raise SettingError("weights", f"{len(weights)} weights for {len(self.datasets)} datasets")
        if any(not 0 < w < math.inf for w in weights):
            raise SettingError("weights", f"every weight must be above 0, got {self.weights}")
        return [w / sum(weights) for w in weights]


@dataclass(kw_only=True)
class SplitConfig:
    """`cai data split DATASET --out DIR`: train, validation and test splits by prompt, for choosing settings."""

    dataset: str = setting(REQUIRED, "Dataset dir written by `cai data pairs`, `import`, `mix` or `split`.")
    out: str = setting(REQUIRED, "Dataset directory to write.")
    validation_share: float = setting(0.1, "Share of all prompts moved from train to validation_prefs/_sft.")
    test_share: float | None = setting(None, "Re-split every pair with this share of prompts in test (default: keep "
                                             "the dataset's own test split).")
    seed: int = setting(0, "Seed of the splits: the same seed gives the same splits.")

    def __post_init__(self) -> None:
        if not 0 < self.validation_share < 1:
            raise SettingError("validation_share", f"must be in (0, 1), got {self.validation_share:g}")
        if self.test_share is not None:
            if not 0 < self.test_share < 1:
                raise SettingError("test_share", f"must be in (0, 1), got {self.test_share:g}")
            if self.test_share + self.validation_share >= 1:
                raise SettingError("test_share", f"{self.test_share:g} with --validation-share "
                                                 f"{self.validation_share:g} leaves no prompt to train on")
