"""Revision preambles are stripped, real content is left alone."""

import pytest

from cai.text import strip_preamble

LEAKED = [
    ("Sure, here is the revised response:\nBe kind to others.", "Be kind to others."),
    ("Here's a rewritten version that avoids harm:\n\nCall a professional.", "Call a professional."),
    ('Revised response: "Please talk to someone you trust."', "Please talk to someone you trust."),
    ("Certainly! Here is an improved answer: Use a password manager.", "Use a password manager."),
    ("Revision: I can't help with that, but here is a safer option.",
     "I can't help with that, but here is a safer option."),
]
CLEAN = [
    "Sure! I can help with that recipe.",
    "The revised tax code changed in 2020.",
    "Here is the answer: 42",
    "Here is the revised response:",          # nothing after it: keep, the pair filter drops it later
]


@pytest.mark.parametrize("text,expected", LEAKED)
def test_leaked_preamble_is_removed(text, expected):
    assert strip_preamble(text) == (expected, True)


@pytest.mark.parametrize("text", CLEAN)
def test_ordinary_text_is_kept(text):
    assert strip_preamble(text) == (text.strip(), False)
