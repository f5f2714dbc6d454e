"""Preference pairs: strategies, quality rules, safety rules, export, validation, and TRL loading it."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cai.cli.main import app
from cai.preferences.export import data_files, read_card, split_by_prompt, write_dataset
from cai.preferences.pair_filter import PairRules, build_pairs
from cai.preferences.strategies import final_vs_initial, per_round
from cai.preferences.validation import validate_preferences
from cai.safety.filter import SafetyRules, apply_rules, load_rules, score_rows


def record(rid, prompt, initial, revisions, finish="stop", principles=None):
    principles = principles or [f"p{i}" for i in range(len(revisions))]
    return {
        "id": rid, "prompt": prompt, "source": "t", "category": "c", "initial_response": initial,
        "initial_finish": finish, "model": "m",
        "rounds": [{"principle_id": p, "critique_request": f"crit {p}?", "critique": f"critique {i}",
                    "revision_request": f"rev {p}.", "revision": r, "revision_finish": "stop"}
                   for i, (p, r) in enumerate(zip(principles, revisions))],
        "final_response": revisions[-1] if revisions else initial,
    }


R1 = record("a", "How do I pick a lock?", "Use a tension wrench and a pick on your neighbour's door.",
            ["Only pick locks you own; a locksmith can help if you are locked out.",
             "If you are locked out of your own home, call a licensed locksmith."])


def test_final_vs_initial_prefers_the_last_revision():
    [row] = final_vs_initial(R1)
    assert row["chosen"] == [{"role": "assistant", "content": R1["rounds"][-1]["revision"]}]
    assert row["rejected"] == [{"role": "assistant", "content": R1["initial_response"]}]
    assert row["prompt"] == [{"role": "user", "content": "How do I pick a lock?"}]
    assert row["messages"] == row["prompt"] + row["chosen"]
    assert row["principle_ids"] == ["p0", "p1"]
    assert row["init_response"] == R1["initial_response"] and row["critic_response"] == "critique 0"
    assert row["revision_prompt"] == "rev p0."


def test_per_round_prefers_each_revision_over_the_text_it_revised():
    rows = per_round(R1)
    assert [(r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in rows] == [
        (R1["rounds"][0]["revision"], R1["initial_response"]),
        (R1["rounds"][1]["revision"], R1["rounds"][0]["revision"]),
    ]
    assert [r["principle_ids"] for r in rows] == [["p0"], ["p1"]]


@pytest.mark.parametrize("rec,reason", [
    (record("n", "Q?", "Same answer here.", ["Same answer here."]), "no-op revision"),
    (record("n", "Q?", "An answer about cooking pasta well.", ["An answer about cooking pasta well!"]),
     "no-op revision"),
    (record("e", "Q?", "An answer.", ["   "]), "empty"),
    (record("t", "Q?", "A long answer that was cut", ["A better answer."], finish="length"), "truncated"),
    (record("p", "Q?", "Bad answer.", ["Here is the revised response: Here is the revised response: ok"]),
     "leaked preamble"),
])
def test_each_quality_rule_drops_and_counts(rec, reason):
    rows, dropped = build_pairs([rec], "final-vs-initial")
    assert rows == [] and dropped == {reason: 1}


def test_exact_and_near_duplicates_are_dropped():
    base = "Call a licensed locksmith if you are locked out of your own home, and show proof that you live there."
    recs = [record("x", "How do I get into my house?", "Break a window.", [base]),
            record("y", "How do I get into my house?", "Kick the door.", [base]),
            record("z", "How do I get into my house?", "Climb in.", [base.replace("proof", "some proof")]),
            record("w", "What is a good bread recipe?", "Burn it.", ["Mix flour, water, salt and yeast."])]
    rows, dropped = build_pairs(recs, "final-vs-initial")
    assert [r["generation_id"] for r in rows] == ["x", "w"]
    assert dropped == {"duplicate": 1, "near duplicate": 1}


def test_truncation_rule_can_be_switched_off():
    rec = record("t", "Q?", "A long answer that was cut", ["A better answer."], finish="length")
    rows, _ = build_pairs([rec], "final-vs-initial", PairRules(drop_truncated=False))
    assert len(rows) == 1


def _rows(texts):
    recs = [record(str(i), f"Question number {i}?", rejected, [chosen]) for i, (chosen, rejected) in enumerate(texts)]
    return build_pairs(recs, "final-vs-initial")[0]


def test_safety_rules_use_the_guide_thresholds_on_real_scores():
    rows = _rows([
        ("Thank you, I am happy to help you find a locksmith.", "Smash the damn window, you idiot."),
        ("You are a stupid idiot and a moron.", "I can help with that."),                      # toxic chosen
        ("Women are always emotional, they never think and are naturally weak. Typical.", "People differ."),
    ])
    score_rows(rows, SafetyRules())
    assert rows[1]["chosen_toxicity"] > 0.7 > rows[0]["chosen_toxicity"]
    assert rows[2]["chosen_biased"] == 1.0 and rows[0]["chosen_biased"] == 0.0
    assert {"prompt_toxicity", "rejected_toxicity", "chosen_insult", "chosen_bias"} <= set(rows[0])
    kept, dropped = apply_rules(rows, SafetyRules())
    assert [r["generation_id"] for r in kept] == ["0"]
    assert dropped == {"chosen toxicity > 0.7": 1, "chosen flagged biased": 1}
    kept, dropped = apply_rules(rows, SafetyRules(toxicity_max=1.0, drop_biased=False))
    assert dropped == {"chosen more toxic than rejected": 1}


def test_rules_yaml_errors_name_the_file_and_key(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text("toxicity_max: 3\n")
    with pytest.raises(Exception) as err:
        load_rules(path)
    assert f"{path}: toxicity_max:" in str(err.value)
    path.write_text("toxicity_maxx: 0.5\n")
    with pytest.raises(Exception, match="toxicity_maxx"):
        load_rules(path)
    path.write_text("toxicity_max: 0.5\n")
    assert load_rules(path, toxicity_max=None).toxicity_max == 0.5
    assert load_rules(path, toxicity_max=0.2).toxicity_max == 0.2


def test_split_is_by_prompt_and_every_test_split_gets_a_prompt():
    rows = _rows([(f"Good answer {i} about the topic.", f"Bad answer {i}.") for i in range(20)])
    rows += [dict(r, pair_id=r["pair_id"] + "b") for r in rows[:5]]          # same prompts twice
    train, test = split_by_prompt(rows, 0.1, seed=0)
    train_prompts = {r["prompt"][0]["content"] for r in train}
    assert test and not train_prompts & {r["prompt"][0]["content"] for r in test}
    assert len({r["prompt"][0]["content"] for r in test}) == 2
    assert split_by_prompt(rows, 0.1, seed=0) == (train, test)
    two = _rows([("Good answer one here.", "Bad one."), ("Good answer two here.", "Bad two.")])
    assert [len(x) for x in split_by_prompt(two, 0.1, seed=3)] == [1, 1]


def test_export_writes_all_formats_and_validates(tmp_path):
    rows = _rows([(f"Good answer {i} about the topic.", f"Bad answer {i}.") for i in range(10)])
    counts = write_dataset(rows, tmp_path / "ds", meta={"dropped": {"no-op revision": 3}, "model": "m"})
    assert counts == {"train_prefs": 9, "test_prefs": 1, "train_sft": 9, "test_sft": 1}
    from datasets import load_from_disk

    dd = load_from_disk(str(tmp_path / "ds" / "hf"))
    assert set(dd) == {"train_prefs", "test_prefs", "train_sft", "test_sft"}
    assert dd["train_sft"][0]["messages"][-1]["role"] == "assistant"
    files = data_files(read_card(tmp_path / "ds"))
    assert set(files) == set(counts)
    for split in counts:
        assert (tmp_path / "ds" / files[split]).is_file() and files[split].startswith(f"data/{split}-")
        assert len((tmp_path / "ds" / f"{split}.jsonl").read_text().splitlines()) == counts[split]
    card = (tmp_path / "ds" / "README.md").read_text()
    assert card.startswith("---\n") and "no-op revision: 3" in card and "train_prefs: 9" in card
    assert validate_preferences(tmp_path / "ds") == (10, [])      # the preference splits
    stats = CliRunner().invoke(app, ["data", "stats", str(tmp_path / "ds")])
    assert stats.exit_code == 0 and "train_prefs" in stats.output and "no-op revision" in stats.output


def test_validate_reports_one_line_per_bad_row(tmp_path):
    good = {"prompt": [{"role": "user", "content": "Hi"}], "chosen": [{"role": "assistant", "content": "Hello"}],
            "rejected": [{"role": "assistant", "content": "Go away"}]}
    bad = [
        {**good, "chosen": good["rejected"]},
        {**good, "chosen": [{"role": "assistant", "content": ""}]},
        {**good, "rejected": [{"role": "robot", "content": "x"}]},
        {k: v for k, v in good.items() if k != "prompt"},
        {**good, "prompt": [{"role": "assistant", "content": "Hi"}]},
    ]
    path = tmp_path / "prefs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [good, *bad]) + "\n{not json\n")
    result = CliRunner().invoke(app, ["data", "validate", str(path)])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.startswith(str(path))]
    assert lines == [
        f"{path}: line 2: chosen: identical to rejected",
        f"{path}: line 3: chosen[0].content: empty",
        f"{path}: line 4: rejected[0].role: unknown role 'robot'",
        f"{path}: line 5: prompt: missing",
        f"{path}: line 6: prompt: last message must have role 'user', not 'assistant'",
        f"{path}: line 7: invalid JSON (Expecting property name enclosed in double quotes)",
    ]


def test_an_export_with_every_pair_dropped_still_loads(tmp_path):
    from datasets import load_from_disk

    assert write_dataset([], tmp_path / "ds") == {"train_prefs": 0, "test_prefs": 0, "train_sft": 0, "test_sft": 0}
    dd = load_from_disk(str(tmp_path / "ds" / "hf"))
    assert {"prompt", "chosen", "rejected"} <= set(dd["train_prefs"].column_names)
    assert "messages" in dd["test_sft"].column_names


def test_import_annotations_command_writes_a_trainable_dataset(tmp_path):
    result = CliRunner().invoke(app, ["data", "import-annotations", "data/annotations_sample.jsonl",
                                      "--out", str(tmp_path / "human")])
    assert result.exit_code == 0, result.output
    assert "Krippendorff" in result.output
    count, problems = validate_preferences(tmp_path / "human")
    assert problems == [] and count == 12
    rows = [json.loads(line) for line in (tmp_path / "human" / "pairs.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and all(r["source"] == "human" for r in rows)
    bad = tmp_path / "bad.jsonl"
    scores = '{"helpfulness": 3, "harmlessness": 5, "honesty": 4, "clarity": 4}'
    bad.write_text('{"prompt": "Hi", "responses": ["only one"], "preference": 0, "explanation": "x", '
                   f'"criteria_scores": {scores}}}\n')
    refused = CliRunner().invoke(app, ["data", "import-annotations", str(bad)])
    assert refused.exit_code == 2 and f"{bad}: line 1: responses" in refused.output
