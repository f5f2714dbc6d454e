"""The rewards of online RL (`cai train grpo|rloo`): typed entries of a recipe's `rewards:` list.

Each entry becomes one of TRL's `reward_funcs`, its `weight` one of `reward_weights`. TRL sums the
weighted rewards of each completion and logs every reward's mean and spread per step
(`rewards/NAME/mean`, `rewards/NAME/std` in metrics.jsonl).

- `reward-model`: a model from `cai train reward` (a LoRA adapter is merged into its base in memory),
  handed to TRL as a model: TRL writes prompt + completion with the reward model's chat template.
- `judge`: RL from AI feedback directly. A judge model reads the prompt and the completion and gives
  P(the response does well under a principle), read from the option labels' log-probabilities in both
  orders (`cai.judging`, the judge of ai-feedback pairs and `cai eval` too). One principle per prompt
  and step by default, the same for all completions of the prompt, so they are compared on one question.
  The judge is a local model or a server's (`engine: openai, base_url: URL, model: NAME`); a completion
  the server fails on gets no judge reward (None) that step.
- `toxicity`: 1 - the completion's toxicity (a `cai.safety` scorer).
- `refusal`: 1 for an answer, 0 for a refusal (`cai.safety.refusal`) on prompts of the chosen categories;
  None (left out by TRL) on the others.
- `function`: your own Python reward, `package.module.function` (as TRL's scripts take it), called
  the TRL way (`prompts=, completions=, completion_ids=`, the dataset's columns) plus its `options`.

All values are in [0, 1] except the reward model's (an unbounded score) and your functions'.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from cai.errors import CaiError, SettingError
from cai.safety.registry import DEFAULT_SCORER


@dataclass
class RewardEntry:
    """What every reward has: a weight and a name (the `rewards/NAME/...` metrics; default: the type)."""

    type: ClassVar[str] = ""
    weight: float = 1.0
    name: str | None = None

    @property
    def label(self) -> str:
        return self.name or self.type

    def to_dict(self) -> dict:
        return {"type": self.type, **dataclasses.asdict(self)}


@dataclass
class RewardModelEntry(RewardEntry):
    """`path`: a `cai train reward` output; null = runs/NAME/reward beside the dataset (or, in a pipeline,
    the reward stage's output)."""

    type: ClassVar[str] = "reward-model"
    path: str | None = None


@dataclass
class JudgeEntry(RewardEntry):
    """`principles`: `all` (the enabled ones) or a list of ids; `sample`: how many of them each prompt is
    judged on per step (null = every one, averaged); `model`, `engine`, `base_url`: the judge, as
    `--judge-model/--judge-engine/--judge-base-url` elsewhere (null model = the model the stage starts from,
    with transformers; a base_url = a server, openai); `engine_options` go to the engine (e.g. device,
    or concurrency for a server)."""

    type: ClassVar[str] = "judge"
    constitution: str = "hhh"
    principles: list[str] | str = "all"
    sample: int | None = 1
    model: str | None = None
    engine: str | None = None
    base_url: str | None = None
    engine_options: dict = field(default_factory=dict)

    @property
    def judge_spec(self):
        from cai.judging.settings import JudgeSpec

        return JudgeSpec(self.engine, self.base_url, self.model)

    def resolve_judge(self, policy_path: str | None):
        """The judge's JudgeSpec, the policy (with transformers) filling what the entry leaves out."""
        from cai.judging.settings import JudgeSpec

        return self.judge_spec.resolve(JudgeSpec("transformers", None, policy_path))


@dataclass
class ToxicityEntry(RewardEntry):
    """`scorer`: toxic-bilstm (offline) or detoxify; `options` go to the scorer (e.g. {checkpoint: PATH})."""

    type: ClassVar[str] = "toxicity"
    scorer: str = DEFAULT_SCORER
    options: dict = field(default_factory=dict)


@dataclass
class RefusalEntry(RewardEntry):
    """`on`: `helpful` (cai's helpful categories, `cai.safety.refusal.HELPFUL_CATEGORIES`), `all`, or a
    list of categories."""

    type: ClassVar[str] = "refusal"
    on: list[str] | str = "helpful"

    def categories(self) -> set[str] | None:
        """The prompt categories rewarded; None = every prompt."""
        from cai.safety.refusal import HELPFUL_CATEGORIES

        if self.on == "all":
            return None
        return set(HELPFUL_CATEGORIES) if self.on == "helpful" else set(self.on)


@dataclass
class FunctionEntry(RewardEntry):
    """`function`: `package.module.function` (or `package.module:function`), importable from the working
    directory; `options`: extra keyword arguments for it."""

    type: ClassVar[str] = "function"
    function: str = ""
    options: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.name or self.function.replace(":", ".").rpartition(".")[2] or self.type

    def load(self):
        """The function itself; an unimportable one is a CaiError."""
        import importlib
        import sys

        module_name, sep, attr = self.function.replace(":", ".").rpartition(".")
        if not sep or not module_name:
            raise CaiError(f"expected package.module.function, got {self.function!r}")
        if str(Path.cwd()) not in sys.path:
            sys.path.insert(0, str(Path.cwd()))          # as TRL's scripts do
        try:
            module = importlib.import_module(module_name)
        except Exception as err:                         # a missing module, or one that fails as it loads
            first = (str(err).strip().splitlines() or [""])[0]
            raise CaiError(f"cannot import {module_name}: {type(err).__name__}: {first}") from None
        func = getattr(module, attr, None)
        if func is None:
            raise CaiError(f"{module_name} has no {attr}")
        if not callable(func):
            raise CaiError(f"{self.function} is not callable")
        return func


ENTRIES: dict[str, type[RewardEntry]] = {cls.type: cls for cls in (RewardModelEntry, JudgeEntry, ToxicityEntry,
                                                                   RefusalEntry, FunctionEntry)}
_NAME = re.compile(r"[A-Za-z0-9][\w.-]*")


# --- reading and checking (no model loads) -------------------------------------------------------

def parse_rewards(recipe, raw: Any) -> list[RewardEntry]:
    """The `rewards:` list as typed entries; every key checked like the rest of the recipe."""
    from cai.train.recipe import read_mapping

    example = "[{type: reward-model, path: runs/NAME/reward, weight: 1.0}, {type: toxicity, weight: 0.5}]"
    if raw is None:
        raise recipe.error("rewards", f"missing: a {recipe.kind} recipe needs a list of rewards, e.g. {example}")
    if not isinstance(raw, list) or not raw:
        raise recipe.error("rewards", f"expected a non-empty list of rewards, e.g. {example}")
    entries: list[RewardEntry] = []
    for i, item in enumerate(raw):
        key = f"rewards.{i}"
        if not isinstance(item, dict):
            raise recipe.error(key, f"expected a mapping with a type ({', '.join(ENTRIES)}), got {item!r}")
        kind = item.get("type")
        if kind not in ENTRIES:
            found = "type: missing" if kind is None else f"unknown reward type {kind!r}"
            raise recipe.error(f"{key}.type" if kind is not None else key,
                               f"{found}; expected one of {', '.join(ENTRIES)}")
        entry = read_mapping(recipe, {k: v for k, v in item.items() if k != "type"}, key, ENTRIES[kind])
        if not math.isfinite(entry.weight):
            raise recipe.error(f"{key}.weight", f"must be a finite number, got {entry.weight}")
        if not _NAME.fullmatch(entry.label):
            raise recipe.error(f"{key}.name", f"{entry.label!r}: use letters, digits, '-', '_' or '.'")
        if any(e.label == entry.label for e in entries):
            raise recipe.error(key, f"a second reward named {entry.label!r}; give each one a distinct name:")
        entries.append(entry)
    return entries


def check_rewards(recipe) -> None:
    """Checks that need no model and no dataset: constitutions, principles, scorers, engines, categories."""
    for i, entry in enumerate(recipe.rewards):
        key = f"rewards.{i}"
        if isinstance(entry, JudgeEntry):
            _check_judge(recipe, key, entry)
        elif isinstance(entry, ToxicityEntry):
            from cai.safety.registry import create_scorer

            try:
                scorer = create_scorer(entry.scorer, **entry.options)
            except CaiError as err:
                raise recipe.error(f"{key}.scorer", str(err)) from None
            if "toxicity" not in scorer.columns:
                raise recipe.error(f"{key}.scorer",
                                   f"{entry.scorer} gives no toxicity score; use toxic-bilstm or detoxify")
        elif isinstance(entry, RefusalEntry):
            if isinstance(entry.on, str) and entry.on not in ("helpful", "all"):
                raise recipe.error(f"{key}.on",
                                   f"expected helpful, all or a list of prompt categories, got {entry.on!r}")
        elif isinstance(entry, FunctionEntry):
            try:
                entry.load()
            except CaiError as err:
                raise recipe.error(f"{key}.function", str(err)) from None


def _check_judge(recipe, key: str, entry: JudgeEntry) -> None:
    from cai.engines.base import Engine
    from cai.engines.registry import engine_class

    constitution = load_judge_constitution(recipe, key, entry)
    enabled = [p.id for p in constitution.principles if p.enabled]
    if isinstance(entry.principles, str):
        if entry.principles != "all":
            raise recipe.error(f"{key}.principles",
                               f"expected all or a list of principle ids, got {entry.principles!r}")
    else:
        if not entry.principles:
            raise recipe.error(f"{key}.principles", "an empty list; give principle ids or all")
        for pid in entry.principles:
            if pid not in enabled:
                raise recipe.error(f"{key}.principles", f"{pid!r} is not an enabled principle of {entry.constitution} "
                                   f"(enabled: {', '.join(enabled)})")
    if entry.sample is not None and entry.sample < 1:
        raise recipe.error(f"{key}.sample", f"must be at least 1 (or null for every principle), got {entry.sample}")
    try:
        spec = entry.resolve_judge(None)
    except SettingError as err:
        raise recipe.error(f"{key}.{err.field}", err.message) from None
    try:
        cls = engine_class(spec.engine)
    except CaiError as err:
        raise recipe.error(f"{key}.engine", str(err)) from None
    if cls.label_logprobs is Engine.label_logprobs:
        raise recipe.error(f"{key}.engine", f"engine {spec.engine} cannot read label log-probabilities, which the "
                           "judge reads its answer from; use transformers, vllm or openai")


def load_judge_constitution(recipe, key: str, entry: JudgeEntry):
    """The judge's constitution: a file, else a shipped name (`hhh`); a bad one is one line naming the entry."""
    from cai.constitution import load_constitution
    from cai.paths import shipped_dir

    path = Path(entry.constitution).expanduser()
    if not path.exists():
        shipped = shipped_dir("constitution") / f"{entry.constitution.removesuffix('.yaml')}.yaml"
        if shipped.is_file():
            path = shipped
    try:
        return load_constitution(path)
    except CaiError as err:
        raise recipe.error(f"{key}.constitution", str(err)) from None


def preflight(recipe, policy_path: str | None) -> None:
    """Checks of files a pipeline's earlier stage may write, run just before the stage (no model loads):
    the reward model folders, and their tokenizers against the policy's (`policy_path`, when known)."""
    from cai.train.reward_model import RewardModel

    policy_tokenizer = None
    for i, entry in enumerate(recipe.rewards):
        key = f"rewards.{i}.path"
        if isinstance(entry, JudgeEntry) and entry.model is not None and entry.resolve_judge(None).engine != "openai":
            from cai.models import resolve_model

            try:
                resolve_model(entry.model)
            except CaiError as err:
                raise recipe.error(f"rewards.{i}.model", str(err)) from None
        if not isinstance(entry, RewardModelEntry):
            continue
        reward_model = RewardModel(entry.path)
        try:
            reward_model.check()
            if policy_path is None:
                continue
            reward_tokenizer = reward_model.load_tokenizer()
        except CaiError as err:
            hint = " (train one with `cai train reward`)" if not Path(entry.path).exists() else ""
            raise recipe.error(key, f"{err}{hint}") from None
        if getattr(reward_tokenizer, "chat_template", None):
            continue
        if policy_tokenizer is None:
            from transformers import AutoTokenizer

            policy_tokenizer = AutoTokenizer.from_pretrained(policy_path)
        if reward_tokenizer.get_vocab() != policy_tokenizer.get_vocab():
            raise recipe.error(key, f"the reward model's tokenizer differs from the policy's ({policy_path}) and has "
                               "no chat template, so the conversations cannot be written for it; add a chat template "
                               "to its tokenizer_config.json or train the reward model from the policy's base")


# --- the reward functions (each training process builds its own) ---------------------------------

def message_text(value, role: str) -> str:
    """The text of a plain string, or of the last `role` message of a conversation."""
    if isinstance(value, str):
        return value
    texts = [m.get("content") or "" for m in value if m.get("role") == role] or [m.get("content") or "" for m in value]
    return texts[-1] if texts else ""


class JudgeReward:
    """P(the completion does well under a principle), averaged over the principles drawn for its prompt."""

    def __init__(self, entry: JudgeEntry, constitution, policy_path: str, seed: int):
        self.__name__ = entry.label                    # TRL names the metrics after it
        self.entry = entry
        self.constitution = constitution
        enabled = [p for p in constitution.principles if p.enabled]
        self.pool = enabled if entry.principles == "all" else [p for p in enabled if p.id in entry.principles]
        self.spec = entry.resolve_judge(policy_path)
        self.seed = seed
        self.engine = None
        self.templates = None

    def load(self) -> None:
        from cai.generation.templates import Templates
        from cai.judging.judge import create_judge_engine

        options = dict(self.entry.engine_options)
        if self.spec.engine == "transformers" and "device" not in options:
            import torch

            if torch.cuda.is_available():
                from accelerate import PartialState

                options["device"] = str(PartialState().device)
        self.templates = Templates()
        self.engine = create_judge_engine(self.spec, **options)
        self.engine.load()

    def principles_for(self, prompt: str, step: int) -> list:
        """Every principle of the pool, or `sample` of them drawn for (prompt, step): the same for every
        completion of the prompt, another draw at the next step."""
        from cai.generation.principles import sample_principles

        if self.entry.sample is None or self.entry.sample >= len(self.pool):
            return list(self.pool)
        by_id = {p.id: p for p in self.pool}
        ids = sample_principles(self.pool, self.entry.sample, seed=self.seed,
                                strategy=self.constitution.sampling.strategy, key=f"rl:{step}:{prompt}")
        return [by_id[i] for i in ids]

    def __call__(self, prompts, completions, trainer_state=None, **_) -> list[float | None]:
        from cai.judging.labels import principle_probabilities

        if self.engine is None:
            self.load()
        step = getattr(trainer_state, "global_step", 0) or 0
        items, spans = [], []
        for prompt, completion in zip(prompts, completions):
            question, answer = message_text(prompt, "user"), message_text(completion, "assistant")
            chosen = self.principles_for(question, step)
            items += [(question, answer, p) for p in chosen]
            spans.append(len(chosen))
        probs = principle_probabilities(self.engine, self.templates, items, strict=False)
        out, start = [], 0
        for n in spans:
            part = probs[start:start + n]
            out.append(None if None in part else sum(part) / n)      # the judge failed on it: no reward
            start += n
        return out

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None


class ToxicityReward:
    """1 - the completion's toxicity."""

    def __init__(self, entry: ToxicityEntry):
        from cai.safety.registry import create_scorer

        self.__name__ = entry.label
        self.scorer = create_scorer(entry.scorer, **entry.options)

    def __call__(self, completions, **_) -> list[float]:
        texts = [message_text(c, "assistant") for c in completions]
        return [1.0 - float(s["toxicity"]) for s in self.scorer.score(texts)]


class RefusalReward:
    """1 for an answer, 0 for a refusal, on prompts of the entry's categories; None (no reward) elsewhere."""

    def __init__(self, entry: RefusalEntry):
        self.__name__ = entry.label
        self.categories = entry.categories()

    def __call__(self, completions, category=None, **_) -> list[float | None]:
        from cai.safety.refusal import is_refusal

        categories = category if category is not None else [None] * len(completions)
        return [None if self.categories is not None and cat not in self.categories
                else 0.0 if is_refusal(message_text(c, "assistant")) else 1.0
                for c, cat in zip(completions, categories)]


class FunctionReward:
    """Your function, with the entry's options added to TRL's keyword arguments."""

    def __init__(self, entry: FunctionEntry):
        self.__name__ = entry.label
        self.func = entry.load()
        self.options = dict(entry.options)

    def __call__(self, **kwargs) -> list[float | None]:
        return self.func(**kwargs, **self.options)


def load_reward_model(entry: RewardModelEntry, policy_tokenizer):
    """(model, tokenizer) for TRL: an adapter merged into its base; a tokenizer without a chat template
    borrows the policy's (preflight made sure the vocabularies match)."""
    from cai.train.reward_model import RewardModel

    reward_model = RewardModel(entry.path)
    reward_model.load()
    model = reward_model.model
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model.config._name_or_path = entry.label           # TRL names a model reward's metrics after this
    tokenizer = reward_model.tokenizer
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = policy_tokenizer.chat_template
    return model, tokenizer


def build_reward_funcs(recipe, policy_path: str, policy_tokenizer, *, seed: int) -> tuple[list, list]:
    """(reward_funcs, reward_processing_classes) for a TRL online trainer, in the recipe's order."""
    funcs, classes = [], []
    for i, entry in enumerate(recipe.rewards):
        tokenizer = None
        if isinstance(entry, RewardModelEntry):
            func, tokenizer = load_reward_model(entry, policy_tokenizer)
        elif isinstance(entry, JudgeEntry):
            constitution = load_judge_constitution(recipe, f"rewards.{i}", entry)
            func = JudgeReward(entry, constitution, policy_path, seed)
        elif isinstance(entry, ToxicityEntry):
            func = ToxicityReward(entry)
        elif isinstance(entry, FunctionEntry):
            func = FunctionReward(entry)
        else:
            func = RefusalReward(entry)
        funcs.append(func)
        classes.append(tokenizer)
    return funcs, classes

