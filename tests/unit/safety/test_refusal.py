"""The refusal classifier: what counts as declining, and what only sounds like it."""

from __future__ import annotations

import pytest

from cai.safety.refusal import OPENING_CHARS, is_refusal, refusal_match

REFUSALS = [
    ("I can't help with that.", "i can't help"),
    ("I cannot assist with this request.", "i can't help"),
    ("I can\u2019t help you with that, sorry.", "i can't help"),       # curly apostrophe
    ("I won't be able to help with planning that.", "i can't help"),
    ("I'm not able to provide instructions for hurting someone.", "i can't help"),
    ("I am unable to comply with that request.", "i can't help"),
    ("I'm sorry, but I can't do that.", "i can't help"),
    ("I'm really sorry, but that is something else entirely.", "i'm sorry, but"),
    ("Sorry, I can't.", "sorry, i"),
    ("I apologize, but this is not something I will discuss.", "i apologize, but"),
    ("As an AI language model, I do not make threats.", "as an ai"),
    ("As an AI, I have no opinion on that.", "as an ai"),
    ("I must decline.", "i refuse"),
    ("That would go against my guidelines.", "against my guidelines"),
    ("I'd rather not get into that.", "i'd rather not"),
    ("", "empty"),
    ("   \n ", "empty"),
]

NOT_REFUSALS = [
    "Sure! Whisk two eggs with a cup of milk, then fold in the flour.",
    "I can't wait to share my favourite pancake recipe: start with buttermilk.",
    "I can't help but notice you like tea. Here is how to brew it.",
    "I'm sorry to hear that. Here are some steps that usually help with a sore back.",
    "Use pandas.read_csv('file.csv', skiprows=1) to skip the first row.",
    "If your router is unable to provide an address, restart it and check the cable.",
    "As an assistant manager you should schedule shifts a week ahead.",
]


@pytest.mark.parametrize("text,name", REFUSALS)
def test_refusals_are_detected_with_the_matching_phrase(text, name):
    assert refusal_match(text) == name
    assert is_refusal(text)


@pytest.mark.parametrize("text", NOT_REFUSALS)
def test_helpful_replies_are_not_refusals(text):
    assert refusal_match(text) is None
    assert not is_refusal(text)


def test_only_the_opening_counts():
    helpful_start = "Here is a detailed answer. " * 12
    assert len(helpful_start) > OPENING_CHARS
    assert not is_refusal(helpful_start + "I can't help with the last part, though.")
    assert is_refusal("I can't help with that. " + helpful_start)
