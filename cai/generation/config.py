"""Settings of `cai generate`, each with its default and help (read by the CLI).

Engine-specific settings (vLLM parallelism, the OpenAI server's URL, ...) sit
here too, so one object describes a run; `engine_options()` hands each engine
the ones it takes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cai.cluster import ON_SERVER, RaySettings
from cai.config import REQUIRED, at_least, one_of, setting
from cai.engines.base import DEFAULT_BATCH_SIZE
from cai.engines.server_pool import parse_base_urls
from cai.errors import CaiError, SettingError
from cai.generation.context import ON_LONG


@dataclass(kw_only=True)
class GenerateConfig(RaySettings):
    """One generation run: prompts answered by a model, then critiqued and revised under a constitution.

    The Ray settings (`--ray`, `--replicas`, `--gpus-per-replica`, `--cpus-per-replica`) come from `RaySettings`.
    """

    constitution: str = setting(REQUIRED, "Constitution YAML.")
    prompts: str = setting("data/red_team.jsonl", "Prompts: .jsonl, .txt, .csv, .parquet or a saved HF dataset dir.")
    prompt_column: str | None = setting(None, "Column holding the prompt (default: prompt).")
    model: str | None = setting(None, "Local HF model dir or .gguf file (default: the embedded "
                                      "SmolLM2-135M-Instruct); with --engine openai, the name the server serves.")
    engine: str = setting("transformers", "transformers, vllm or openai.")
    rounds: int | None = setting(None, "Critique/revise rounds (default: the constitution's).")
    out: str | None = setting(None, "Run directory (default: runs/<constitution>-<prompts>).")
    seed: int = setting(0, "Seed for principle sampling and decoding.")
    max_new_tokens: int = setting(256, "Token budget of each reply.")
    temperature: float = setting(0.0, "0 decodes greedily.")
    top_p: float = setting(1.0, "Nucleus sampling: keep the smallest set of tokens with this much probability.")
    limit: int | None = setting(None, "Use only the first K prompts (after --shard).")
    shard: str | None = setting(None, "i/n: this process takes shard i of n (0-based).")
    batch_size: int = setting(DEFAULT_BATCH_SIZE, "Prompts per batch: each stage is one engine call per batch. "
                                                   "openai: at least this; more (4 x what the servers take at once).")
    few_shot: int | None = setting(None, "Use only the first K few-shot dialogues (default: all).")
    prompts_dir: str | None = setting(None, "Folder with your own copies of the prompt templates.")
    chat_template: str | None = setting(None, "Jinja chat template file for models that have none.")
    dtype: str | None = setting(None, "float32, bfloat16 or float16 (vllm also auto). Default: float32 for "
                                      "transformers; vllm on a CPU: float32 unless it has native bf16 (AVX512-BF16, "
                                      "AMX), else auto. Recorded in the manifest.")
    max_prompt_tokens: int | None = setting(None, "Longest prompt (chat template and few-shot turns included); "
                                                  "default: the context minus what the stages add.")
    on_long: str = setting("skip", "A prompt over the limit: skip (recorded in failed.jsonl with the reason) or "
                                   "truncate (keeps its head and tail; the record says so).")
    retries: int = setting(1, "Extra tries of a single prompt after an engine fault.")
    retry_failed: bool = setting(True, "On resume, try the prompts in failed.jsonl again.")
    max_batch_tokens: int | None = setting(None, "transformers: rows x (prompt + new tokens) per micro-batch "
                                                 "(default: sized from free memory).")
    verbose: bool = setting(False, "Show the engine's own logs (vLLM prints hundreds of lines at start).")
    force_new: bool = setting(False, "Start the run over when its settings changed (old records move to previous/).")
    quiet: bool = setting(False, "No progress bars: one JSON line per stage on stdout.")
    pairs: bool = setting(True, "Build the preference dataset at the end (--no-pairs: later, with `cai data pairs`).")
    strategy: str = setting("final-vs-initial", "Pair strategy for the dataset built at the end (checked by the pairs "
                                                 "stage's settings, before the run starts).")
    tensor_parallel_size: int = setting(1, "vllm: GPUs per model replica.")
    data_parallel_size: int = setting(1, "vllm: model replicas.")
    enforce_eager: bool | None = setting(None, "vllm: skip graph compilation (default: eager on CPU).")
    base_url: list[str] | None = setting(None, "openai: server URL, e.g. http://127.0.0.1:8000/v1; give it again "
                                               "(or a comma list) for several servers, balanced by least busy.")
    concurrency: int | None = setting(None, "openai: requests in flight per server, fixed (default: found while "
                                            "the run goes; raised while throughput grows, lowered on 429/503).")

    def __post_init__(self) -> None:
        from cai.generation.prompt_files import parse_shard

        super().__post_init__()
        if self.ray is not None and self.engine == "openai":
            raise SettingError("ray", ON_SERVER)
        at_least("rounds", self.rounds, 0)
        at_least("max_new_tokens", self.max_new_tokens, 1)
        at_least("batch_size", self.batch_size, 1)
        at_least("max_prompt_tokens", self.max_prompt_tokens, 1)
        at_least("max_batch_tokens", self.max_batch_tokens, 1)
        at_least("retries", self.retries, 0)
        at_least("tensor_parallel_size", self.tensor_parallel_size, 1)
        at_least("data_parallel_size", self.data_parallel_size, 1)
        at_least("concurrency", self.concurrency, 1)
        one_of("on_long", self.on_long, ON_LONG)
        if self.shard is not None:
            try:
                parse_shard(self.shard)
            except CaiError as err:
                raise SettingError("shard", str(err)) from None
        if self.base_url is not None:
            try:
                self.base_url = parse_base_urls(self.base_url)
            except CaiError as err:
                raise SettingError("base_url", str(err)) from None
        if self.engine == "openai":
            if not self.base_url:
                raise SettingError("base_url", "needed with --engine openai: the server's URL, e.g. http://127.0.0.1:8000/v1")
            if not self.model:
                raise SettingError("model", "needed with --engine openai: the model name the server serves")
            if self.dtype:
                raise SettingError("dtype", "with --engine openai the server chooses the dtype; start it with the one "
                                            "you want")

    def engine_options(self) -> dict:
        """The settings the chosen engine takes (keyword arguments of its class)."""
        if self.engine == "openai":
            return {"base_url": self.base_url, "concurrency": self.concurrency}
        template = self._chat_template_text()
        if self.engine == "vllm":
            return {"tensor_parallel_size": self.tensor_parallel_size, "data_parallel_size": self.data_parallel_size,
                    "enforce_eager": self.enforce_eager, "chat_template": template, "dtype": self.dtype,
                    "verbose": self.verbose}
        if self.engine == "transformers":
            return {"batch_size": self.batch_size, "chat_template": template, "dtype": self.dtype,
                    "max_batch_tokens": self.max_batch_tokens}
        return {}                                     # a plugin engine ("module:Class") takes its defaults

    def _chat_template_text(self) -> str | None:
        if not self.chat_template:
            return None
        try:
            return Path(self.chat_template).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise SettingError("chat_template", f"{self.chat_template}: cannot read ({type(err).__name__})") from None
