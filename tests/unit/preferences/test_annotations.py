"""Human annotation import: the sample file, majority and flags, agreement, and one-line errors."""

from __future__ import annotations

import json

import pytest
from rich.console import Console
from support import REPO

from cai.errors import CaiError
from cai.generation.prompt_files import load_prompts
from cai.preferences.annotations import import_annotations, read_annotations, report_table, write_pairs_jsonl

DATA = REPO / "data"
SAMPLE = DATA / "annotations_sample.jsonl"
SCORES = {"helpfulness": 4, "harmlessness": 5, "honesty": 5, "clarity": 4}
DROP = object()


def record(**changes):
    row = {"annotator": "a1", "prompt": "Why is the sky blue?",
           "responses": ["Sunlight scatters off air molecules, blue the most.", "Because it is."],
           "preference": 0, "explanation": "A explains.", "criteria_scores": dict(SCORES), "time_seconds": 30}
    row.update(changes)
    return {k: v for k, v in row.items() if v is not DROP}


def write(tmp_path, rows, name="a.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def by_prompt(rows, start):
    (row,) = [r for r in rows if r["prompt"][0]["content"].startswith(start)]
    return row


# --- the sample file -------------------------------------------------------------


@pytest.fixture(scope="module")
def sample():
    return import_annotations(SAMPLE)


def test_sample_rows_are_pairs_in_the_project_format(sample):
    assert len(sample.rows) == 12
    for row in sample.rows:
        assert row["source"] == "human"
        assert row["prompt"][0]["role"] == "user" and row["chosen"][0]["role"] == "assistant"
        assert row["messages"] == row["prompt"] + row["chosen"]
        assert row["chosen"] != row["rejected"]
    assert len({r["item_id"] for r in sample.rows}) == 12
    assert sum(r["n_annotations"] for r in sample.rows) == 30


def test_sample_majority_and_disagreement(sample):
    # Lock picks: ann1 and ann2 prefer the explanation, ann3 the refusal.
    row = by_prompt(sample.rows, "How do lock picks")
    assert row["chosen"][0]["content"].startswith("Most door locks")
    assert row["agreement"] == pytest.approx(2 / 3)
    assert (row["n_annotators"], row["mean_helpfulness"]) == (3, pytest.approx(4.0))  # (5+5+2)/3
    assert "I'd rather the assistant not explain" in row["explanation"]
    assert sum(r["agreement"] < 1 for r in sample.rows) == 1


def test_sample_swapped_response_order_is_normalized(sample):
    # ann2 saw the stain item with the responses reversed and picked index 0: the same answer.
    row = by_prompt(sample.rows, "What's a quick way to get a red wine stain")
    assert row["chosen"][0]["content"].startswith("Blot")
    assert row["agreement"] == 1.0 and row["n_annotators"] == 3


def test_sample_flags(sample):
    flagged = {flag: [r["prompt"][0]["content"][:20] for r in sample.rows if r[flag]]
               for flag in ("flag_too_fast", "flag_missing_explanation", "flag_inconsistent")}
    assert flagged == {"flag_too_fast": ["Give me a two-senten"],          # ann2 took 4 s
                       "flag_missing_explanation": ["How many minutes sho"],  # ann1 left it empty
                       "flag_inconsistent": []}
    assert sample.report.flags == {"flag_too_fast": 1, "flag_missing_explanation": 1, "flag_inconsistent": 0}


def test_sample_report_by_hand(sample):
    report = sample.report
    assert (report.n_items, report.n_annotations, report.n_annotators) == (12, 30, 3)
    # 6 items x 3 annotators = 18 pairs, 6 items x 2 = 6 pairs; lock picks (0, 0, 1) loses 2.
    assert report.pairwise_agreement == pytest.approx(22 / 24)
    # Item-order preference values: 17 zeros, 13 ones; the one 2-1 unit gives 2 off-diagonal.
    # alpha = 1 - 29*2 / (30^2 - 17^2 - 13^2) = 1 - 58/442
    assert report.alpha_nominal == pytest.approx(1 - 58 / 442)
    assert report.cohens_kappa is None  # three annotators share items
    clarity = report.criteria["clarity"]
    # Clarity values are 13 fours and 17 fives (sum 137). Agreeing pairs per item:
    # 1,3,3,1,1,1 (3-annotator items) + 0,1,0,1,0,1 = 13 of 24. Off-diagonal coincidences:
    # four 2-1 units x 2 + three split 2-annotator units x 2 = 14; with only two values
    # interval = nominal: alpha = 1 - 29*14 / (900 - 169 - 289) = 1 - 406/442.
    assert clarity["mean"] == pytest.approx(137 / 30)
    assert clarity["agreement"] == pytest.approx(13 / 24)
    assert clarity["alpha_interval"] == pytest.approx(1 - 406 / 442)


def test_min_seconds_threshold():
    assert import_annotations(SAMPLE, min_seconds=0).report.flags["flag_too_fast"] == 0
    assert import_annotations(SAMPLE, min_seconds=25).report.flags["flag_too_fast"] == 2  # items: 4 s; 22 s and 19 s


def test_sample_stays_clear_of_held_out_eval_prompts():
    eval_texts = {r.prompt.lower() for name in ("eval_red_team.jsonl", "eval_helpful.jsonl")
                  for r in load_prompts(DATA / name)}
    assert not {a.prompt.lower() for a in read_annotations(SAMPLE)} & eval_texts


# --- merging rules ---------------------------------------------------------------


def test_tie_keeps_first_response_and_flags(tmp_path):
    path = write(tmp_path, [record(annotator="a1", preference=0), record(annotator="a2", preference=1)])
    (row,) = import_annotations(path).rows
    assert row["chosen"][0]["content"].startswith("Sunlight")
    assert row["agreement"] == 0.5 and row["flag_inconsistent"]


def test_same_annotator_contradicting_itself_on_a_repeat(tmp_path):
    a, b = record()["responses"]
    # The repeat shows the responses reversed; preference 0 now means the *other* answer.
    contradicting = write(tmp_path, [record(), record(responses=[b, a], preference=0),
                                     record(annotator="a2")], "c.jsonl")
    (row,) = import_annotations(contradicting).rows
    assert row["flag_inconsistent"] and row["n_annotators"] == 2 and row["n_annotations"] == 3
    consistent = write(tmp_path, [record(), record(responses=[b, a], preference=1)], "ok.jsonl")
    (row,) = import_annotations(consistent).rows
    assert not row["flag_inconsistent"] and row["agreement"] == 1.0


def test_cohens_kappa_with_two_annotators(tmp_path):
    # a1: 0 0 1 1, a2: 0 1 1 1 -> p_o = 3/4, p_e = .5*.25 + .5*.75 = .5, kappa = .25/.5 = .5
    rows = []
    for i, (x, y) in enumerate([(0, 0), (0, 1), (1, 1), (1, 1)]):
        rows += [record(annotator="a1", item_id=f"q{i}", preference=x),
                 record(annotator="a2", item_id=f"q{i}", preference=y)]
    report = import_annotations(write(tmp_path, rows)).report
    assert report.cohens_kappa == pytest.approx(0.5)
    assert report.kappa_annotators == ("a1", "a2")
    assert report.pairwise_agreement == pytest.approx(3 / 4)


def test_anonymous_annotations_count_as_separate_annotators(tmp_path):
    path = write(tmp_path, [record(annotator=DROP), record(annotator=DROP), record(annotator=DROP, preference=1)])
    import_result = import_annotations(path)
    (row,) = import_result.rows
    assert row["n_annotators"] == 3 and not row["flag_inconsistent"]
    assert import_result.report.cohens_kappa is None


def test_item_id_groups_and_json_list_input(tmp_path):
    rows = [record(item_id=7, duration_seconds=3, time_seconds=DROP),
            record(item_id="7", annotator="a2", explanation=DROP),
            record(item_id="other", prompt="Different prompt?")]
    path = tmp_path / "a.json"
    path.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    result = import_annotations(path)
    assert [r["item_id"] for r in result.rows] == ["7", "other"]
    first = result.rows[0]
    assert first["n_annotators"] == 2 and first["flag_too_fast"] and first["flag_missing_explanation"]
    assert first["explanation"] == "A explains."


def test_write_pairs_jsonl(tmp_path, sample):
    out = tmp_path / "deep" / "pairs.jsonl"
    assert write_pairs_jsonl(sample.rows, out) == 12
    assert [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()] == sample.rows


def test_report_table_renders(sample, tmp_path):
    console = Console(record=True, width=120)
    console.print(report_table(sample.report))
    text = console.export_text()
    assert "0.917" in text and "0.869" in text and "n/a (not exactly 2 annotators" in text
    assert "too fast (< 10 s)" in text
    tie = write(tmp_path, [record(), record(annotator="a2")])  # one unit, one value everywhere
    console.print(report_table(import_annotations(tie).report))
    assert "n/a (undefined)" in console.export_text()


# --- malformed files: one line naming file, line and field --------------------------

GOOD = json.dumps(record())
MALFORMED = [
    # (case, second line of a JSONL file, where, expected message part)
    ("bad json", '{"prompt": "x",', "line 2", "invalid JSON"),
    ("not an object", "[1, 2]", "line 2", "expected a JSON object, got array"),
    ("missing prompt", record(prompt=DROP), "line 2", "prompt: missing"),
    ("missing preference", record(preference=DROP), "line 2", "preference: missing"),
    ("missing scores", record(criteria_scores=DROP), "line 2", "criteria_scores: missing"),
    ("empty prompt", record(prompt="  "), "line 2", "prompt: must be a non-empty string"),
    ("preference 2", record(preference=2), "line 2", "preference: must be the integer 0 or 1"),
    ("preference string", record(preference="0"), "line 2",
     'preference: must be the integer 0 or 1 (index of the preferred response), got "0"'),
    ("preference float", record(preference=1.0), "line 2", "preference: must be the integer 0 or 1"),
    ("preference bool", record(preference=True), "line 2", "preference: must be the integer 0 or 1"),
    ("one response", record(responses=["only"]), "line 2",
     "responses: must be a list of exactly 2 responses, got 1 element(s)"),
    ("three responses", record(responses=["a", "b", "c"]), "line 2", "responses: must be a list of exactly 2"),
    ("responses a string", record(responses="a or b"), "line 2",
     "responses: must be a list of exactly 2 responses, got string"),
    ("non-string response", record(responses=["a", 3]), "line 2", "responses[1]: must be a non-empty string, got 3"),
    ("identical responses", record(responses=["same", " same"]), "line 2",
     "responses: the two responses are identical"),
    ("score too high", record(criteria_scores={**SCORES, "clarity": 6}), "line 2",
     "criteria_scores.clarity: must be an integer from 1 to 5, got 6"),
    ("score zero", record(criteria_scores={**SCORES, "honesty": 0}), "line 2",
     "criteria_scores.honesty: must be an integer from 1 to 5"),
    ("score string", record(criteria_scores={**SCORES, "honesty": "5"}), "line 2",
     "criteria_scores.honesty: must be an integer"),
    ("unknown criterion", record(criteria_scores={**SCORES, "style": 3}), "line 2",
     "criteria_scores.style: unknown criterion; expected helpfulness"),
    ("missing criterion", record(criteria_scores={"helpfulness": 4, "harmlessness": 5, "clarity": 4}), "line 2",
     "criteria_scores.honesty: missing"),
    ("scores not an object", record(criteria_scores=[4, 5, 5, 4]), "line 2",
     "criteria_scores: must be an object, got array"),
    ("explanation not text", record(explanation=3), "line 2", "explanation: must be a string, got number"),
    ("negative time", record(time_seconds=-1), "line 2", "time_seconds: must be a number of seconds >= 0"),
    ("two time fields", record(duration_seconds=5), "line 2",
     "duration_seconds: give time_seconds or duration_seconds, not both"),
    ("annotator a list", record(annotator=["x"]), "line 2", "annotator: must be a non-empty string or an integer"),
    ("item_id reused", record(item_id="q1", prompt="Another prompt?"), "line 2",
     "item_id: 'q1' has a different prompt or responses than at line 1"),
]


@pytest.mark.parametrize("case, line, where, part", MALFORMED, ids=[c[0] for c in MALFORMED])
def test_malformed_jsonl(tmp_path, case, line, where, part):
    first = json.dumps(record(item_id="q1")) if case == "item_id reused" else GOOD
    path = tmp_path / "bad.jsonl"
    path.write_text(f"{first}\n{line if isinstance(line, str) else json.dumps(line)}\n", encoding="utf-8")
    assert_one_line_error(path, f"{where}: {part}")


@pytest.mark.parametrize("case, content, where, part", [
    ("empty file", "", "", "no annotations found"),
    ("blank lines", "\n  \n", "", "no annotations found"),
    ("empty list", "[]", "", "no annotations found"),
    ("bad json in list", '[\n  {"prompt": "x"},\n  {"prompt": }\n]', "line 3", "invalid JSON"),
    ("bad item in list", json.dumps([record(), record(preference=-1)]), "index 1",
     "preference: must be the integer 0 or 1"),
    ("not an object in list", json.dumps([record(), "text"]), "index 1", "expected a JSON object, got string"),
], ids=lambda v: v if isinstance(v, str) and len(v) < 30 else None)
def test_malformed_files(tmp_path, case, content, where, part):
    path = tmp_path / "bad.json"
    path.write_text(content, encoding="utf-8")
    assert_one_line_error(path, f"{where}: {part}" if where else part)


def test_bad_utf8_and_missing_file(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(GOOD.encode() + b"\n" + b'{"prompt": "caf\xe9"}\n')
    assert_one_line_error(path, "line 2: not valid UTF-8")
    assert_one_line_error(tmp_path / "nope.jsonl", "no such file")


def assert_one_line_error(path, expected):
    with pytest.raises(CaiError) as info:
        import_annotations(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    assert expected in message, message
