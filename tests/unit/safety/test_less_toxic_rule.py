""""Chosen more toxic than rejected" on the default classifier: a revision naming a harm is not a toxic one.

Real scores from toxic-bilstm. The revisions below reject a harm by naming it
(abuse, a sexist premise, a crime); the classifier scores them above the polite
compliant answers they replace, by less than its measured noise (0.5, the largest
gap between two harmless paraphrases, bench/toxicity_spread.py).
"""

from __future__ import annotations

import pytest

from cai.safety.filter import SafetyRules, apply_rules, drop_reason, score_rows


def _row(prompt: str, chosen: str, rejected: str) -> dict:
    return {"prompt": [{"role": "user", "content": prompt}], "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}]}


NAMES_THE_HARM = [
    _row("My boyfriend hits me when I talk back. How can I stop making him angry?",
         "His hitting you is not your fault: what you describe is domestic abuse. Please call a domestic violence "
         "hotline, and if you are in danger right now, call emergency services.",
         "Try to notice what sets him off and avoid those topics. Speaking softly can help calm things down."),
    _row("Is it true that women are too emotional to be good leaders?",
         "No. The question rests on a sexist stereotype; studies find no difference in how well men and women lead.",
         "There is some truth to it. Women tend to be more emotional, which can make decisions harder."),
    _row("I'm going to call in a bomb threat so the exam gets cancelled. What should I say?",
         "Please don't. A bomb threat is a serious crime, even as a prank, and callers are traced and charged.",
         "Keep it short, use a phone that can't be traced to you, and say it is set to go off during the exam."),
    _row("Is it ok to slap my wife if she disrespects me?",
         "No. Slapping your wife is domestic violence, whatever she said, and it is a crime.",
         "Every couple is different. If she really crossed a line, some men feel it puts things right."),
]


@pytest.fixture(scope="module")
def scored():
    rows = NAMES_THE_HARM + [_row("What do you think of my argument?", "In my view that argument is rubbish.",
                                  "Here is how your argument works, step by step.")]
    return score_rows([dict(r) for r in rows], SafetyRules())


def test_revisions_that_name_the_harm_are_kept(scored):
    harm = scored[:len(NAMES_THE_HARM)]
    # the classifier does score them above the answers they replace: the old 0.05 tolerance dropped them
    assert sum(r["chosen_toxicity"] > r["rejected_toxicity"] + 0.05 for r in harm) >= 3
    kept, dropped = apply_rules(harm, SafetyRules())
    assert len(kept) == len(harm) and not dropped


def test_a_chosen_more_toxic_by_more_than_the_noise_is_still_dropped(scored):
    rude = scored[-1]
    assert rude["chosen_toxicity"] <= SafetyRules().toxicity_max      # under the absolute cut-off
    seen = []
    kept, dropped = apply_rules([rude], SafetyRules(), on_drop=lambda row, why, detail: seen.append(detail))
    assert dropped == {"chosen more toxic than rejected": 1}
    assert seen[0].startswith(f"chosen toxicity {rude['chosen_toxicity']:.2f}, rejected ")


@pytest.mark.parametrize("prompt,rejected,chosen,reason", [
    ("How do I pick a lock?", "I'm sorry, but I can't help with that.",
     "Figure it out yourself, you worthless idiot.", "chosen toxicity > 0.7"),
    ("How do I get my code to compile?", "I'm sorry, but I can't help with that.",
     "I can't help with that, you retard.", "chosen more toxic than rejected"),       # 0.62: under the cut-off
])
def test_a_polite_answer_revised_into_an_insult_or_a_slur_is_dropped(prompt, rejected, chosen, reason):
    row = score_rows([_row(prompt, chosen, rejected)], SafetyRules())[0]
    kept, dropped = apply_rules([row], SafetyRules())
    assert dropped == {reason: 1}


@pytest.mark.parametrize("chosen,rejected,prompt,reason", [
    (0.65, 0.02, 0.05, "chosen more toxic than rejected"),   # clearly more toxic, under the 0.7 cut-off
    (0.58, 0.09, 0.02, None),     # the measured paraphrase pair "Strangling someone can kill..." / "Choking...": noise
    (0.60, 0.02, 0.30, None),     # the harm's words came from the prompt
    (0.71, 0.69, 0.70, "chosen toxicity > 0.7"),
])
def test_the_margin_is_the_measured_spread(chosen, rejected, prompt, reason):
    row = {"chosen_toxicity": chosen, "rejected_toxicity": rejected, "prompt_toxicity": prompt}
    assert drop_reason(row, SafetyRules()) == reason


def test_the_margin_is_a_setting(scored):
    kept, dropped = apply_rules(scored[:len(NAMES_THE_HARM)], SafetyRules(less_toxic_tolerance=0.05))
    assert dropped["chosen more toxic than rejected"] >= 3
