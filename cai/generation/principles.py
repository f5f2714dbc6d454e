"""Which principle critiques which round: a pure, reproducible draw per prompt.

The random stream is derived from sha256(seed, key) rather than Python's
`hash()` (salted per process) or a shared RNG (order-dependent), so each
prompt gets its own draw, and a rerun or a resumed run draws the same
principles for the same prompt no matter how prompts are batched.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any, Iterable, Literal

from cai.errors import CaiError

Strategy = Literal["uniform", "weighted"]


def rng_for(seed: int, key: str = "") -> random.Random:
    """A `random.Random` that depends only on (seed, key), stable across processes and Python versions."""
    digest = hashlib.sha256(f"{seed}\x00{key}".encode("utf-8")).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def sample_principles(
    principles: Iterable[Any],
    rounds: int,
    *,
    seed: int,
    strategy: Strategy = "uniform",
    no_repeat: bool = True,
    key: str = "",
) -> list[str]:
    """One enabled principle id per round for the prompt `key`.

    `principles` are objects with `id`, `weight` and `enabled` (the
    constitution's `Principle`). With `no_repeat`, a prompt sees each principle
    at most once until all have been used; the pool then refills (never with
    the principle just drawn, when there is a choice).
    """
    if strategy not in ("uniform", "weighted"):
        raise CaiError(f"unknown sampling strategy {strategy!r}; use 'uniform' or 'weighted'")
    if rounds < 1:
        raise CaiError(f"rounds must be at least 1, got {rounds}")
    enabled = [p for p in principles if p.enabled]
    if not enabled:
        raise CaiError("no enabled principle to sample from")
    rng = rng_for(seed, key)
    pool: list[Any] = []
    drawn: list[str] = []
    for _ in range(rounds):
        if not no_repeat:
            pool = enabled
        elif not pool:
            pool = [p for p in enabled if not drawn or p.id != drawn[-1]] or list(enabled)
        pick = _pick(rng, pool, strategy)
        if no_repeat:
            pool = [p for p in pool if p is not pick]
        drawn.append(pick.id)
    return drawn


def _pick(rng: random.Random, pool: list[Any], strategy: Strategy) -> Any:
    if strategy == "weighted":
        return rng.choices(pool, weights=[p.weight for p in pool])[0]
    return pool[rng.randrange(len(pool))]


def sample_for(constitution: Any, *, seed: int, key: str, rounds: int | None = None) -> list[str]:
    """`sample_principles` with the constitution's own `sampling:` settings (and its rounds unless given)."""
    s = constitution.sampling
    return sample_principles(
        constitution.principles, s.rounds if rounds is None else rounds, seed=seed, strategy=s.strategy,
        no_repeat=s.no_repeat, key=key,
    )


def principle_plan(constitution: Any, rounds: int, *, seed: int, prompt_id: str) -> list[Any]:
    """The principle of each round for the prompt `prompt_id`.

    `cai generate` critiques with these and `cai constitution render` shows them: one
    function, so the two always agree for the same prompt id, seed and rounds.
    """
    if rounds < 1:
        return []
    by_id = {p.id: p for p in constitution.principles}
    return [by_id[pid] for pid in sample_for(constitution, seed=seed, key=prompt_id, rounds=rounds)]
