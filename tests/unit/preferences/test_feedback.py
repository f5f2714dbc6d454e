"""AI feedback on a scripted judge: both option orders cancel position bias; principles are drawn per key."""

from __future__ import annotations

import math
import re

import pytest
from support import REPO
from support.engines import FakeEngine

from cai.constitution import load_constitution
from cai.generation.templates import Templates
from cai.judging.labels import compare, preference_labels
from cai.preferences.feedback import pair_preferences

HHH = load_constitution(REPO / "constitution" / "hhh.yaml")
PRINCIPLE = HHH.principles[0]


def _options(chat, labels):
    text = chat[-1]["content"]
    return [re.search(rf"\({label}\)[^\n]*?:? (.*?)(?:\n\n|\n\(|$)", text, re.S).group(1) for label in labels]


def prefers_a(chat, labels):
    return [0.0, -3.0]


def prefers_longer(chat, labels):
    a, b = _options(chat, labels)
    return [math.log(len(a)), math.log(len(b))]


def test_a_judge_that_always_picks_the_first_option_gives_no_preference():
    engine = FakeEngine(judge=prefers_a)
    [label] = compare(engine, Templates(), [("Q?", "short", "a much longer reply", PRINCIPLE)])
    assert label["label"] == pytest.approx(0.5)
    assert label["position_gap"] > 0.9


def test_a_judge_with_a_real_preference_keeps_it_in_both_orders():
    engine = FakeEngine(judge=prefers_longer)
    items = [("Q?", "a much longer and more careful reply", "short", PRINCIPLE)]
    [x_over_y] = compare(engine, Templates(), items)
    [y_over_x] = compare(engine, Templates(), [(q, y, x, p) for q, x, y, p in items])
    assert x_over_y["label"] > 0.75
    assert x_over_y["label"] + y_over_x["label"] == pytest.approx(1.0)
    assert len(engine.calls[0]) == 2              # one conversation per option order


def test_each_item_is_judged_under_its_drawn_principle_and_the_draw_is_stable():
    engine = FakeEngine(judge=prefers_longer)
    items = [(f"Question {i}?", "a longer answer here", "short") for i in range(8)]
    first = preference_labels(engine, Templates(), HHH, items, seed=3, keys=[f"k{i}" for i in range(8)])
    again = preference_labels(engine, Templates(), HHH, items, seed=3, keys=[f"k{i}" for i in range(8)])
    assert [f["principle_id"] for f in first] == [a["principle_id"] for a in again]
    assert len({f["principle_id"] for f in first}) > 1
    by_id = {p.id: p for p in HHH.principles}
    for judged, chat in zip(first, engine.calls[0][::2]):
        assert by_id[judged["principle_id"]].critique in chat[-1]["content"]


def test_pair_preferences_average_over_the_pairs_own_principles():
    engine = FakeEngine(judge=prefers_longer)
    ids = [p.id for p in HHH.principles[:2]]

    def row(chosen, rejected, principle_ids):
        return {"prompt": [{"role": "user", "content": "Q?"}], "chosen": [{"role": "assistant", "content": chosen}],
                "rejected": [{"role": "assistant", "content": rejected}], "principle_ids": principle_ids}

    (longer, _), unknown = pair_preferences(engine, Templates(), HHH, [
        row("a longer and better answer", "short", ids), row("x", "y", ["not-in-the-constitution"])])
    assert longer > 0.7 and unknown == (None, None)
    assert len(engine.calls[0]) == 4                # two principles x two orders, one batched call
