"""The default engine: plain transformers `generate`, batched, on CPU or one GPU.

Prompts are sorted by length before batching so each micro-batch pads little;
padding is on the left so every row's new tokens start at the same column.

The rows of a micro-batch usually share a long head (system turn and few-shot
dialogues). Its key/value cache is computed once and copied to every row of a
preallocated cache, and only the rest of each prompt is run: on a CPU, where
prefill dominates, this is most of the speed of batching. Padding then sits
between the shared head and each row's tail, masked out, and position ids
follow the attention mask, so the greedy output is the same as without the
shared head.

Micro-batches hold at most `batch_size` rows and a token budget of rows x
(longest prompt + new tokens), so a batch of long prompts is split instead of
allocating tens of GB; a single row over the budget is refused on its own.
"""

from __future__ import annotations

import gc
import inspect
from pathlib import Path

from cai.engines.base import (
    Completion,
    Conversation,
    Engine,
    EngineInfo,
    PromptRejected,
    SamplingParams,
    label_token_ids,
)
from cai.engines.chat import encode_conversations
from cai.errors import CaiError

_DTYPES = ("float32", "bfloat16", "float16")

# Model families whose position ids follow the attention mask (so padding may sit between the shared
# head and a row's tail); others, and models with sliding-window layers, run without the shared head.
_PREFIX_CACHE_MODELS = {"llama", "mistral", "qwen2", "qwen3", "phi3", "olmo2", "granite"}
MIN_SHARED_PREFIX = 16      # tokens; below this a separate prefix pass is not worth it
BUDGET_SHARE = 0.5          # share of the free memory the default token budget may fill


def shared_prefix_length(rows: list[list[int]]) -> int:
    """Tokens every row starts with, leaving each row at least one token of its own."""
    limit = min(len(r) for r in rows) - 1
    n = 0
    while n < limit and all(r[n] == rows[0][n] for r in rows):
        n += 1
    return n


def micro_batches(lengths: list[int], new_tokens: int, max_rows: int, max_tokens: int) -> list[list[int]]:
    """Indices grouped shortest first: each group has at most `max_rows` rows and
    rows x (its longest prompt + `new_tokens`) <= `max_tokens`. A row over the budget alone
    gets a group of its own (the caller refuses it)."""
    groups: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lambda k: lengths[k]):
        group = groups[-1] if groups else None
        # Sorted ascending: the new row is the longest of its group.
        if group and len(group) < max_rows and (len(group) + 1) * (lengths[i] + new_tokens) <= max_tokens:
            group.append(i)
        else:
            groups.append([i])
    return groups


def bytes_per_token(config, dtype_bytes: int) -> int:
    """Memory one token of a micro-batch holds while it runs: its key/value cache in every layer, plus
    the activations of one layer at prefill (MLP and attention projections, with room for temporaries).
    On SmolLM2-135M this gives 89 KiB; measured peaks grew by 80 to 95 KiB a token (1 row of 8,000
    tokens to 32 rows of 640), above about 550 MiB that does not depend on the batch."""
    config = getattr(config, "text_config", None) or config
    hidden, layers = config.hidden_size, config.num_hidden_layers
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    inter = getattr(config, "intermediate_size", None) or 4 * hidden
    kv_cache = 2 * layers * kv_heads * head_dim * dtype_bytes
    activations = (8 * hidden + 4 * inter) * 4
    return kv_cache + activations


def default_batch_tokens(config, dtype_bytes: int, available: int | None) -> int:
    """Token budget that fills at most BUDGET_SHARE of the free memory (1 GiB assumed free when unknown)."""
    free = available if available is not None else 2**30
    return max(1, int(free * BUDGET_SHARE) // bytes_per_token(config, dtype_bytes))


def _shared_head_support(model) -> tuple[bool, str]:
    """(whether the shared-head cache applies to `model`, the name of its cache argument).

    transformers >= 5.24 calls the argument `cache`, older releases `past_key_values`.
    """
    import inspect

    from transformers import StaticCache

    arg = "cache" if "cache" in inspect.signature(type(model).forward).parameters else "past_key_values"
    if model.config.model_type not in _PREFIX_CACHE_MODELS:
        return False, arg
    sliding = any(layer.is_sliding for layer in StaticCache(config=model.config, max_cache_len=8).layers)
    return not sliding, arg


class TransformersEngine(Engine):
    """`chat_template` (Jinja text) replaces the model's own, e.g. for base models that have none."""

    name = "transformers"

    def __init__(self, model_path, *, batch_size: int = 16, dtype: str | None = None, device: str = "cpu",
                 chat_template: str | None = None, prefix_cache: bool = True, max_batch_tokens: int | None = None):
        dtype = dtype or "float32"          # the fastest on CPU, and exact
        if dtype not in _DTYPES:
            raise CaiError(f"unknown dtype {dtype!r}; use one of: {', '.join(_DTYPES)}")
        if batch_size < 1:
            raise CaiError(f"batch size must be at least 1, got {batch_size}")
        if max_batch_tokens is not None and max_batch_tokens < 1:
            raise CaiError(f"--max-batch-tokens: must be at least 1, got {max_batch_tokens}")
        self.model_path = str(model_path)
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens    # None: load() sizes it from the free memory
        self.dtype = dtype
        self.device = device
        self.chat_template = chat_template
        self.prefix_cache = prefix_cache
        self._head_sharable = False         # set by load(): may this model reuse a shared head's cache?
        self._cache_arg = "past_key_values"
        self.model = None
        self.tokenizer = None

    def load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from cai.models import check_chat_template

        tokenizer = AutoTokenizer.from_pretrained(self.model_path, padding_side="left")
        if self.chat_template:
            tokenizer.chat_template = self.chat_template
        check_chat_template(tokenizer, Path(self.model_path).name or self.model_path)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        model = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=getattr(torch, self.dtype))
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self._head_sharable, self._cache_arg = _shared_head_support(self.model)
        if self.max_batch_tokens is None:
            from cai.models import available_memory

            self.max_batch_tokens = default_batch_tokens(model.config, model.dtype.itemsize, available_memory())

    def context_length(self) -> int | None:
        if self.model is None:
            return None
        config = getattr(self.model.config, "text_config", None) or self.model.config
        return getattr(config, "max_position_embeddings", None)

    def count_tokens(self, conversations: list[Conversation]) -> list[int]:
        if self.model is None:
            self.load()
        return [len(ids) for ids in encode_conversations(self.tokenizer, conversations)]

    def generate(self, conversations: list[Conversation], params: SamplingParams) -> list[Completion]:
        import torch

        if self.model is None:
            self.load()
        encoded = encode_conversations(self.tokenizer, conversations)
        results: list[Completion | None] = [None] * len(encoded)
        with torch.inference_mode():
            for group in self._micro_batches(encoded, params.max_new_tokens):
                for index, completion in zip(group, self._generate_batch([encoded[i] for i in group], params)):
                    results[index] = completion
        return results

    def _micro_batches(self, encoded: list[list[int]], new_tokens: int) -> list[list[int]]:
        """Groups within the row and token limits; rows over the budget alone are refused before anything runs."""
        lengths = [len(ids) for ids in encoded]
        over = {i: f"prompt is {n} tokens; with {new_tokens} new tokens it is over the batch budget of "
                   f"{self.max_batch_tokens} tokens (--max-batch-tokens)"
                for i, n in enumerate(lengths) if n + new_tokens > self.max_batch_tokens}
        if over:
            raise PromptRejected(over)
        return micro_batches(lengths, new_tokens, self.batch_size, self.max_batch_tokens)

    def _generate_batch(self, batch: list[list[int]], params: SamplingParams) -> list[Completion]:
        import torch

        tok = self.tokenizer
        shared = shared_prefix_length(batch) if self._prefix_cache_on() and len(batch) > 1 else 0
        if shared >= MIN_SHARED_PREFIX:
            padded = self._prefill_shared(batch, shared, params.max_new_tokens)
        else:
            padded = tok.pad({"input_ids": batch}, return_tensors="pt").to(self.device)
        eos_ids = self._eos_ids()
        options = dict(max_new_tokens=params.max_new_tokens, eos_token_id=eos_ids, pad_token_id=tok.pad_token_id)
        if params.stop:
            options.update(stop_strings=list(params.stop), tokenizer=tok)
        if params.temperature > 0:
            torch.manual_seed(params.seed)      # per batch, so one seed always gives one output
            # top_k=0: only temperature and top_p shape the distribution, as in vLLM and OpenAI.
            options.update(do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=0)
        else:
            options.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        output = self.model.generate(**padded, **options)
        new_tokens = output[:, padded["input_ids"].shape[1]:].tolist()
        return [self._completion(ids, len(prompt), eos_ids, params) for ids, prompt in zip(new_tokens, batch)]

    def _prefix_cache_on(self) -> bool:
        return self.prefix_cache and self._head_sharable

    def _prefill_shared(self, batch: list[list[int]], shared: int, max_new_tokens: int) -> dict:
        """Run the shared head once; return generate() inputs whose cache holds it for every row.

        The cache is preallocated (a StaticCache) for the head, the longest tail and the new tokens: a
        growing cache would copy every row's whole head at each decoding step.
        """
        import torch
        from transformers import DynamicCache, StaticCache

        key = self._cache_arg
        head = batch[0][:shared]
        head_cache = DynamicCache(config=self.model.config)
        # logits_to_keep=1: the head's own logits are not needed (all of them would be head x vocabulary floats).
        self.model(input_ids=torch.tensor([head], device=self.device), **{key: head_cache}, use_cache=True,
                   logits_to_keep=1)
        tails = [row[shared:] for row in batch]
        width = max(len(t) for t in tails)
        cache = StaticCache(config=self.model.config, max_cache_len=shared + width + max_new_tokens)
        rows = len(batch)
        for layer, computed in zip(cache.layers, head_cache.layers):
            layer.update(computed.keys.expand(rows, -1, -1, -1), computed.values.expand(rows, -1, -1, -1))
        pad = self.tokenizer.pad_token_id
        ids = [head + [pad] * (width - len(t)) + t for t in tails]
        mask = [[1] * shared + [0] * (width - len(t)) + [1] * len(t) for t in tails]
        return {"input_ids": torch.tensor(ids, device=self.device),
                "attention_mask": torch.tensor(mask, device=self.device), key: cache}

    def _completion(self, ids: list[int], prompt_tokens: int, eos_ids: list[int], params: SamplingParams) -> Completion:
        hit_eos = next((k for k, t in enumerate(ids) if t in eos_ids), None)
        if hit_eos is not None:
            ids, used = ids[:hit_eos], hit_eos + 1
        else:
            pad = self.tokenizer.pad_token_id
            while ids and ids[-1] == pad:       # a row stopped by a stop string is padded to the batch end
                ids = ids[:-1]
            used = len(ids)
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        cut = min((text.find(s) for s in params.stop if s and s in text), default=-1)
        if cut >= 0:
            return Completion(text[:cut], prompt_tokens, used, "stop")
        finish = "length" if hit_eos is None and used >= params.max_new_tokens else "stop"
        return Completion(text, prompt_tokens, used, finish)

    def label_logprobs(self, conversations: list[Conversation], labels: list[str]) -> list[list[float]]:
        """One forward pass per micro-batch; the next-token distribution at the reply's start."""
        import torch

        if self.model is None:
            self.load()
        label_ids = label_token_ids(self.tokenizer, labels)
        encoded = encode_conversations(self.tokenizer, conversations)
        # only the last position's logits are read: skip the vocabulary projection of every other position
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        last_only = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(base.forward).parameters else {}
        out: list[list[float] | None] = [None] * len(encoded)
        with torch.inference_mode():
            for group in self._micro_batches(encoded, 1):
                padded = self.tokenizer.pad({"input_ids": [encoded[i] for i in group]},
                                            return_tensors="pt").to(self.device)
                # left padding: last column is real
                logits = self.model(**padded, **last_only).logits[:, -1, :].float()
                logprobs = torch.log_softmax(logits, dim=-1)
                for i, row in zip(group, logprobs):
                    out[i] = [torch.logsumexp(row[ids], dim=0).item() for ids in label_ids]
        return out

    def _eos_ids(self) -> list[int]:
        ids = self.model.generation_config.eos_token_id
        ids = list(ids) if isinstance(ids, (list, tuple)) else [ids]
        ids.append(self.tokenizer.eos_token_id)
        return sorted({i for i in ids if i is not None})

    def close(self) -> None:
        self.model = None
        self.tokenizer = None
        gc.collect()

    def info(self) -> EngineInfo:
        return EngineInfo(self.name, self.model_path,
                          {"dtype": self.dtype, "device": self.device, "batch_size": self.batch_size,
                           "max_batch_tokens": self.max_batch_tokens, "prefix_cache": self.prefix_cache})
