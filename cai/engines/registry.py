"""Engines by name, imported only when chosen, so vllm stays optional."""

from __future__ import annotations

import importlib.util

from cai.engines.base import Engine
from cai.errors import CaiError
from cai.plugins import load_class

ENGINES = {
    "transformers": "cai.engines.transformers:TransformersEngine",
    "vllm": "cai.engines.vllm:VLLMEngine",
    "openai": "cai.engines.openai_server:OpenAIEngine",
}

# Optional packages an engine needs, and how to get them.
_REQUIRES = {"vllm": ("vllm", "pip install -e '.[vllm]'")}


def engine_class(name: str) -> type[Engine]:
    """The class registered as `name`, imported on demand; unknown or missing its package: one CaiError line."""
    if name in _REQUIRES:
        package, hint = _REQUIRES[name]
        if not _installed(package):
            raise CaiError(f"engine {name} needs the {package} package: {hint}")
    return load_class("engine", name, ENGINES, _REQUIRES.get(name, (None, None))[1])


def create_engine(name: str, model_ref_or_path, **options) -> Engine:
    """Build (not load) the engine `name` for a ModelRef or a model path/id."""
    cls = engine_class(name)
    path = getattr(model_ref_or_path, "path", model_ref_or_path)
    return cls(str(path), **options)


def _installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None
