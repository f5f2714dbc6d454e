"""`embedding`: how close a response stays to its prompt, as the cosine of mean-pooled embeddings.

The off-topic quality rule uses a cheap word-overlap measure by default; this
scorer is the optional, paraphrase-aware alternative (`off_topic: {scorer:
embedding}` in the rules YAML). Any local transformers model works: a sentence
encoder (e.g. a saved all-MiniLM-L6-v2 folder) is best; the default is the
embedded chat model, which ships with cai and needs no download.
"""

from __future__ import annotations

from cai.safety.base import Scorer


class EmbeddingScorer(Scorer):
    """Column: `similarity` (cosine between the text and `prompt`, or between the two texts of a pair)."""

    name = "embedding"
    columns = ("similarity",)
    default_batch_size = 16

    def __init__(self, model: str | None = None, prompt: str = "", max_length: int = 512):
        self.model_name = model
        self.prompt = prompt
        self.max_length = max_length
        self._model = None
        self._tokenizer = None

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> None:
        from transformers import AutoModel, AutoTokenizer

        from cai.models import resolve_model

        path = resolve_model(self.model_name).path
        self._tokenizer = AutoTokenizer.from_pretrained(path)
        if self._tokenizer.pad_token is None:
            self._tokenizer.pad_token = self._tokenizer.eos_token
        self._model = AutoModel.from_pretrained(path).eval()

    def embed(self, texts: list[str]):
        """Unit-length mean-pooled last hidden states, one row per text."""
        import torch

        if not self.loaded:
            self.load()
        batch = self._tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                                return_tensors="pt")
        with torch.inference_mode():
            hidden = self._model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
        return torch.nn.functional.normalize(pooled, dim=-1)

    def score_pairs(self, items: list[tuple[str, str]]) -> list[dict[str, float]]:
        """Cosine similarity of each (a, b) pair of texts."""
        out: list[dict[str, float]] = []
        for start in range(0, len(items), self.default_batch_size):
            chunk = items[start:start + self.default_batch_size]
            a = self.embed([x for x, _ in chunk])
            b = self.embed([y for _, y in chunk])
            out += [{"similarity": float(v)} for v in (a * b).sum(-1)]
        return out

    def _score_batch(self, texts: list[str]) -> list[dict[str, float]]:
        return self.score_pairs([(self.prompt, t) for t in texts])

    def close(self) -> None:
        self._model = None
        self._tokenizer = None


def add_prompt_similarity(rows: list[dict], options: dict) -> None:
    """Add `chosen_prompt_similarity` and `rejected_prompt_similarity` to each pair row."""
    from cai.safety.registry import create_scorer

    if not rows:
        return
    scorer = create_scorer("embedding", **options)
    scorer.load()
    try:
        for side in ("chosen", "rejected"):
            scores = scorer.score_pairs([(r["prompt"][-1]["content"], r[side][-1]["content"]) for r in rows])
            for row, s in zip(rows, scores):
                row[f"{side}_prompt_similarity"] = s["similarity"]
    finally:
        scorer.close()
