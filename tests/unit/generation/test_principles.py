"""Principle sampling: reproducible per prompt, and the right distribution over many prompts."""

import os
import subprocess
import sys
from collections import Counter

import pytest

from cai.constitution import Principle, load_constitution
from cai.errors import CaiError
from cai.generation.principles import sample_for, sample_principles
from cai.paths import shipped_dir

# Chi-square critical value for 3 degrees of freedom at p = 0.001. The draws are
# seeded, so these tests cannot flake; the bound only says "close to expected".
CHI2_DF3 = 16.27


def principle(pid: str, weight: float = 1.0, enabled: bool = True) -> Principle:
    return Principle(id=pid, critique="Critique?", revision="Revise.", weight=weight, enabled=enabled)


FOUR = [principle("a"), principle("b"), principle("c"), principle("d")]


def chi_square(counts: Counter, expected: dict[str, float]) -> float:
    return sum((counts[k] - e) ** 2 / e for k, e in expected.items())


def first_draws(principles, n: int, **kwargs) -> Counter:
    return Counter(sample_principles(principles, 1, seed=7, key=f"prompt-{i}", **kwargs)[0] for i in range(n))


def test_same_seed_and_key_give_the_same_draw():
    once = sample_principles(FOUR, 3, seed=1, key="p-17")
    assert sample_principles(FOUR, 3, seed=1, key="p-17") == once
    assert len(once) == 3


def test_draw_does_not_depend_on_python_hash_randomization():
    code = (
        "from types import SimpleNamespace as P; from cai.generation.principles import sample_principles;"
        "four = [P(id=i, weight=1.0, enabled=True) for i in 'abcd'];"
        "print(sample_principles(four, 3, seed=5, key='p-1', strategy='weighted'))"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("1", "2")
    }
    assert outputs == {str(sample_principles(FOUR, 3, seed=5, key="p-1", strategy="weighted")) + "\n"}


def test_different_keys_and_seeds_get_different_draws():
    by_key = {tuple(sample_principles(FOUR, 2, seed=1, key=f"k{i}")) for i in range(50)}
    assert len(by_key) >= 8  # 12 ordered pairs are possible
    by_seed = {tuple(sample_principles(FOUR, 2, seed=s, key="same")) for s in range(50)}
    assert len(by_seed) >= 8


def test_uniform_is_close_to_uniform():
    n = 4000
    counts = first_draws(FOUR, n)
    assert chi_square(counts, {p.id: n / 4 for p in FOUR}) < CHI2_DF3


def test_weighted_follows_the_weights_and_never_draws_disabled():
    principles = [principle("a", 1), principle("b", 2), principle("c", 3), principle("d", 4),
                  principle("off", 100, enabled=False)]
    n = 5000
    counts = first_draws(principles, n, strategy="weighted")
    assert counts["off"] == 0
    assert chi_square(counts, {p.id: n * p.weight / 10 for p in principles if p.enabled}) < CHI2_DF3
    assert counts["d"] > counts["a"] * 2.5  # weight 4 against weight 1


def test_disabled_is_never_drawn_in_any_round():
    principles = FOUR + [principle("off", enabled=False)]
    for i in range(300):
        for strategy in ("uniform", "weighted"):
            draw = sample_principles(principles, 6, seed=3, key=str(i), strategy=strategy, no_repeat=False)
            assert "off" not in draw


@pytest.mark.parametrize("strategy", ["uniform", "weighted"])
def test_no_repeat_within_one_prompt(strategy):
    for i in range(300):
        draw = sample_principles(FOUR, 4, seed=2, key=str(i), strategy=strategy)
        assert sorted(draw) == ["a", "b", "c", "d"]


def test_more_rounds_than_principles_refills_the_pool_without_back_to_back_repeats():
    for i in range(300):
        draw = sample_principles(FOUR, 10, seed=2, key=str(i))
        assert len(set(draw[:4])) == 4
        assert all(x != y for x, y in zip(draw, draw[1:]))
    assert sample_principles([principle("only")], 3, seed=0) == ["only", "only", "only"]


def test_with_replacement_when_no_repeat_is_off():
    draws = [sample_principles(FOUR[:3], 3, seed=4, key=str(i), no_repeat=False) for i in range(200)]
    assert any(len(set(d)) < 3 for d in draws)


def test_uniform_rounds_are_uniform_in_later_rounds_too():
    n = 4000
    counts = Counter(sample_principles(FOUR, 2, seed=9, key=str(i))[1] for i in range(n))
    assert chi_square(counts, {p.id: n / 4 for p in FOUR}) < CHI2_DF3


@pytest.mark.parametrize(
    "principles, rounds, strategy, message",
    [
        ([principle("a", enabled=False)], 2, "uniform", "no enabled principle"),
        (FOUR, 0, "uniform", "rounds must be at least 1"),
        (FOUR, 2, "random", "unknown sampling strategy"),
    ],
)
def test_bad_arguments_are_one_line_errors(principles, rounds, strategy, message):
    with pytest.raises(CaiError, match=message):
        sample_principles(principles, rounds, seed=0, strategy=strategy)


def test_sample_for_uses_the_constitution_settings():
    c = load_constitution(shipped_dir("constitution") / "hhh.yaml")
    draw = sample_for(c, seed=0, key="p-1")
    assert len(draw) == c.sampling.rounds == 2
    assert len(set(draw)) == 2
    assert set(draw) <= {p.id for p in c.principles if p.enabled}
