"""Which model judges, and on which engine: one record for every judge in cai.

The same three settings reach every judge, spelled the same way: `--judge-engine`,
`--judge-base-url` and `--judge-model` on `cai data pairs`, `cai generate`, `cai eval`
and `cai monitor`; `engine`, `base_url` and `model` in a recipe's `{type: judge}`
reward. The API key of a judge server comes from the environment: CAI_JUDGE_API_KEY,
else OPENAI_API_KEY (so generation and judging can use two servers with two keys).

Each job has its own default judge (the run's model and engine, the baseline,
the policy): `JudgeSpec.resolve` fills what the user left out from it.
Light on purpose (no torch): the CLI reads this to build its options.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from cai.config import one_of, setting
from cai.engines.registry import ENGINES
from cai.errors import CaiError, SettingError

API_KEY_ENV = "CAI_JUDGE_API_KEY"
SERVER = "openai"


@dataclass(frozen=True)
class JudgeSpec:
    """A judge: `engine` (transformers, vllm or openai), the server's `base_url` (openai; a comma list for many)
    and `model` (a local folder, .gguf or name for the local engines; the served model's name for a server).
    None leaves a setting to the job's default judge."""

    engine: str | None = None
    base_url: str | None = None
    model: str | None = None

    def check(self) -> None:
        """What can be checked without the job's default: SettingError naming `engine`, `base_url` or `model`."""
        one_of("engine", self.engine, ENGINES, "engine")
        if self.base_url is not None and self.engine not in (None, SERVER):
            raise SettingError("base_url", f"a server's URL applies only to the {SERVER} engine, not {self.engine}")
        if self.base_url is not None:                  # one server, or a comma list of servers to balance over
            from cai.engines.server_pool import parse_base_urls

            try:
                parse_base_urls(self.base_url)
            except CaiError as err:
                raise SettingError("base_url", str(err)) from None

    def resolve(self, default: JudgeSpec) -> JudgeSpec:
        """Every setting filled: the given ones, the rest from `default` (the job's own judge) where they fit.

        A base URL means a server; a model alone is loaded locally (with the default's engine unless that is
        a server); a server judge on the default's server takes its model too.
        """
        self.check()
        engine = self.engine or (SERVER if self.base_url else None)
        if engine is None and self.model is None:
            return default
        if engine is None:
            engine = default.engine if default.engine not in (None, SERVER) else "transformers"
        if engine != SERVER:
            if self.model is None and default.engine == SERVER:
                raise SettingError("model", f"the default judge is a server's model ({default.model}); give a "
                                            "local judge model (a folder or .gguf) or a server's URL")
            return JudgeSpec(engine, None, self.model if self.model is not None else default.model)
        on_default = default.engine == SERVER and self.base_url in (None, default.base_url)
        base_url = self.base_url or (default.base_url if on_default else None)
        if not base_url:
            raise SettingError("base_url", "needed with a judge server: its URL, e.g. http://127.0.0.1:8000/v1")
        model = self.model or (default.model if on_default else None)
        if not model:
            raise SettingError("model", f"needed with a judge server: the name {base_url} serves the model under "
                                        "(its /v1/models lists them)")
        return JudgeSpec(SERVER, base_url, model)

    def describe(self) -> str:
        where = f" at {self.base_url}" if self.base_url else ""
        return f"{self.model or 'the default model'} ({self.engine}{where})"


def api_key() -> str | None:
    """The judge server's key: CAI_JUDGE_API_KEY, else None (the engine then reads OPENAI_API_KEY)."""
    return os.environ.get(API_KEY_ENV) or None


@dataclass(kw_only=True)
class JudgeSettings:
    """The judge flags every job that judges takes (a mixin of its settings class)."""

    judge_engine: str | None = setting(None, "Engine of the AI-feedback judge: transformers, vllm or openai (a "
                                             "server; its key from CAI_JUDGE_API_KEY, else OPENAI_API_KEY).")
    judge_base_url: str | None = setting(None, "The judge server's URL, e.g. http://127.0.0.1:8000/v1, or a comma "
                                               "list of servers of the same model to balance over (implies "
                                               "--judge-engine openai).")
    judge_model: str | None = setting(None, "Judge model: a local folder or .gguf, or the name a judge server "
                                            "serves it under (default: the run's model in `cai data pairs`, the "
                                            "baseline in `cai eval`).")

    def __post_init__(self) -> None:
        try:
            self.judge_spec.check()
        except SettingError as err:
            raise SettingError(f"judge_{err.field}", err.message) from None

    @property
    def judge_spec(self) -> JudgeSpec:
        """The flags as a JudgeSpec (what they leave out still None)."""
        return JudgeSpec(self.judge_engine, self.judge_base_url, self.judge_model)

    @property
    def judge_named(self) -> bool:
        """Whether any judge flag was given (`cai monitor` judges only then)."""
        return any(v is not None for v in (self.judge_engine, self.judge_base_url, self.judge_model))

    def resolve_judge(self, default: JudgeSpec) -> JudgeSpec:
        """The judge these flags name, with `default` (the job's own judge) for what they leave out."""
        try:
            return self.judge_spec.resolve(default)
        except SettingError as err:
            raise SettingError(f"judge_{err.field}", err.message) from None
