"""A transformers engine that runs a base model with a PEFT (LoRA) adapter on top.

`cai train dpo|sft` writes adapters, not whole models. This engine loads the
base once and wraps it with `PeftModel.from_pretrained`; `adapter_enabled`
switches the adapter off for a call, so one loaded model answers both as the
trained model and as its baseline (and as the judge, when the judge is the
base model), without loading the weights twice.
"""

from __future__ import annotations

import contextlib

from cai.engines.base import Completion, Conversation, EngineInfo, SamplingParams
from cai.engines.transformers import TransformersEngine
from cai.errors import CaiError


class AdapterTransformersEngine(TransformersEngine):
    """TransformersEngine + a PEFT adapter; set `adapter_enabled = False` to run the bare base model."""

    name = "transformers+adapter"

    def __init__(self, model_path, adapter_dir, **options):
        super().__init__(model_path, **options)
        self.adapter_dir = str(adapter_dir)
        self.adapter_enabled = True

    def load(self) -> None:
        super().load()
        try:
            from peft import PeftModel
        except ImportError as exc:
            raise CaiError("--adapter needs the peft package: pip install peft") from exc
        try:
            self.model = PeftModel.from_pretrained(self.model, self.adapter_dir, is_trainable=False).eval()
        except (ValueError, KeyError, OSError, RuntimeError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise CaiError(f"{self.adapter_dir}: cannot load the adapter on {self.model_path}: {first[:300]}") from exc

    @contextlib.contextmanager
    def adapter(self, enabled: bool):
        """Run the calls inside with the adapter on or off."""
        previous, self.adapter_enabled = self.adapter_enabled, enabled
        try:
            yield self
        finally:
            self.adapter_enabled = previous

    def _scope(self):
        if self.model is not None and not self.adapter_enabled:
            return self.model.disable_adapter()
        return contextlib.nullcontext()

    def generate(self, conversations: list[Conversation], params: SamplingParams) -> list[Completion]:
        if self.model is None:
            self.load()
        with self._scope():
            return super().generate(conversations, params)

    def label_logprobs(self, conversations: list[Conversation], labels: list[str]) -> list[list[float]]:
        if self.model is None:
            self.load()
        with self._scope():
            return super().label_logprobs(conversations, labels)

    def _eos_ids(self) -> list[int]:
        config = getattr(self.model, "generation_config", None) or self.model.get_base_model().generation_config
        ids = config.eos_token_id
        ids = list(ids) if isinstance(ids, (list, tuple)) else [ids]
        ids.append(self.tokenizer.eos_token_id)
        return sorted({i for i in ids if i is not None})

    def info(self) -> EngineInfo:
        info = super().info()
        info.extra["adapter"] = self.adapter_dir
        return info


class BaseView:
    """An engine-like view of an AdapterTransformersEngine with its adapter off (for baseline or judge)."""

    name = "transformers"

    def __init__(self, engine: AdapterTransformersEngine):
        self.engine = engine
        self.model_path = engine.model_path

    def load(self) -> None:
        if self.engine.model is None:
            self.engine.load()

    def generate(self, conversations, params):
        with self.engine.adapter(False):
            return self.engine.generate(conversations, params)

    def label_logprobs(self, conversations, labels):
        with self.engine.adapter(False):
            return self.engine.label_logprobs(conversations, labels)

    def close(self) -> None:
        """The underlying engine is closed by its owner."""
