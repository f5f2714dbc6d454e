"""Fixtures shared by the whole suite: the embedded model once, and tiny random models.

Nothing here may reach the network: the hub is switched off before anything
imports transformers.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent

from support import cli as _cli  # noqa: E402 - after the hub is switched off
from support.engines import FakeEngine  # noqa: E402,F401 - the scripted engine of the unit tests


@pytest.fixture
def cli():
    """`cli(["data", "stats", DIR], code=0)`: run a cai command in-process and check its exit code."""
    return _cli


@pytest.fixture
def fake_engine_name():
    """Register `FakeEngine` as the engine "fake", so jobs and commands can run on it by name."""
    from cai.engines.registry import ENGINES

    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(ENGINES, "fake", "support.engines:FakeEngine")
        yield "fake"


def pytest_collection_modifyitems(config, items):
    """`vllm` tests need vllm installed, `gpu` tests a CUDA device: elsewhere they are skipped, saying why."""
    import importlib.util

    has_vllm = importlib.util.find_spec("vllm") is not None
    for item in items:
        if "vllm" in item.keywords and not has_vllm:
            item.add_marker(pytest.mark.skip(reason="needs vllm: `make test-vllm` runs these in .venv-vllm"))
        if "gpu" in item.keywords and not _has_cuda():
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()
# The embedded GGUF takes ~30 s to convert: keep the result between test runs.
MODEL_CACHE = REPO / ".pytest-cache-models"


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Keep tests out of the user's ~/.cache/cai (tests may still monkeypatch CAI_CACHE_DIR)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CAI_CACHE_DIR", str(tmp_path_factory.mktemp("cai-cache")))
        yield


@pytest.fixture(scope="session")
def embedded_model_cache() -> Path:
    """The CAI_CACHE_DIR that holds the converted embedded model."""
    return MODEL_CACHE


@pytest.fixture(scope="session")
def embedded_model_dir(embedded_model_cache) -> Path:
    """The embedded SmolLM2-135M-Instruct as a plain HF directory (converted once, reused across runs)."""
    from cai.models import resolve_model

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CAI_CACHE_DIR", str(embedded_model_cache))
        return Path(resolve_model(None).path)


def build_tiny_model(out: Path, tokenizer_dir: Path, *, hidden: int, heads: int, layers: int,
                     intermediate: int) -> Path:
    """A seeded random Llama with the SmolLM2 tokenizer and chat template; deterministic across runs."""
    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=intermediate,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
        max_position_embeddings=2048, tie_word_embeddings=True,
        # Wider init than the default 0.02 gives peaked logits: greedy ties (and padding flakiness) vanish.
        initializer_range=0.2,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, embedded_model_dir) -> Path:
    """Random Llama, hidden 64, 4 heads (head_dim 16), 2 layers: fast plumbing tests with transformers."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"), embedded_model_dir,
                            hidden=64, heads=4, layers=2, intermediate=128)


@pytest.fixture(scope="session")
def tiny_vllm_model_dir(tmp_path_factory, embedded_model_dir) -> Path:
    """Random Llama with head_dim 32 (hidden 128, 4 heads, 2 layers), a shape vLLM's CPU kernels accept."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-vllm-model"), embedded_model_dir,
                            hidden=128, heads=4, layers=2, intermediate=256)
