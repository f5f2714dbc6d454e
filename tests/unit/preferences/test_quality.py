"""The quality rules on short hand-written texts: each catches its failure and spares the look-alike that is fine."""

from __future__ import annotations

import random

import pytest

from cai.constitution import load_constitution
from cai.generation.templates import Templates
from cai.preferences.quality import (
    CopySources,
    OffTopicRule,
    QualityRules,
    RepetitionLoopRule,
    echo_share,
    flags,
    load_quality_rules,
    loop_evidence,
    meta_comment,
    off_topic,
    words,
)

HHH = load_constitution("constitution/hhh.yaml")


@pytest.fixture(scope="module")
def sources():
    return CopySources.from_constitution(HHH, Templates())


def pair(prompt, chosen, rejected, critique=""):
    return {"prompt": [{"role": "user", "content": prompt}], "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}], "critiques": [critique]}


# ----------------------------------------------------------------------------- few-shot copy

NEIGHBOUR = "How can I hurt my neighbor without leaving any marks?"
# The few-shot revision of hhh.yaml's first dialogue, as the embedded model copied it into a demo pair.
COPIED = ("I can't help you get onto your neighbour's network without their permission; that is unauthorized "
          "access. You could simply ask them whether they would share it.")
# Legitimate answers that share everyday phrases with the few-shot turns and principle texts.
LEGIT = [
    "I can't help you hurt anyone. If you are angry with your neighbour, talking to them or asking a mediator "
    "can help, and if you feel unsafe, call the police.",
    "Cook the pasta in plenty of salted water that is already boiling, then drain it and keep a cup of the water.",
    "I'm sorry, but I can't help with that. If you are in danger, please contact your local emergency number.",
    "To stop a process on Linux, find its id with ps and send it a signal with kill; unsaved work may be lost.",
]


def test_a_copied_few_shot_revision_is_caught_with_its_source(sources):
    copy = sources.longest_copy(COPIED, NEIGHBOUR)
    assert copy is not None
    span, source = copy
    assert span.startswith("i cant help you get onto your neighbours network") and source.startswith("few-shot 1")
    assert flags(pair(NEIGHBOUR, COPIED, "Hit them with a pillow."), QualityRules(), sources)[0].rule == "few-shot copy"


@pytest.mark.parametrize("text", LEGIT)
def test_a_legitimate_answer_sharing_common_phrases_is_not_a_copy(sources, text):
    # Each shares short phrases ("I can't help you", "that is already boiling", "unsaved ... may be lost")
    # with a few-shot turn, but no run of 8 words.
    assert sources.longest_copy(text, "Any question?") is None


def test_the_measure_is_a_run_of_words_so_the_threshold_separates_phrase_from_copy(sources):
    """Why 8 words: the longest run a legitimate answer shares is a common phrase; a copy shares a sentence."""
    legit_runs = [_longest_shared_run(text, sources) for text in LEGIT]
    assert max(legit_runs) < sources.min_words <= _longest_shared_run(COPIED, sources)
    assert max(legit_runs) >= 4          # the legit texts do share phrases: the rule is not trivially quiet


def _longest_shared_run(text: str, sources: CopySources) -> int:
    for n in range(len(words(text)), 0, -1):
        if CopySources(_source_texts(), n).longest_copy(text) is not None:
            return n
    return 0


def _source_texts() -> dict[str, str]:
    texts = {f"{d}.{t}": m.content for d, dialogue in enumerate(HHH.few_shot) for t, m in enumerate(dialogue)}
    texts.update({p.id: f"{p.critique} {p.revision}" for p in HHH.principles})
    return texts


@pytest.mark.parametrize("offset", range(9))
@pytest.mark.parametrize("length", [8, 9, 11, 12])
def test_a_copy_is_found_wherever_it_starts_and_however_long(sources, offset, length):
    """The stride probe must never skip a shared run of min_words or more."""
    copied = " ".join(words(COPIED)[:length])
    filler = "porridge oats simmer slowly while the kettle whistles on a grey morning".split()
    text = " ".join(filler[:offset]) + " " + copied + " and then the sun came out over the hills"
    span, _ = sources.longest_copy(text)
    assert span == copied
    shorter = " ".join(filler[:offset]) + " " + " ".join(words(COPIED)[:7]) + " and then the sun came out"
    assert sources.longest_copy(shorter) is None


def test_a_copied_principle_request_is_caught(sources):
    text = "Rewrite the answer so it gives no help with hurting anyone and does not glorify violence."
    span, source = sources.longest_copy(text)
    assert source.startswith("principle violence")


def test_words_the_prompt_itself_holds_are_not_a_copy(sources):
    prompt = "How long should I boil an egg if I want the yolk soft but not runny?"
    answer = "How long should I boil an egg if I want the yolk soft but not runny? About six and a half minutes."
    assert sources.longest_copy(answer, prompt) is None
    assert sources.longest_copy(answer, "") is not None


def test_rejected_copies_count_too(sources):
    found = flags(pair(NEIGHBOUR, "I won't help you hurt anyone.", COPIED), QualityRules(), sources)
    assert [(f.rule, f.field) for f in found] == [("few-shot copy", "rejected")]


# ----------------------------------------------------------------------------- critique echo

CRITIQUE = ("The answer explains how to hurt someone without leaving marks, which could cause real harm to the "
            "neighbour and is illegal assault.")


def test_a_revision_that_repeats_the_critique_is_an_echo():
    echo = "The answer explains how to hurt someone without leaving marks, which could cause real harm."
    assert echo_share(echo, CRITIQUE) > 0.8
    found = flags(pair(NEIGHBOUR, echo, "Use a pillow.", CRITIQUE), QualityRules())
    assert "critique echo" in {f.rule for f in found}


def test_a_revision_that_acts_on_the_critique_is_not_an_echo():
    revision = "I won't help you hurt your neighbour. If there is a dispute, a mediator or the police can help."
    assert echo_share(revision, CRITIQUE) < 0.2
    assert not flags(pair(NEIGHBOUR, revision, "Use a pillow so it leaves no marks."), QualityRules())


def test_phrases_the_critique_quotes_from_the_rejected_answer_do_not_count():
    rejected = "Wrap your fist in a towel and hit them in the stomach."
    critique = "It says 'wrap your fist in a towel and hit them in the stomach', which is assault."
    chosen = "Do not wrap your fist in a towel and hit them in the stomach; walk away and talk later."
    assert echo_share(chosen, critique, rejected) == 0


# ----------------------------------------------------------------------------- repetition loop

def test_a_phrase_loop_is_caught_even_when_short():
    assert loop_evidence("I'm sure you're right. I'm sure you're right. I'm sure you're right.",
                         RepetitionLoopRule())


def test_a_loop_without_words_is_caught_by_compression():
    assert "compresses" in loop_evidence("Ha" * 200, RepetitionLoopRule())
    assert "compresses" in loop_evidence("!!! " * 100, RepetitionLoopRule())
    rng = random.Random(0)
    random_symbols = "".join(rng.choice("!#$%&*+-/<=>?@^_|~0123456789") for _ in range(400))   # not words, no loop
    assert loop_evidence(random_symbols, RepetitionLoopRule()) is None


@pytest.mark.parametrize("text", [
    "Wrap the herbs in a damp paper towel, put them in a bag and keep them in the fridge for up to a week.",
    "Step 1: preheat the oven. Step 2: grease the tin. Step 3: mix the batter. Step 4: bake for 20 minutes.",
    LEGIT[0],
])
def test_ordinary_prose_and_lists_are_not_loops(text):
    assert loop_evidence(text, RepetitionLoopRule()) is None


def test_the_loop_rule_reads_both_responses():
    loop = "I'm sure you're right. " * 4
    found = flags(pair("How do I fix a flat tyre?", "Patch the tube or replace it.", loop), QualityRules())
    assert [(f.rule, f.field) for f in found] == [("repetition loop", "rejected")]


# ----------------------------------------------------------------------------- meta-comment

@pytest.mark.parametrize("text", [
    "The last answer is not helpful because it does not explain the risks.",
    "The response contains a hedge and should state the facts plainly.",
    "The assistant's answer encourages violence.",
    "The user asked how to hurt a neighbour, which is harmful.",
    "This revised version removes the harmful content.",
    "The answer is not helpful and is too vague.",          # weak pattern, and it never speaks to the user
])
def test_talking_about_the_answer_is_a_meta_comment(text):
    assert meta_comment(text)


@pytest.mark.parametrize("text", [
    "I'm sorry, but I can't answer your question about hurting someone. If you feel unsafe, call the police.",
    "I can't help with your request, but I can point you to a mediator.",
    "The answer is yes: you can freeze basil in olive oil in an ice-cube tray.",   # speaks to the user
    "Your first response to a burn should be cool running water for twenty minutes.",
    "Create the user with useradd and set a password with passwd.",
])
def test_answering_the_user_is_not_a_meta_comment(text):
    assert meta_comment(text) is None


# ----------------------------------------------------------------------------- off-topic

HERBS = "What's the best way to store fresh herbs like basil and parsley?"


def test_a_chosen_about_something_else_is_off_topic_when_the_rejected_was_on_it():
    chosen = "To speed up your connection, move the router to a central spot and switch to the 5 GHz band."
    rejected = "Keep basil in water on the counter and wrap parsley in a damp towel in the fridge."
    assert off_topic(HERBS, chosen, rejected, OffTopicRule())


def test_a_revision_that_quotes_one_phrase_of_the_prompt_is_not_off_topic():
    chosen = "Fresh herbs keep longest when you trim the stems and stand them in a glass of water."
    rejected = "Keep basil in water on the counter and wrap parsley in a damp towel in the fridge."
    assert off_topic(HERBS, chosen, rejected, OffTopicRule()) is None


def test_a_short_refusal_is_not_off_topic():
    rejected = "Punch your neighbor in the stomach; bruises there rarely leave marks."
    assert off_topic(NEIGHBOUR, "I'm sorry, but I can't help with that.", rejected, OffTopicRule()) is None
    long_refusal = ("I can't help with that. To speed up your connection, move the router to a central spot, "
                    "switch to the 5 GHz band, restart it and ask your provider whether a faster plan costs more.")
    assert off_topic(NEIGHBOUR, long_refusal, rejected, OffTopicRule())


def test_both_off_the_prompt_is_not_this_rule():
    assert off_topic(HERBS, "Move the router.", "Restart the modem.", OffTopicRule()) is None


def test_embedding_similarities_replace_the_word_overlap_when_given():
    chosen, rejected = "Keep them cool.", "Keep basil in water."
    assert off_topic(HERBS, chosen, rejected, OffTopicRule(max_similarity=0.5, min_gap=0.2), (0.3, 0.8))
    assert off_topic(HERBS, chosen, rejected, OffTopicRule(max_similarity=0.5, min_gap=0.2), (0.7, 0.8)) is None


# ----------------------------------------------------------------------------- settings

def test_rules_yaml_sets_thresholds_and_skip_turns_rules_off(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text("toxicity_max: 0.5\nquality:\n  few_shot_copy: {min_words: 12}\n  off_topic: {enabled: false}\n")
    rules = load_quality_rules(path, skip=["meta-comment"])
    assert rules.few_shot_copy.min_words == 12
    assert rules.enabled() == ["few-shot copy", "critique echo", "repetition loop"]
    text = "The last answer is not helpful."
    assert not flags(pair("Q?", text, "A."), rules)
    assert flags(pair("Q?", text, "A."), QualityRules())


@pytest.mark.parametrize("content,message", [
    ("quality:\n  few_shot_copy: {min_words: 2}\n", "quality.few_shot_copy.min_words"),
    ("quality:\n  critique_echoo: {}\n", "quality.critique_echoo"),
    ("quality: [1]\n", "quality: must be a mapping"),
])
def test_bad_quality_settings_name_the_file_and_key(tmp_path, content, message):
    path = tmp_path / "rules.yaml"
    path.write_text(content)
    with pytest.raises(Exception) as err:
        load_quality_rules(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_an_unknown_skip_rule_lists_the_names():
    with pytest.raises(Exception, match="few-shot-copy, critique-echo"):
        load_quality_rules(None, skip=["loops"])


@pytest.mark.parametrize("name,other", [("hhh", "harmless"), ("harmless", "hhh")])
def test_the_shipped_example_revisions_pass_every_rule(name, other):
    """Each few-shot dialogue is a good pair written by hand (question, answer, critique, revision):
    no rule may flag it. The copy rule reads the other constitution, since these are its own texts."""
    sources = CopySources.from_constitution(load_constitution(f"constitution/{other}.yaml"), Templates())
    dialogues = load_constitution(f"constitution/{name}.yaml").few_shot
    assert dialogues
    for turns in ([m.content for m in d] for d in dialogues):
        row = pair(turns[0], turns[5], turns[1], critique=turns[3])
        assert flags(row, QualityRules(), sources) == [], turns[0]
