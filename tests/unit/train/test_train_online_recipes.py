"""Online RL recipes (grpo, rloo): shipped defaults against the installed TRL, the guide's PPO names, and bad
input as one line before any model loads (a --model that does not exist, or a model folder without weights)."""

from __future__ import annotations

import json
import shutil

import pytest
from support import cli
from support.train import cli_error_line as _fail
from support.train import cli_stdout as _ok
from support.train import write_preferences

from cai.paths import shipped_dir

RECIPES = shipped_dir("recipes")
NO_MODEL = "/nonexistent/model-dir"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_preferences(tmp_path_factory.mktemp("online-recipes") / "run" / "dataset")


@pytest.fixture(scope="module")
def reward_dir(data):
    """A folder where `path: null` looks (runs/NAME/reward); a dry run checks only that it is a reward model."""
    folder = data.parent / "reward"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text("{}")
    return folder


@pytest.fixture(scope="module")
def weightless_policy(tmp_path_factory, tiny_model_dir):
    """The tiny model's config and tokenizer, no weights: anything that loads the model would fail differently."""
    folder = tmp_path_factory.mktemp("weightless")
    for item in tiny_model_dir.iterdir():
        if not item.name.endswith(".safetensors"):
            shutil.copy(item, folder / item.name)
    return folder


def test_shipped_recipes_map_the_guides_ppo_settings():
    from cai.train.recipe import load_recipe

    for kind in ("grpo", "rloo"):
        recipe = load_recipe(RECIPES / f"{kind}.yaml")
        t = recipe.training
        assert (t["beta"], t["epsilon"], t["learning_rate"], t["max_grad_norm"]) == (0.1, 0.2, 1e-6, 1.0)
        assert (t["per_device_train_batch_size"], t["gradient_accumulation_steps"]) == (4, 8)   # batch 32
        assert 32 % t["num_generations"] == 0
        assert [e.type for e in recipe.rewards] == ["reward-model", "judge", "toxicity", "refusal"]
        text = (RECIPES / f"{kind}.yaml").read_text()
        for said in ("kl_coeff 0.1", "clip_range 0.2", "value_coeff 0.5", "entropy_coeff 0.01", "no counterpart"):
            assert said in text, (kind, said)
        assert ("entropy_coef" in t) == (kind == "grpo")        # RLOOConfig has no entropy bonus


@pytest.mark.parametrize("kind,recipe", [("grpo", "grpo"), ("rloo", "rloo"),
                                         ("grpo", "smoke/grpo"), ("rloo", "smoke/rloo")])
def test_every_shipped_rl_recipe_validates_against_the_installed_trl(kind, recipe, data, reward_dir):
    out = _ok(["train", kind, "--recipe", recipe, "--data", str(data), "--model", NO_MODEL, "--dry-run"])
    assert f"kind: {kind}" in out and "reward_weights:" in out and "auto" not in out
    assert f"path: {reward_dir.resolve()}" in out                 # path: null = the reward model beside the dataset


@pytest.mark.parametrize("recipe", ["pipeline-rl", "smoke/pipeline-rl"])
def test_shipped_rl_pipelines_validate(recipe, tmp_path):
    data = write_preferences(tmp_path / "dataset")               # no reward model yet: the pipeline trains it
    out = _ok(["train", "pipeline", "--recipe", recipe, "--data", str(data), "--dry-run"])
    assert "kind: sft" in out and "kind: reward" in out and "kind: grpo" in out
    assert f"path: {(tmp_path / 'reward').resolve()}" in out       # the reward stage's output


@pytest.mark.parametrize("kind,args,expected", [
    ("grpo", ["--set", "training.kl_coeff=0.1"], "training.kl_coeff: not a key of trl.GRPOConfig"),
    ("grpo", ["--set", "training.kl_coeff=0.1"], "renamed: use training.beta"),
    ("rloo", ["--set", "training.clip_range=0.2"], "renamed: use training.epsilon"),
    ("grpo", ["--set", "training.mini_batch_size=4"], "renamed: use training.per_device_train_batch_size"),
    ("grpo", ["--set", "training.value_coeff=0.5"], "GRPO and RLOO train no value model"),
    ("grpo", ["--set", "training.entropy_coeff=0.01"], "renamed: use training.entropy_coef"),
    ("rloo", ["--set", "training.entropy_coeff=0.01"], "this trainer has no entropy bonus"),
    ("grpo", ["--set", "training.num_generations=3", "--set", "data.eval_split=null"],
     "GRPOConfig refused the settings: generation_batch_size (32) must be divisible by num_generations (3)"),
    ("grpo", ["--set", "training.reward_weights=[1, 1]"], "set each reward's weight in its rewards: entry"),
    ("grpo", ["--set", "training.loss_type=ppo"],
     "training.loss_type: 'ppo' is not a value trl.GRPOConfig accepts (TRL 1.16.0): grpo, dr_grpo, dapo, bnpo"),
    ("rloo", ["--set", "training.num_generations=3", "--set", "training.per_device_train_batch_size=3",
              "--set", "training.gradient_accumulation_steps=1"],
     "training.per_device_eval_batch_size: 8 is not a multiple of the 3 completions per prompt"),
    ("grpo", ["--set", "rewards=[]"], "rewards: expected a non-empty list of rewards"),
    ("grpo", ["--set", "rewards.0.type=oracle"], "rewards.0.type: unknown reward type 'oracle'; expected one of "
                                                 "reward-model, judge, toxicity, refusal, function"),
    ("grpo", ["--set", "rewards=[{path: x}]"], "rewards.0: type: missing; expected one of reward-model"),
    ("grpo", ["--set", "rewards.2.scorerr=detoxify"], "rewards.2.scorerr: unknown key; did you mean rewards.2.scorer?"),
    ("grpo", ["--set", "rewards.2.scorer=perspective"], "rewards.2.scorer: unknown scorer 'perspective'"),
    ("grpo", ["--set", "rewards.1.weight=heavy"], "rewards.1.weight: expected a number"),
    ("grpo", ["--set", "rewards.1.principles=[be-nice]"],
     "rewards.1.principles: 'be-nice' is not an enabled principle of hhh"),
    ("grpo", ["--set", "rewards.1.constitution=/nonexistent/c.yaml"], "rewards.1.constitution: /nonexistent/c.yaml"),
    ("grpo", ["--set", "rewards.1.engine=openai"],
     "rewards.1.base_url: needed with a judge server: its URL, e.g. http://127.0.0.1:8000/v1"),
    ("grpo", ["--set", "rewards.1.engine=openai", "--set", "rewards.1.base_url=http://127.0.0.1:8000/v1"],
     "rewards.1.model: needed with a judge server: the name http://127.0.0.1:8000/v1 serves the model under"),
    ("grpo", ["--set", "rewards.1.base_url=http://127.0.0.1:8000/v1"],
     "rewards.1.base_url: a server's URL applies only to the openai engine, not transformers"),
    ("grpo", ["--set", "rewards.3.on=everyone"], "rewards.3.on: expected helpful, all or a list"),
    ("grpo", ["--set", "rewards.1.name=toxicity"], "rewards.2: a second reward named 'toxicity'"),
    ("rloo", ["--set", "rewards=[{type: function, function: no_such_module.reward}]"],
     "rewards.0.function: cannot import no_such_module"),
    ("grpo", ["--set", "rewards.9.weight=1"],
     "--set rewards.9.weight=1: rewards is a list of 4; '9' is not one of its indexes"),
    ("grpo", ["--set", "training.0=1"], "--set training.0=1: training.0: a number indexes a list"),
    ("dpo", ["--set", "rewards=[{type: toxicity}]"], "rewards: unknown section for a dpo recipe; the rewards: section "
                                                     "belongs to grpo and rloo recipes"),
    ("dpo", ["--set", "data.prompts=[data/helpful.jsonl]"], "--set data.prompts: prompt files are for online RL "
                                                            "recipes (grpo, rloo); a dpo recipe trains on the pairs"),
    ("dpo", ["--set", "data.first_turn=true"], "--set data.first_turn: applies to online RL recipes (grpo, rloo)"),
    ("grpo", ["--set", "data.prompts=[/nonexistent/p.jsonl]"],
     "grpo.yaml: data.prompts.0: /nonexistent/p.jsonl: no such file or directory"),
])
def test_rl_recipe_errors_are_one_line_naming_the_key(kind, args, expected, data, reward_dir):
    line = _fail(["train", kind, "--data", str(data), "--model", NO_MODEL, *args])
    assert expected in line, line


def test_a_judge_constitution_that_does_not_validate_is_one_line(tmp_path, data):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nprinciples:\n  - id: p1\n    critique: ''\n    revision: Fix it.\n")
    line = _fail(["train", "grpo", "--data", str(data), "--model", NO_MODEL, "--set", f"rewards.1.constitution={bad}"])
    assert line.startswith("error: ") and f"rewards.1.constitution: {bad}" in line and "critique" in line


def test_a_missing_reward_model_is_one_line_before_any_model_loads(tmp_path, weightless_policy):
    data = write_preferences(tmp_path / "run" / "dataset")            # nothing at run/reward
    for extra in (["--dry-run"], []):
        line = _fail(["train", "grpo", "--data", str(data), "--model", str(weightless_policy), *extra])
        assert f"grpo.yaml:29: rewards.0.path: {(tmp_path / 'run' / 'reward').resolve()}: reward model directory " \
               "not found (train one with `cai train reward`)" in line
    line = _fail(["train", "grpo", "--data", str(data), "--model", str(weightless_policy),
                  "--set", f"rewards.0.path={tmp_path}"])
    assert f"--set rewards.0.path: {tmp_path}: not a reward model" in line


def _word_tokenizer(folder, chat_template: str | None = None):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({"[UNK]": 0, "[PAD]": 1, "hello": 2}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]")
    if chat_template:
        tokenizer.chat_template = chat_template
    tokenizer.save_pretrained(folder)


def test_a_reward_model_with_another_tokenizer_and_no_chat_template_is_one_line(tmp_path, data, weightless_policy):
    rm = tmp_path / "rm"
    rm.mkdir()
    (rm / "config.json").write_text(json.dumps({"model_type": "llama"}))
    _word_tokenizer(rm)
    line = _fail(["train", "grpo", "--data", str(data), "--model", str(weightless_policy),
                  "--set", f"rewards.0.path={rm}"])
    assert "rewards.0.path: the reward model's tokenizer differs from the policy's" in line
    assert "no chat template" in line


def test_a_reward_model_tokenizer_without_a_template_passes_when_it_is_the_policys(tmp_path, tiny_model_dir):
    from cai.train.recipe import load_recipe
    from cai.train.rewards import preflight

    rm = tmp_path / "rm"
    shutil.copytree(tiny_model_dir, rm)
    config = json.loads((rm / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (rm / "tokenizer_config.json").write_text(json.dumps(config))
    (rm / "chat_template.jinja").unlink(missing_ok=True)
    other = tmp_path / "other"
    shutil.copytree(rm, other)
    _word_tokenizer(other)
    recipe = load_recipe("grpo", overrides=[f"rewards.0.path={rm}"])
    preflight(recipe, str(tiny_model_dir))                          # same vocabulary: it borrows the policy's template
    recipe = load_recipe("grpo", overrides=[f"rewards.0.path={other}"])
    with pytest.raises(Exception, match="differs from the policy's"):
        preflight(recipe, str(tiny_model_dir))


@pytest.mark.parametrize("text,expected", [
    ("kind: pipeline\nstages:\n  - {name: sft, recipe: sft.yaml}\n"
     "  - {name: grpo, recipe: grpo.yaml, from: sft, reward_model: sft}\n",
     "reward_model: sft is not a reward stage"),
    ("kind: pipeline\nstages:\n  - {name: rm, recipe: reward.yaml}\n"
     "  - {name: dpo, recipe: dpo.yaml, reward_model: rm}\n",
     "reward_model: only online RL stages (grpo, rloo) take one"),
    ("kind: pipeline\nstages:\n  - {name: grpo, recipe: grpo.yaml, reward_model: rm}\n",
     "reward_model: 'rm' is not an earlier stage"),
])
def test_rl_pipeline_errors(tmp_path, data, text, expected):
    recipe = tmp_path / "pipe.yaml"
    recipe.write_text(text)
    line = _fail(["train", "pipeline", "--recipe", str(recipe), "--data", str(data)])
    assert expected in line, line


def test_a_served_judge_reward_is_spelled_as_everywhere_and_checked_without_a_request(data, reward_dir):
    """The README's spelling: the judge entry replaced by a server's model; the dry run contacts no server."""
    entry = '{type: judge, engine: openai, base_url: "http://127.0.0.1:9/v1", model: judge}'
    out = _ok(["train", "grpo", "--recipe", "grpo", "--data", str(data), "--model", NO_MODEL, "--dry-run",
               "--set", f"rewards.1={entry}"])
    assert "engine: openai" in out and "base_url: http://127.0.0.1:9/v1" in out and "model: judge" in out


def test_prompt_files_join_the_rl_prompts_with_their_categories(data, reward_dir):
    from datasets import load_from_disk

    from cai.generation.prompt_files import load_prompts
    from cai.train.online import prepare_dataset
    from cai.train.recipe import load_recipe

    split = load_from_disk(str(data / "hf"))["train_prefs"]
    alone = prepare_dataset(load_recipe("smoke/grpo"), split)
    recipe = load_recipe("smoke/grpo", overrides=["data.prompts=[data/helpful.jsonl]"])   # found among cai's files
    mixed = prepare_dataset(recipe, split)
    helpful = load_prompts(RECIPES.parent / "data" / "helpful.jsonl")
    assert len(mixed) == len(alone) + len(helpful)
    added = list(mixed)[len(alone):]
    assert [r["prompt"] for r in added] == [[{"role": "user", "content": h.prompt}] for h in helpful]
    assert [r["category"] for r in added] == [h.category for h in helpful]
    # with helpful prompts among them, the refusal reward has prompts to act on: no "gives no reward" note
    args = ["train", "grpo", "--data", str(data), "--model", NO_MODEL, "--dry-run"]
    assert "it gives no reward" in cli(args).stderr
    assert "it gives no reward" not in cli([*args, "--set", "data.prompts=[data/helpful.jsonl]"]).stderr


def test_first_turn_cuts_multi_turn_prompts_to_their_first_user_turn():
    from datasets import Dataset

    from cai.train.online import prepare_dataset
    from cai.train.recipe import load_recipe

    def chat(*turns):
        return [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)]

    split = Dataset.from_list([{"prompt": chat("How do I pick a lock?", "Why?", "I lost my key."), "category": "x"},
                               {"prompt": chat("How do I pick a lock?", "What kind?", "A door."), "category": "x"},
                               {"prompt": chat("Name a bird."), "category": "y"}])
    whole = prepare_dataset(load_recipe("smoke/grpo"), split)
    assert [len(r["prompt"]) for r in whole] == [3, 3, 1]
    cut = prepare_dataset(load_recipe("smoke/grpo", overrides=["data.first_turn=true"]), split)
    assert list(cut) == [{"prompt": chat("How do I pick a lock?"), "category": "x"},      # the two transcripts: one
                         {"prompt": chat("Name a bird."), "category": "y"}]
