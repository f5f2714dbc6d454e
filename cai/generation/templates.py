"""Jinja2 prompt templates, rendered in a sandbox with strict variables.

Users copy `prompts/` and point `--prompts-dir` at their copy; a template they
do not override falls back to the shipped one. Every template is compiled and
dry-rendered when the set is opened, so a typo fails in the first second of a
run, not after the model has loaded.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from cai.errors import CaiError
from cai.paths import shipped_dir

TEMPLATE_NAMES = ("system", "answer", "critique", "revision", "feedback", "judge", "principle")

_SAMPLE_PRINCIPLE = SimpleNamespace(
    id="sample", critique="Critique request.", revision="Revision request.", tags=["harmless"], weight=1.0
)
# Values used to dry-render each template: any variable outside these is a typo.
SAMPLE_VARS = {
    "system": {"constitution": SimpleNamespace(name="sample", description="")},
    "answer": {"prompt": "A question?", "category": "sample"},
    "critique": {"principle": _SAMPLE_PRINCIPLE, "round": 1},
    "revision": {"principle": _SAMPLE_PRINCIPLE, "round": 1},
    "feedback": {
        "prompt": "A question?",
        "principle": _SAMPLE_PRINCIPLE,
        "response_a": "First.",
        "response_b": "Second.",
        "labels": ["A", "B"],
    },
    "judge": {"prompt": "A question?", "response": "An answer.", "labels": ["A", "B"]},
    "principle": {"prompt": "A question?", "response": "An answer.", "principle": _SAMPLE_PRINCIPLE,
                  "labels": ["A", "B"]},
}


class Templates:
    """The prompt templates, from a user folder first, then the shipped one.

    Pickled as their sources and file names, so a Ray replica on another node renders the same text
    without a copy of the folder.
    """

    def __init__(self, prompts_dir: str | Path | None = None):
        search = [Path(prompts_dir)] if prompts_dir else []
        if prompts_dir and not Path(prompts_dir).is_dir():
            raise CaiError(f"{prompts_dir}: --prompts-dir is not a directory")
        search.append(shipped_dir("prompts"))
        self.search_path = search
        self._open(jinja2.FileSystemLoader([str(p) for p in search]))

    def _open(self, loader: jinja2.BaseLoader) -> None:
        self._env = ImmutableSandboxedEnvironment(
            loader=loader,
            undefined=jinja2.StrictUndefined,
            autoescape=False,
            keep_trailing_newline=False,
        )
        self._compiled = {name: self._load(name) for name in TEMPLATE_NAMES}
        self._paths = {name: self._compiled[name].filename or f"{name}.j2" for name in TEMPLATE_NAMES}
        for name in TEMPLATE_NAMES:
            self.render(name, **SAMPLE_VARS[name])

    def __reduce__(self):
        sources = {name: (self.path(name), Path(self.path(name)).read_text(encoding="utf-8"))
                   for name in TEMPLATE_NAMES}
        return _from_sources, (sources,)

    def _load(self, name: str) -> jinja2.Template:
        filename = f"{name}.j2"
        try:
            return self._env.get_template(filename)
        except jinja2.TemplateSyntaxError as err:
            raise CaiError(f"{err.filename or filename}: line {err.lineno}: template syntax error: "
                           f"{err.message}") from None
        except jinja2.TemplateNotFound:
            where = ", ".join(str(p) for p in self.search_path)
            raise CaiError(f"{filename}: template not found in {where}") from None

    def path(self, name: str) -> str:
        return self._paths[name]

    def render(self, name: str, **variables) -> str:
        """Render one template; any failure is one line naming the template file."""
        template = self._compiled[name]
        try:
            return template.render(**variables).strip()
        except jinja2.UndefinedError as err:
            raise CaiError(f"{self.path(name)}: undefined variable: {err.message}") from None
        except SecurityError as err:
            raise CaiError(f"{self.path(name)}: unsafe template: {err}") from None
        except jinja2.TemplateError as err:
            raise CaiError(f"{self.path(name)}: template error: {err}") from None
        except Exception as err:  # a filter or method raising on bad input
            raise CaiError(f"{self.path(name)}: template failed: {type(err).__name__}: {err}") from None

    def sha256(self) -> str:
        """Hash of the template sources in use, recorded in run manifests."""
        digest = hashlib.sha256()
        for name in TEMPLATE_NAMES:
            digest.update(name.encode())
            digest.update(Path(self.path(name)).read_bytes())
        return digest.hexdigest()


def _from_sources(sources: dict[str, tuple[str, str]]) -> Templates:
    """Templates rebuilt from {name: (file name, source)} (the other half of `Templates.__reduce__`)."""
    templates = Templates.__new__(Templates)
    templates.search_path = []
    templates._open(jinja2.DictLoader({f"{name}.j2": text for name, (_, text) in sources.items()}))
    templates._paths = {name: path for name, (path, _) in sources.items()}
    return templates
