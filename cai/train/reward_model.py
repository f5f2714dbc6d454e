"""A reward model `cai train reward` wrote, loaded to score replies: online RL rewards, `cai eval`, `cai eval rm`.

A reward-model directory is what `cai train reward` writes: either a PEFT
adapter over `AutoModelForSequenceClassification(num_labels=1)` (the folder
has adapter_config.json naming its base) or a full sequence-classification
model. Texts are formatted the way TRL's RewardTrainer does for conversational
rows: the chat template over prompt + assistant reply, no generation prompt.
"""

from __future__ import annotations

from pathlib import Path

from cai.engines.chat import apply_chat_template
from cai.errors import CaiError

Messages = list[dict]


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def _has_tokenizer(folder: Path) -> bool:
    return any((folder / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model"))


class RewardModel:
    """`score(prompts, responses)` -> one float per pair; `base` overrides the adapter's base model."""

    def __init__(self, path: str | Path, *, base: str | None = None, batch_size: int = 8, max_length: int = 1024):
        self.path = Path(path)
        self.base_override = base
        self.batch_size = batch_size
        self.max_length = max_length
        self.model = None
        self.tokenizer = None
        self.base_path: str | None = None

    def check(self) -> None:
        """Fail early, without loading, when the directory cannot be a reward model."""
        if not self.path.is_dir():
            raise CaiError(f"{self.path}: reward model directory not found")
        if not (self.path / "adapter_config.json").is_file() and not (self.path / "config.json").is_file():
            raise CaiError(f"{self.path}: not a reward model (no adapter_config.json or config.json)")

    def _locate(self) -> bool:
        """Set `base_path` (the adapter's base, or the folder itself); True for an adapter."""
        from cai.models import ADAPTER_CONFIG, adapter_base, resolve_model

        if not self.path.is_dir():
            raise CaiError(f"{self.path}: reward model directory not found")
        is_adapter = (self.path / ADAPTER_CONFIG).is_file()
        if is_adapter:
            base_spec = self.base_override or adapter_base(self.path)
            if not base_spec:
                raise CaiError(f"{self.path}: adapter config names no base model; pass --model BASE")
            self.base_path = resolve_model(base_spec).path
        elif (self.path / "config.json").is_file():
            self.base_path = str(self.path)
        else:
            raise CaiError(f"{self.path}: not a reward model (no adapter_config.json or config.json)")
        return is_adapter

    def load_tokenizer(self):
        """The reward model's tokenizer (its own folder's, else its base's), without loading the model."""
        from transformers import AutoTokenizer

        if self.base_path is None:
            self._locate()
        tok_dir = self.path if _has_tokenizer(self.path) else Path(self.base_path)
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
        except (OSError, ValueError) as exc:
            raise CaiError(f"{self.path}: cannot load the reward model's tokenizer: {_first_line(exc)}") from exc
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        return tokenizer

    def load(self) -> None:
        import torch
        import transformers
        from transformers import AutoModelForSequenceClassification

        is_adapter = self._locate()
        tokenizer = self.load_tokenizer()
        verbosity = transformers.logging.get_verbosity()
        if is_adapter:                                  # the base's score head is "missing": the adapter holds it
            transformers.logging.set_verbosity_error()
        try:
            model = AutoModelForSequenceClassification.from_pretrained(self.base_path, num_labels=1,
                                                                       dtype=torch.float32)
        except (OSError, ValueError) as exc:
            raise CaiError(f"{self.path}: cannot load the reward model: {_first_line(exc)}") from exc
        finally:
            transformers.logging.set_verbosity(verbosity)
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        if is_adapter:
            from peft import PeftModel

            try:
                model = PeftModel.from_pretrained(model, str(self.path), is_trainable=False)
            except (ValueError, KeyError, OSError, RuntimeError) as exc:
                raise CaiError(f"{self.path}: cannot load the reward adapter on {self.base_path}: "
                               f"{_first_line(exc)}") from exc
        if getattr(model.config, "num_labels", 1) != 1:
            raise CaiError(f"{self.path}: reward model has {model.config.num_labels} labels; expected 1")
        tokenizer.padding_side = "right"
        self.model = model.eval()
        self.tokenizer = tokenizer

    def text(self, prompt: Messages | str, response: Messages | str) -> str:
        conversation = as_messages(prompt, "user") + as_messages(response, "assistant")
        if getattr(self.tokenizer, "chat_template", None):
            return apply_chat_template(self.tokenizer, conversation, add_generation_prompt=False)
        return "\n\n".join(m["content"] for m in conversation) + (self.tokenizer.eos_token or "")

    def score(self, prompts: list, responses: list, on_batch=None) -> list[float]:
        import torch

        if len(prompts) != len(responses):
            raise CaiError(f"reward model: {len(prompts)} prompts against {len(responses)} responses")
        if self.model is None:
            self.load()
        ids = self.tokenizer([self.text(p, r) for p, r in zip(prompts, responses)], add_special_tokens=False,
                             truncation=True, max_length=self.max_length)["input_ids"]
        # Batched by length, so a batch pads to about its own length (conversations run from 50 to 1,000 tokens).
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        out: list[float] = [0.0] * len(ids)
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                batch = order[start:start + self.batch_size]
                enc = self.tokenizer.pad({"input_ids": [ids[i] for i in batch]}, return_tensors="pt")
                logits = self.model(**enc).logits
                for i, v in zip(batch, logits[:, 0].float()):
                    out[i] = float(v)
                if on_batch:
                    on_batch(len(batch))
        return out

    def close(self) -> None:
        self.model = None
        self.tokenizer = None


def as_messages(value: Messages | str, role: str) -> Messages:
    """A prompt or reply as chat messages: a bare string becomes one message of `role`."""
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    return [{"role": m["role"], "content": m["content"]} for m in value]
