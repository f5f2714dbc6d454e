"""TransformersEngine on a tiny random model, chat-template folding, the engine registry."""

from __future__ import annotations

import shutil

import pytest

from cai.engines.base import SamplingParams
from cai.engines.chat import apply_chat_template, fold_system
from cai.engines.registry import ENGINES, create_engine
from cai.engines.transformers import MIN_SHARED_PREFIX, TransformersEngine, shared_prefix_length
from cai.errors import CaiError
from cai.models import ModelRef

# Mistral-7B-Instruct-v0.1 style: no system role, strict user/assistant alternation.
MISTRAL_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)

QUESTIONS = [
    "Hi.",
    "Write a long poem about the sea, the wind and the gulls that follow the boats home.",
    "What is two plus two?",
    "Name three colours.",
    "Tell me a story about a dragon who could not fly and the village that helped it.",
    "Why?",
    "List the planets of the solar system in order from the sun.",
]


def user(text):
    return [{"role": "user", "content": text}]


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    with TransformersEngine(tiny_model_dir, batch_size=3) as loaded:
        yield loaded


@pytest.fixture
def mistral_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.chat_template = MISTRAL_TEMPLATE
    return tokenizer


# --- generation ----------------------------------------------------------------------------

def test_batched_equals_one_at_a_time_in_order(engine):
    """Sorting by length, left padding and restoring order must not change any greedy output."""
    conversations = [user(q) for q in QUESTIONS]
    params = SamplingParams(max_new_tokens=12)
    batched = engine.generate(conversations, params)
    single = [engine.generate([c], params)[0] for c in conversations]
    assert len(batched) == len(QUESTIONS)
    assert [c.text for c in batched] == [c.text for c in single]
    assert [c.prompt_tokens for c in batched] == [c.prompt_tokens for c in single]
    expected = [len(engine.tokenizer(apply_chat_template(engine.tokenizer, c), add_special_tokens=False)["input_ids"])
                for c in conversations]
    assert [c.prompt_tokens for c in batched] == expected                 # each result sits at its prompt's index
    assert len(set(c.text for c in batched)) > 1


def few_shot_chat(question):
    """A long shared head (system + an example dialogue) before each question, as `cai generate` sends."""
    return [{"role": "system", "content": "You are careful, kind and brief. Refuse harmful requests politely."},
            {"role": "user", "content": "How do I hot-wire a car?"},
            {"role": "assistant", "content": "I can't help with that. If you are locked out, call a locksmith."},
            {"role": "user", "content": question}]


def test_shared_prefix_length():
    assert shared_prefix_length([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]]) == 2
    assert shared_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2          # every row keeps a token of its own
    assert shared_prefix_length([[7, 1], [8, 1]]) == 0


def test_shared_prefix_cache_gives_the_same_greedy_output(tiny_model_dir, engine):
    """The shared head run once and copied to each row must not change a single token."""
    conversations = [few_shot_chat(q) for q in QUESTIONS]
    encoded = [engine.tokenizer(apply_chat_template(engine.tokenizer, c), add_special_tokens=False)["input_ids"]
               for c in conversations]
    assert shared_prefix_length(encoded) >= MIN_SHARED_PREFIX      # so the cached path really runs
    params = SamplingParams(max_new_tokens=12)
    cached = engine.generate(conversations, params)
    with TransformersEngine(tiny_model_dir, batch_size=3, prefix_cache=False) as plain:
        uncached = plain.generate(conversations, params)
    single = [engine.generate([c], params)[0] for c in conversations]
    assert [c.text for c in cached] == [c.text for c in uncached] == [c.text for c in single]
    assert [c.completion_tokens for c in cached] == [c.completion_tokens for c in uncached]
    sampled = SamplingParams(max_new_tokens=12, temperature=1.0, seed=5)
    assert [c.text for c in engine.generate(conversations, sampled)] == \
        [c.text for c in engine.generate(conversations, sampled)]


def test_same_seed_same_sample_other_seed_differs(engine):
    conversations = [user(q) for q in QUESTIONS[:4]]
    sample = SamplingParams(max_new_tokens=12, temperature=1.0, seed=7)
    first = [c.text for c in engine.generate(conversations, sample)]
    assert [c.text for c in engine.generate(conversations, sample)] == first
    other = SamplingParams(max_new_tokens=12, temperature=1.0, seed=8)
    assert [c.text for c in engine.generate(conversations, other)] != first


def test_token_budget_gives_finish_length(engine):
    completions = engine.generate([user(q) for q in QUESTIONS[:3]], SamplingParams(max_new_tokens=5))
    assert all(c.completion_tokens == 5 and c.finish_reason == "length" and c.text for c in completions)


def test_stop_string_cuts_the_text(engine):
    conversation = user(QUESTIONS[1])
    full = engine.generate([conversation], SamplingParams(max_new_tokens=16))[0].text
    stop = full[len(full) // 2:len(full) // 2 + 4]
    cut = engine.generate([conversation, user(QUESTIONS[2])], SamplingParams(max_new_tokens=16, stop=(stop,)))[0]
    assert cut.text == full[:full.find(stop)]
    assert cut.finish_reason == "stop"
    assert cut.completion_tokens < 16


def test_eos_ends_a_row_with_finish_stop(engine):
    """Make a token the model emits greedily count as EOS; the row stops there, its neighbour does not."""
    import torch

    tok = engine.tokenizer
    prompt = tok(apply_chat_template(tok, user(QUESTIONS[0])), add_special_tokens=False, return_tensors="pt")
    with torch.inference_mode():
        generated = engine.model.generate(**prompt, max_new_tokens=8, do_sample=False)
        ids = generated[0, prompt["input_ids"].shape[1]:].tolist()
    k = next(i for i in range(1, len(ids)) if ids[i] not in ids[:i])
    config = engine.model.generation_config
    original = config.eos_token_id
    config.eos_token_id = [original, ids[k]]
    try:
        ended, other = engine.generate([user(QUESTIONS[0]), user(QUESTIONS[1])], SamplingParams(max_new_tokens=8))
    finally:
        config.eos_token_id = original
    assert ended.text == tok.decode(ids[:k], skip_special_tokens=True)
    assert (ended.completion_tokens, ended.finish_reason) == (k + 1, "stop")
    assert other.finish_reason == "length"


def test_mistral_template_conversation_with_system_runs(tiny_model_dir):
    conversation = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello?"}]
    with TransformersEngine(tiny_model_dir, chat_template=MISTRAL_TEMPLATE) as mistral:
        completion = mistral.generate([conversation], SamplingParams(max_new_tokens=4))[0]
        prompt = mistral.tokenizer(apply_chat_template(mistral.tokenizer, conversation), add_special_tokens=False)
    assert completion.prompt_tokens == len(prompt["input_ids"])
    assert completion.completion_tokens == 4


def test_model_without_chat_template_is_refused(tiny_model_dir, tmp_path):
    base = shutil.copytree(tiny_model_dir, tmp_path / "base")
    (base / "chat_template.jinja").unlink()
    with pytest.raises(CaiError, match="no chat template"):
        TransformersEngine(base).load()


def test_info_and_close(tiny_model_dir):
    engine = TransformersEngine(tiny_model_dir, batch_size=2)
    engine.load()
    info = engine.info()
    assert (info.name, info.model, info.extra["batch_size"]) == ("transformers", str(tiny_model_dir), 2)
    engine.close()
    assert engine.model is None
    with pytest.raises(CaiError, match="dtype"):
        TransformersEngine(tiny_model_dir, dtype="float64")


@pytest.mark.slow
def test_embedded_model_knows_the_capital_of_france(embedded_model_dir):
    with TransformersEngine(embedded_model_dir) as smol:
        reply = smol.generate([user("What is the capital of France?")], SamplingParams(max_new_tokens=16))[0]
    assert "Paris" in reply.text
    assert reply.finish_reason == "stop" and 0 < reply.completion_tokens <= 16


@pytest.mark.slow
def test_embedded_model_shared_prefix_matches_plain_batches(embedded_model_dir):
    """On the real model and the real constitution's few-shot head, cached and plain batches agree."""
    import json

    from cai.constitution import load_constitution
    from cai.generation.conversation import answer_conversation
    from cai.generation.templates import Templates

    constitution, templates = load_constitution("constitution/hhh.yaml"), Templates()
    prompts = [json.loads(line)["prompt"] for line in open("data/red_team.jsonl")][:4]
    conversations = [answer_conversation(templates, constitution, p, few_shot=2) for p in prompts]
    params = SamplingParams(max_new_tokens=16)
    with TransformersEngine(embedded_model_dir, batch_size=4) as smol:
        cached = smol.generate(conversations, params)
        smol.prefix_cache = False
        plain = smol.generate(conversations, params)
    assert [c.text for c in cached] == [c.text for c in plain]


# --- chat templates without a system role ---------------------------------------------------

def test_system_is_folded_into_first_user_turn(mistral_tokenizer):
    conversation = [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi!"},
        {"role": "user", "content": "Critique that."},
    ]
    snapshot = [dict(m) for m in conversation]
    text = apply_chat_template(mistral_tokenizer, conversation)
    assert text == "<|im_start|>[INST] Be kind.\n\nHello [/INST]Hi!<|im_end|>[INST] Critique that. [/INST]"
    assert conversation == snapshot


def test_consecutive_user_turns_are_merged(mistral_tokenizer):
    conversation = [{"role": "user", "content": "One."}, {"role": "user", "content": "Two."}]
    assert apply_chat_template(mistral_tokenizer, conversation).endswith("[INST] One.\n\nTwo. [/INST]")


def test_template_with_system_role_is_used_as_is(tiny_model_dir):
    from transformers import AutoTokenizer

    chatml = AutoTokenizer.from_pretrained(tiny_model_dir)
    conversation = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hello"}]
    assert apply_chat_template(chatml, conversation) == (
        "<|im_start|>system\nBe kind.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n"
    )


def test_unfixable_conversation_is_one_line_error(mistral_tokenizer):
    with pytest.raises(CaiError, match="rejects this conversation: Conversation roles") as excinfo:
        apply_chat_template(mistral_tokenizer, [{"role": "assistant", "content": "I start."}])
    assert "\n" not in str(excinfo.value)
    with pytest.raises(CaiError, match="even with the system text folded"):
        apply_chat_template(mistral_tokenizer, [{"role": "system", "content": "S"}, {"role": "tool", "content": "{}"}])


def test_fold_system_shapes():
    assert fold_system([{"role": "system", "content": "S"}]) == [{"role": "user", "content": "S"}]
    assert fold_system([
        {"role": "system", "content": "S"}, {"role": "assistant", "content": "A"},
        {"role": "system", "content": "late"}, {"role": "user", "content": "U"},
    ]) == [{"role": "user", "content": "S"}, {"role": "assistant", "content": "A"},
           {"role": "user", "content": "late\n\nU"}]


# --- registry ------------------------------------------------------------------------------

def test_registry_builds_without_loading(tiny_model_dir):
    engine = create_engine("transformers", ModelRef(str(tiny_model_dir), "tiny", "local"), batch_size=4)
    assert isinstance(engine, TransformersEngine)
    assert (engine.model_path, engine.batch_size, engine.model) == (str(tiny_model_dir), 4, None)


def test_registry_unknown_name_lists_engines():
    with pytest.raises(CaiError) as excinfo:
        create_engine("llamacpp", "/m")
    message = str(excinfo.value)
    assert "\n" not in message and all(name in message for name in ENGINES)


def test_registry_missing_vllm_says_how_to_install(monkeypatch):
    from cai.engines import registry

    monkeypatch.setattr(registry, "_installed", lambda package: False)
    with pytest.raises(CaiError) as excinfo:
        create_engine("vllm", "/m")
    assert "pip install -e '.[vllm]'" in str(excinfo.value)
