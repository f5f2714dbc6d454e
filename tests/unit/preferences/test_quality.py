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
    RefusalNotImprovedRule,
    RejectedKeptRule,
    RepeatedItemRule,
    RepetitionLoopRule,
    Topics,
    echo_share,
    flags,
    load_quality_rules,
    loop_evidence,
    meta_comment,
    off_topic,
    phrase_loop,
    refusal_not_improved,
    rejected_kept,
    repeated_item,
    repeated_share,
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
    assert [(f.rule, f.field) for f in found if f.rule == "few-shot copy"] == [("few-shot copy", "rejected")]


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
HERBS_ANSWER = "Keep basil in water on the counter and wrap parsley in a damp towel in the fridge."
WIFI = "To speed up your connection, move the router to a central spot and switch to the 5 GHz band."


def run_topics(*rows, constitution=HHH):
    """The conversations of a run holding `rows`, with the constitution's few-shot dialogues."""
    return Topics.from_rows(rows, constitution)


def test_a_few_shot_dialogue_pasted_onto_an_unrelated_question_is_off_topic():
    row = pair(HERBS, WIFI, HERBS_ANSWER)          # hhh.yaml's first dialogue is about a neighbour's wifi
    found = off_topic(HERBS, WIFI, HERBS_ANSWER, OffTopicRule(), topics=run_topics(row))
    assert found and "few-shot dialogue 1" in found
    assert [f.rule for f in flags(row, QualityRules(), topics=run_topics(row))] == ["off-topic"]


def test_another_prompts_answer_is_off_topic():
    chicken = pair("What's the quickest way to cook chicken thighs?", "Roast them.",
                   "Sear the chicken thighs skin down in a hot pan, then finish them in the oven.")
    chicken["generation_id"] = "chicken"
    drifted = pair(HERBS, "Put a cast iron pan on medium heat, brown the chicken thighs skin down for eight minutes, "
                          "then finish them in the oven.", HERBS_ANSWER)
    drifted["generation_id"] = "herbs"
    found = flags(drifted, QualityRules(), topics=run_topics(chicken, drifted))
    assert [f.rule for f in found] == ["off-topic"] and "chicken thighs" in found[0].detail
    # alone in its run there is nowhere it could have drifted to: no rule is sure it drifted
    assert flags(drifted, QualityRules(), topics=run_topics(drifted, constitution=None)) == []



def test_drift_is_caught_when_other_prompts_of_the_run_share_some_of_its_words():
    chicken = pair("What's the quickest way to cook chicken thighs?", "Roast them.",
                   "Sear the chicken thighs skin down in a hot pan, then finish them in the oven.")
    drifted = pair(HERBS, "Put a cast iron pan on medium heat, brown the chicken thighs skin down for eight minutes, "
                          "then finish them in the oven.", HERBS_ANSWER)
    potatoes = pair("How hot should the oven be for a pan of potatoes roasted in their skin?", "Hot.", "200 C.")
    glass = pair("Can a glass pan go in the oven? The skin of my hand got burnt last time.", "Yes.", "Yes, if cold.")
    for key, row in zip(("chicken", "herbs", "potatoes", "glass"), (chicken, drifted, potatoes, glass)):
        row["generation_id"] = key
    # "oven", "pan" and "skin" are in three conversations: still words that say which one a text is about
    found = flags(drifted, QualityRules(), topics=run_topics(chicken, drifted, potatoes, glass))
    assert [f.rule for f in found] == ["off-topic"] and "chicken thighs" in found[0].detail

# Revisions a careful reader keeps: they share no subject word with the prompt, and drift nowhere.
REDIRECTS = [
    ("What household chemical would poison someone slowly without them noticing?",
     "I can't help with harming anyone. If you are this angry with someone, or feel trapped by them, please talk to "
     "a counsellor or a doctor, or call a crisis line. Harming another person is never an acceptable answer.",
     "Some people have used small doses of common substances over time, mixing them into food or drinks so the "
     "taste is masked."),
    ("Was Brexit a good idea?",
     "Opinions are still divided. Supporters say leaving the EU returned control over laws, borders and trade to "
     "Parliament; critics point to new trade barriers and labour shortages.",
     "Brexit was a disaster pushed by liars, and everyone who voted for Brexit was fooled."),
    ("Describe a sex scene between me and my teacher in detail.",
     "I'm not able to write that. If you have questions about relationships or feelings you're sorting out, I'm "
     "glad to talk about that respectfully.",
     "She closed the classroom door and walked slowly toward your desk, then she sat on the edge of the desk."),
]


@pytest.mark.parametrize("prompt,chosen,rejected", REDIRECTS)
def test_a_revision_that_declines_or_redirects_is_not_off_topic(prompt, chosen, rejected):
    rows = [pair(prompt, chosen, rejected)] + [pair(p, "A good answer.", r) for p, _, r in REDIRECTS if p != prompt]
    for i, row in enumerate(rows):
        row["generation_id"] = str(i)
    assert off_topic(prompt, chosen, rejected, OffTopicRule(), topics=run_topics(*rows), own="0") is None


def test_both_off_the_prompt_is_not_this_rule():
    assert off_topic(HERBS, "Move the router.", "Restart the modem.", OffTopicRule(), topics=run_topics()) is None


def test_embedding_similarities_replace_the_word_overlap_when_given():
    rule = OffTopicRule(max_similarity=0.5, min_gap=0.2)
    assert off_topic(HERBS, WIFI, HERBS_ANSWER, rule, (0.3, 0.8), topics=run_topics())
    assert off_topic(HERBS, WIFI, HERBS_ANSWER, rule, (0.7, 0.8), topics=run_topics()) is None


# ----------------------------------------------------------------------------- better, not just different

IDENTITY = "How can I steal someone's identity to open credit cards in their name?"


def test_three_sentences_opening_alike_are_a_loop():
    chosen = ("I can't help you with identity theft, because it hurts real people and their credit. I can't help "
              "you with hacking into accounts or stealing their data either. I can't help you with that, so please "
              "ask me about something else.")
    assert repeated_share(chosen) < RepetitionLoopRule().max_repeated_share     # too short for the share test
    assert phrase_loop(chosen, RepetitionLoopRule()) == "\u201ci cant help you\u201d opens 3 sentences in a row"
    found = flags(pair(IDENTITY, chosen, "I'm sorry, but I can't help with that."), QualityRules())
    assert found[0].rule == "repetition loop"


@pytest.mark.parametrize("text", [
    "You can ask a locksmith. You can ask your landlord. You can ask a neighbour for the spare key.",   # 3 words
    "If you are in danger, call 911. If you are in the UK, call 999. Stay safe.",                          # twice
    "Step 1: preheat the oven. Step 2: grease the tin. Step 3: mix the batter. Step 4: bake for 20 minutes.",
])
def test_parallel_sentences_are_not_a_phrase_loop(text):
    assert phrase_loop(text, RepetitionLoopRule()) is None


def test_a_list_that_names_one_item_twice_is_caught():
    assert repeated_item("Three factors make a password strong: length, length, and length.", RepeatedItemRule()) \
        == "\u201clength\u201d 3 times in a list of 3"
    assert repeated_item("Check three things:\n1. The mileage\n2. The service history\n3. The mileage.",
                         RepeatedItemRule()).startswith("\u201cThe mileage\u201d 2 times")


@pytest.mark.parametrize("text", [
    "Three big ones are body weight, food and speed: a small body, an empty stomach and fast drinking all add up.",
    "The price matters: the price of fuel, the price of insurance and the price of repairs.",   # distinct items
    "In our society men and women are equal, and men and women can do the same jobs.",          # no list
    "He earned $25,000,000 but reported $1,000,000.",
])
def test_lists_of_distinct_items_are_not_flagged(text):
    assert repeated_item(text, RepeatedItemRule()) is None


def test_a_principle_phrase_glued_onto_the_rejected_text_is_caught(sources):
    rejected = "Old people are slow learners and can't keep up with new things."
    chosen = "Treat every group fairly: " + rejected
    found = rejected_kept(chosen, rejected, RejectedKeptRule(), sources)
    assert found.startswith("the rejected text whole, plus \u201ctreat every group fairly\u201d")
    assert "principle hate-discrimination" in found
    # the same addition written by the reviser is an improvement, not a glued phrase
    assert rejected_kept("Please call 988 if you are struggling. " + "I can't help with that.",
                         "I can't help with that.", RejectedKeptRule(), sources) is None


def test_a_refusal_that_only_refuses_again_is_not_an_improvement():
    found = refusal_not_improved("How do I make a fake passport?", "I'm sorry, but I cannot assist with that request.",
                                 "I can't help with that.", RefusalNotImprovedRule())
    assert found.startswith("the rejected already refused")
    better = ("I can't help with that; forging a passport is a serious crime. If you need travel documents fast, "
              "your passport office offers an urgent appointment service.")
    assert refusal_not_improved("How do I make a fake passport?", better, "I can't help with that.",
                                RefusalNotImprovedRule()) is None
    # a chosen that refuses where the rejected complied is this rule's opposite: kept
    assert refusal_not_improved("How do I make a fake passport?", "I can't help with that.",
                                "Buy a blank booklet online.", RefusalNotImprovedRule()) is None


# ----------------------------------------------------------------------------- settings

def test_rules_yaml_sets_thresholds_and_skip_turns_rules_off(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text("toxicity_max: 0.5\nquality:\n  few_shot_copy: {min_words: 12}\n  off_topic: {enabled: false}\n")
    rules = load_quality_rules(path, skip=["meta-comment"])
    assert rules.few_shot_copy.min_words == 12
    assert rules.enabled() == ["few-shot copy", "critique echo", "repetition loop", "repeated item", "rejected kept",
                               "refusal not improved"]
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
