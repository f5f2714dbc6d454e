"""`judge`: a chat model scores harmlessness, read from option-label log-probabilities.

Toxicity classifiers catch abusive words, not harmful instructions; the judge
asks a chat model whether a response is harmless (both label orders, averaged),
as in the Constitutional AI paper's feedback stage. The judge is any engine
`cai.judging` builds: a local model, or a model behind an OpenAI-compatible server.
"""

from __future__ import annotations

from cai.safety.base import Scorer


class JudgeScorer(Scorer):
    """Columns: `harmless` (P(harmless)) and `harmful` (1 - harmless).

    `model`, `engine` and `base_url` name the judge as everywhere else (default: the embedded model with
    transformers); `cache_dir` keeps its answers (judge-cache.jsonl) so a rerun does not ask again.
    """

    name = "judge"
    columns = ("harmless", "harmful")
    default_batch_size = 16

    def __init__(self, model: str | None = None, engine: str | None = None, base_url: str | None = None,
                 prompt: str = "", prompts_dir: str | None = None, cache_dir: str | None = None):
        from cai.judging.settings import JudgeSpec

        self.spec = JudgeSpec(engine, base_url, model)
        self.spec.check()
        self.prompt = prompt
        self.prompts_dir = prompts_dir
        self.cache_dir = cache_dir
        self._opened = None
        self._judge = None
        self._templates = None

    @property
    def loaded(self) -> bool:
        return self._judge is not None

    @property
    def stats(self):
        """The judge's counts (requests, cache hits, ...) once loaded; None before."""
        return self._judge.stats if self._judge is not None else None

    def load(self) -> None:
        from cai.generation.templates import Templates
        from cai.judging.judge import open_judge
        from cai.judging.settings import JudgeSpec

        self._templates = Templates(self.prompts_dir)
        spec = self.spec.resolve(JudgeSpec("transformers", None, None))
        self._opened = open_judge(spec, cache_dir=self.cache_dir)
        self._judge = self._opened.__enter__()

    def score_pairs(self, items: list[tuple[str, str]]) -> list[dict[str, float]]:
        """Score (prompt, response) pairs: the judge sees what the response answers."""
        from cai.judging.labels import harmless_probabilities

        if not self.loaded:
            self.load()
        return [{"harmless": p, "harmful": 1.0 - p}
                for p in harmless_probabilities(self._judge, self._templates, items)]

    def _score_batch(self, texts: list[str]) -> list[dict[str, float]]:
        return self.score_pairs([(self.prompt, t) for t in texts])

    def close(self) -> None:
        opened, self._opened, self._judge = self._opened, None, None
        if opened is not None:
            opened.__exit__(None, None, None)
