"""The offline vLLM engine on a tiny random Llama.

Tests that need the engine skip when vllm is not installed; the missing-vllm
error test runs everywhere. The engine starts once for the module: vLLM takes
30 to 60 s to start on a 2-core CPU.
"""

from __future__ import annotations

import json
import shutil
import sys

import pytest
from support.vllm_env import vllm_env
from transformers import AutoTokenizer

from cai.engines.base import SamplingParams
from cai.engines.chat import apply_chat_template
from cai.engines.vllm import VLLMEngine, cpu_dtype, cpu_flags
from cai.errors import CaiError

pytestmark = pytest.mark.vllm


@pytest.fixture(scope="module")
def engine(request, tmp_path_factory):
    pytest.importorskip("vllm", reason="vllm is not installed (pip install -e '.[vllm]')")
    model_dir = request.getfixturevalue("tiny_vllm_model_dir")
    mp = pytest.MonkeyPatch()
    for key, value in vllm_env(tmp_path_factory.mktemp("vllm-cache")).items():
        mp.setenv(key, value)
    mp.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)      # it would override kv_cache_gib
    for key in ("VLLM_CPU_NUM_OF_RESERVED_CPU", "VLLM_CPU_OMP_THREADS_BIND"):      # the engine's defaults apply
        mp.delenv(key, raising=False)
    engine = VLLMEngine(str(model_dir), enforce_eager=True, kv_cache_gib=0.5, max_model_len=512)
    engine.load()
    yield engine
    engine.close()
    mp.undo()


def conversations(n):
    return [[{"role": "system", "content": "Be brief."},
             {"role": "user", "content": f"Question number {i}: " + "why? " * i}]
            for i in range(n)]


@pytest.mark.slow
def test_batch_in_order_with_counts(engine):
    convs = conversations(6)
    out = engine.generate(convs, SamplingParams(max_new_tokens=8))
    assert len(out) == 6
    # Longer prompts come later: prompt token counts must rise with the input order.
    counts = [c.prompt_tokens for c in out]
    assert counts == sorted(counts) and len(set(counts)) == 6
    # This seeded random model never says EOS, so every answer runs to max_tokens.
    assert all(c.completion_tokens == 8 and c.finish_reason == "length" for c in out)
    # The same conversation alone gives the same text as inside the batch.
    alone = engine.generate([convs[3]], SamplingParams(max_new_tokens=8))
    assert alone[0].text == out[3].text


@pytest.mark.slow
def test_greedy_is_deterministic(engine):
    convs = conversations(4)
    first = engine.generate(convs, SamplingParams(max_new_tokens=12))
    second = engine.generate(convs, SamplingParams(max_new_tokens=12))
    assert [c.text for c in first] == [c.text for c in second]
    assert all(c.text for c in first)


@pytest.mark.slow
def test_stop_string_ends_with_finish_stop(engine):
    conv = conversations(2)[1]
    full = engine.generate([conv], SamplingParams(max_new_tokens=12))[0]
    words = full.text.split()
    stop = words[len(words) // 2]            # first seen by mid-answer, so generation ends early
    cut = engine.generate([conv], SamplingParams(max_new_tokens=12, stop=(stop,)))[0]
    assert cut.finish_reason == "stop" and cut.completion_tokens < 12
    assert full.text.startswith(cut.text) and stop not in cut.text


@pytest.mark.slow
def test_same_seed_same_sample(engine):
    convs = conversations(3)
    def sample(seed):
        return [c.text for c in engine.generate(convs, SamplingParams(max_new_tokens=12, temperature=1.0, seed=seed))]
    assert sample(7) == sample(7)
    assert sample(7) != sample(8)


@pytest.mark.slow
def test_context_token_counts_and_cpu_settings(engine):
    """The context guard's inputs, and the CPU defaults the engine started with (recorded in the manifest)."""
    from pathlib import Path

    from vllm.platforms import current_platform

    assert engine.context_length() == 512
    convs = conversations(3)
    assert engine.count_tokens(convs) == [c.prompt_tokens
                                          for c in engine.generate(convs, SamplingParams(max_new_tokens=1))]
    info = engine.info().extra
    if current_platform.is_cpu():
        native_bf16 = cpu_dtype(cpu_flags(Path("/proc/cpuinfo").read_text())) == "auto"
        assert info["dtype_asked"] == ("auto" if native_bf16 else "float32")
        assert info["dtype"] in (("bfloat16", "float16") if native_bf16 else ("float32",))
        assert info["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0" and info["VLLM_CPU_OMP_THREADS_BIND"] == "auto"


@pytest.mark.slow
def test_empty_batch(engine):
    assert engine.generate([], SamplingParams()) == []


@pytest.mark.slow
def test_prompt_is_rendered_like_the_transformers_engine(engine, monkeypatch):
    tokenizer = engine._tokenizer
    conv = conversations(2)[1]
    expected = len(tokenizer.encode(apply_chat_template(tokenizer, conv), add_special_tokens=False))
    assert engine.generate([conv], SamplingParams(max_new_tokens=2))[0].prompt_tokens == expected
    # A Mistral-style template that refuses system turns: the system text is folded, not an error.
    strict = ("{% for m in messages %}{% if m['role'] == 'system' %}"
              "{{ raise_exception('System role not supported') }}{% endif %}"
              "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}<|im_start|>assistant\n")
    tokenizer = AutoTokenizer.from_pretrained(engine.model_path)
    tokenizer.chat_template = strict
    monkeypatch.setattr(engine, "_tokenizer", tokenizer)       # as if built with chat_template=strict
    folded = [{"role": "user", "content": conv[0]["content"] + "\n\n" + conv[1]["content"]}]
    expected = len(tokenizer.encode(tokenizer.apply_chat_template(folded, tokenize=False), add_special_tokens=False))
    assert engine.generate([conv], SamplingParams(max_new_tokens=2))[0].prompt_tokens == expected


def test_missing_vllm_is_a_one_line_error(monkeypatch, tmp_path):
    monkeypatch.setenv("CAI_CACHE_DIR", str(tmp_path))
    for key in ("VLLM_CACHE_ROOT", "TORCHINDUCTOR_CACHE_DIR"):      # load() sets them; undo restores them
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setitem(sys.modules, "vllm", None)      # makes `import vllm` raise ImportError
    with pytest.raises(CaiError, match=r"^vllm is not installed: pip install -e '\.\[vllm\]'$"):
        VLLMEngine("/nonexistent").load()


def test_unsupported_cpu_head_dim_is_refused_before_startup(tmp_path, tiny_vllm_model_dir):
    pytest.importorskip("vllm", reason="vllm is not installed (pip install -e '.[vllm]')")
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        pytest.skip("the head_dim check only applies to vLLM on CPU")
    model = shutil.copytree(tiny_vllm_model_dir, tmp_path / "model")
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "hidden_size": 64, "head_dim": 16}))
    with pytest.raises(CaiError, match="head_dim 16 is not supported by vLLM on CPU"):
        VLLMEngine(str(model)).load()


def test_model_without_chat_template_is_refused_before_startup(tmp_path, tiny_vllm_model_dir):
    pytest.importorskip("vllm", reason="vllm is not installed (pip install -e '.[vllm]')")
    model = shutil.copytree(tiny_vllm_model_dir, tmp_path / "base")
    (model / "chat_template.jinja").unlink()
    settings = json.loads((model / "tokenizer_config.json").read_text())
    settings.pop("chat_template", None)
    (model / "tokenizer_config.json").write_text(json.dumps(settings))
    with pytest.raises(CaiError, match="has no chat template"):
        VLLMEngine(str(model)).load()


@pytest.mark.slow
def test_label_logprobs_match_the_transformers_engine(engine, tiny_vllm_model_dir):
    """AI feedback reads the same label probabilities whichever engine serves the judge."""
    from cai.engines.transformers import TransformersEngine

    convs = [[{"role": "user", "content": f"Pick A or B for question {i}."}] for i in range(3)]
    from_vllm = engine.label_logprobs(convs, ["A", "B"])
    reference = TransformersEngine(tiny_vllm_model_dir)
    reference.load()
    expected = reference.label_logprobs(convs, ["A", "B"])
    reference.close()
    assert len(from_vllm) == 3 and all(len(row) == 2 for row in from_vllm)
    for got, want in zip(from_vllm, expected):
        # vLLM on CPU computes in bf16 where transformers uses fp32: close, not identical.
        assert got == pytest.approx(want, rel=0.02)
        assert (got[0] > got[1]) == (want[0] > want[1])
