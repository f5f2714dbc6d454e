"""Engines by name, imported only when chosen, so vllm stays optional."""

from __future__ import annotations

import importlib
import importlib.util

from cai.engines.base import Engine
from cai.errors import CaiError

ENGINES = {
    "transformers": "cai.engines.transformers:TransformersEngine",
    "vllm": "cai.engines.vllm:VLLMEngine",
    "openai": "cai.engines.openai_server:OpenAIEngine",
}

# Optional packages an engine needs, and how to get them.
_REQUIRES = {"vllm": ("vllm", "pip install -e '.[vllm]'")}


def create_engine(name: str, model_ref_or_path, **options) -> Engine:
    """Build (not load) the engine `name` for a ModelRef or a model path/id."""
    target = ENGINES.get(name)
    if target is None:
        raise CaiError(f"unknown engine {name!r}; choose one of: {', '.join(ENGINES)}")
    if name in _REQUIRES:
        package, hint = _REQUIRES[name]
        if not _installed(package):
            raise CaiError(f"engine {name} needs the {package} package: {hint}")
    module_name, class_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise CaiError(f"engine {name} is not available in this version of cai") from exc
        hint = _REQUIRES.get(name, (None, f"pip install {exc.name}"))[1]
        raise CaiError(f"engine {name} needs the {exc.name} package: {hint}") from exc
    path = getattr(model_ref_or_path, "path", model_ref_or_path)
    return getattr(module, class_name)(str(path), **options)


def _installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None
