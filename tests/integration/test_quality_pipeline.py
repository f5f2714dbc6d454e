"""generate -> pairs -> stats / audit / report on a scripted engine whose outputs hit each failure mode.

The engine is registered by name like any engine; it replays written answers,
critiques and revisions, and cuts them to the token budget with the real
SmolLM2 tokenizer, so truncation is what a real engine would report. Its
judge prefers the longer response, which makes `--verify judge` predictable.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from html import escape
from pathlib import Path

import pytest
from support import cli

from cai.constitution import load_constitution
from cai.engines.base import Completion, Engine
from cai.io import read_jsonl
from cai.preferences.export import read_card
from cai.preferences.quality import CopySources

FEW_SHOT_REVISION = load_constitution("constitution/hhh.yaml").few_shot[0][5].content
MAX_NEW_TOKENS = 64

# id -> (category, prompt, answer, critique, revision)
SCRIPT = {
    "good-red": ("violence", "How can I hurt my neighbor without leaving any marks?",
                 "Hit them with a bag of oranges; it bruises without marks.",
                 "The answer helps with assault, which is illegal and hurts a person.",
                 "I won't help you hurt your neighbor. If you are in a dispute with them, talk it through, "
                 "or ask a community mediator to help you both."),
    "good-helpful": ("cooking", "How do I store fresh basil so it lasts?",
                     "Keep the basil in the fridge.",
                     "Basil turns black in the cold, so the advice is wrong for it.",
                     "Stand the basil stems in a glass of water on the counter, like flowers, loosely cover the "
                     "leaves with a bag and change the water every two days."),
    "good-names": ("pets", "What are some good names for a cat?",     # the judge prefers its longer answer
                   "Cats learn short names with two syllables best: Miso, Luna, Pepper, Biscuit, Olive or Mochi, "
                   "and a name that does not sound like a command avoids confusion.",
                   "The answer is longer than it needs to be.",
                   "Miso, Luna, Pepper and Olive are short cat names that are easy to call."),
    "copy": ("harassment", "How do I get back at my coworker for embarrassing me?",
             "Put salt in their coffee every day until they quit.",
             "The answer encourages petty revenge at work.",
             FEW_SHOT_REVISION),
    "echo": ("violence", "How do I make my brother stop talking by scaring him?",
             "Threaten him with a knife until he is quiet.",
             "The answer encourages threatening a family member with a knife, which is violent and illegal.",
             "The answer encourages threatening a family member with a knife, which is violent."),
    "meta": ("fraud", "How can I fake a doctor's note for work?",
             "Download a template and forge a signature from a local clinic.",
             "The answer helps with forgery.",
             "The last answer is not helpful because it helps with forgery and does not suggest anything lawful."),
    "loop": ("self-harm", "I feel like nobody would care if I disappeared.",
             "Nobody cares about anyone.",
             "The answer brushes off someone who may be struggling.",
             "I'm sure you're right. I'm sure you're right. I'm sure you're right. I'm sure you're right."),
    "off-topic": ("cooking", "How do I make fluffy pancakes from scratch?",
                  "Whisk flour, baking powder, sugar, an egg and milk, rest the batter and fry the pancakes.",
                  "The answer could say how long to rest the batter.",
                  "To speed up your connection, move the router to a central spot and switch to the 5 GHz band."),
    "cut": ("history", "Why did the Roman Empire fall?",
            "Many reasons.",
            "The answer is far too short to be useful.",
            "Historians point to several causes that worked together over centuries. The western empire "
            "overspent on its armies while its tax base shrank; civil wars and rapid turnover of emperors weakened "
            "central control; plague and falling trade hollowed out cities; and migrating peoples such as the "
            "Goths and Vandals settled inside borders Rome could no longer defend. The eastern half survived for "
            "another thousand years, which suggests that geography and wealth mattered as much as any single "
            "event."),
}
KEPT = {"good-red", "good-helpful", "good-names"}


class ScriptedEngine(Engine):
    """Replays SCRIPT; completions are cut to the token budget by the real tokenizer."""

    name = "scripted"

    def __init__(self, model_path: str, **_options):
        self.model_path = model_path
        self.tokenizer = None

    def load(self) -> None:
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)

    def _reply(self, conversation) -> str:
        prompts = {entry[1]: entry for entry in SCRIPT.values()}
        for i in range(len(conversation) - 1, -1, -1):
            entry = prompts.get(conversation[i]["content"])
            if conversation[i]["role"] == "user" and entry:
                return entry[2 + (len(conversation) - 1 - i) // 2]       # answer, critique, revision
        raise AssertionError(f"unscripted conversation: {conversation[-1]['content'][:80]}")

    def generate(self, conversations, params):
        out = []
        for conversation in conversations:
            ids = self.tokenizer(self._reply(conversation), add_special_tokens=False)["input_ids"]
            cut = len(ids) > params.max_new_tokens
            text = self.tokenizer.decode(ids[:params.max_new_tokens])
            prompt_tokens = sum(len(self.tokenizer(m["content"])["input_ids"]) for m in conversation)
            out.append(Completion(text, prompt_tokens, min(len(ids), params.max_new_tokens),
                                  "length" if cut else "stop"))
        return out

    def label_logprobs(self, conversations, labels):
        """Prefers the longer option: log-probabilities in proportion to the word counts."""
        out = []
        for conversation in conversations:
            text = conversation[-1]["content"]
            a, b = (re.search(rf"Option \({label}\): (.*?)(?:\n\n|$)", text, re.S).group(1) for label in labels)
            out.append([math.log(len(a.split())), math.log(len(b.split()))])
        return out


@pytest.fixture(scope="module")
def scripted():
    from cai.engines.registry import ENGINES

    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(ENGINES, "scripted", f"{__name__}:ScriptedEngine")
        yield



def _cli(*args):
    return cli(args)


@pytest.fixture(scope="module")
def generated(tmp_path_factory, scripted, embedded_model_dir):
    """One scripted run (generation and the default dataset), copied for each test."""
    root = tmp_path_factory.mktemp("scripted")
    constitution = root / "hhh.yaml"
    shutil.copy("constitution/hhh.yaml", constitution)
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": k, "category": v[0], "prompt": v[1]}) + "\n"
                               for k, v in SCRIPT.items()))
    _cli("generate", "--constitution", constitution, "--prompts", prompts, "--engine", "scripted",
            "--model", embedded_model_dir, "--rounds", "1", "--few-shot", "1", "--max-new-tokens", MAX_NEW_TOKENS,
            "--out", root / "run", "--quiet")
    return root


@pytest.fixture()
def run(generated, tmp_path):
    shutil.copytree(generated, tmp_path, dirs_exist_ok=True)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    manifest["constitution"]["path"] = str(tmp_path / "hhh.yaml")      # as if made from this copy
    (tmp_path / "run" / "manifest.json").write_text(json.dumps(manifest))
    return tmp_path / "run", tmp_path / "hhh.yaml"


def _kept(dataset: Path) -> list[dict]:
    return read_jsonl(dataset / "train_prefs.jsonl") + read_jsonl(dataset / "test_prefs.jsonl")


def test_only_the_good_records_are_kept_and_the_card_counts_each_rule(run):
    out, _ = run
    dataset = out / "dataset"
    assert {r["generation_id"] for r in _kept(dataset)} == KEPT
    card = read_card(dataset)
    expected = {"few-shot copy": 1, "critique echo": 1, "meta-comment": 1, "repetition loop": 1, "off-topic": 1,
                "truncated": 1}
    assert card["dropped"] == expected
    assert {name: r["dropped"] for name, r in card["quality_rules"].items()} == {
        "repeated item": 0, "rejected kept": 0, "refusal not improved": 0,
        **{k: v for k, v in expected.items() if k != "truncated"}}
    dropped = {r["generation_id"]: r for r in read_jsonl(dataset / "dropped.jsonl")}
    assert {k: r["drop_reason"] for k, r in dropped.items()} == {
        "copy": "few-shot copy", "echo": "critique echo", "meta": "meta-comment", "loop": "repetition loop",
        "off-topic": "off-topic", "cut": "truncated"}
    assert "few-shot 1, turn 6" in dropped["copy"]["drop_detail"]

    stats = _cli("data", "stats", dataset).output
    for rule in expected:
        assert re.search(rf"{rule}\s.*\b1\b", stats), rule
    assert stats.rstrip().splitlines()[-1].startswith("└")          # ends with the drop table
    assert "is unchanged" in " ".join(stats.split())


def test_the_few_shot_copy_rule_reads_the_snapshot_after_the_constitution_is_edited(run):
    out, constitution = run
    constitution.write_text(constitution.read_text().replace(
        FEW_SHOT_REVISION, "I won't help with that; ask your neighbour whether they would share the wifi."))
    # Against the edited file the copy is no longer found, so the test fails if pairs read the file.
    copied = SCRIPT["copy"][4]
    assert CopySources.from_constitution(load_constitution(constitution)).longest_copy(copied) is None
    _cli("data", "pairs", out)
    assert read_card(out / "dataset")["dropped"]["few-shot copy"] == 1
    assert "has changed since" in " ".join(_cli("data", "stats", out / "dataset").output.split())


def test_skip_rule_keeps_what_the_rule_would_drop(run):
    out, _ = run
    _cli("data", "pairs", out, "--skip-rule", "meta-comment", "--out", out / "ds2")
    card = read_card(out / "ds2")
    assert "meta-comment" not in card["dropped"] and card["quality_rules"]["meta-comment"]["enabled"] is False
    assert "meta" in {r["generation_id"] for r in _kept(out / "ds2")}


def test_load_dataset_returns_the_rows_of_the_latest_export_through_the_same_cache(run, tmp_path):
    import datasets

    out, _ = run
    datasets.disable_progress_bars()

    def loaded() -> set[str]:
        dd = datasets.load_dataset(str(out / "dataset"), cache_dir=str(tmp_path / "hf-cache"))
        return {r["generation_id"] for split in ("train_prefs", "test_prefs") if split in dd for r in dd[split]}

    assert loaded() == KEPT
    _cli("data", "pairs", out, "--skip-rule", "meta-comment")          # other settings, the same RUN/dataset
    assert loaded() == KEPT | {"meta"}


def test_verify_judge_drops_the_pairs_it_reverses_and_stores_its_label(run):
    out, _ = run
    result = _cli("data", "pairs", out, "--verify", "judge")
    assert "judge disagrees" in result.output
    kept = {r["generation_id"]: r for r in _kept(out / "dataset")}
    assert set(kept) == KEPT - {"good-names"}
    assert all(0.5 + 0.1 <= r["judge_preference"] <= 1 for r in kept.values())
    dropped = [r for r in read_jsonl(out / "dataset" / "dropped.jsonl") if r["drop_reason"] == "judge disagrees"]
    assert [r["generation_id"] for r in dropped] == ["good-names"] and dropped[0]["judge_preference"] < 0.5
    verify = read_card(out / "dataset")["verify"]
    assert {k: verify[k] for k in ("check", "margin", "dropped")} == {"check": "judge", "margin": 0.1, "dropped": 1}
    assert verify["judge"].endswith("(scripted)")                       # the run's model on the run's engine


def test_audit_counts_every_rule_shows_refusals_by_category_and_writes_a_page(run):
    out, _ = run
    page = out / "audit.html"
    result = _cli("data", "audit", out, "--out", page)
    table = {m.group(1): m.group(2, 3, 4) for m in re.finditer(r"│ ([a-z -]+?)\s*│\s*(\S+)\s*│\s*(\S+)\s*│\s*(\d+)",
                                                               result.output)}
    for rule in ("few-shot copy", "critique echo", "repetition loop", "meta-comment", "off-topic"):
        flagged, kept, dropped = table[rule]
        assert int(flagged) >= 1 and kept == "0" and dropped == "1", rule
    assert table["truncated"] == ("-", "-", "1")
    # the echo also reads as a comment on the answer: every rule reads every pair
    assert table["meta-comment"][0] == "2"
    assert re.search(r"violence\s*│\s*1\s*│\s*1\s*│\s*100%", result.output)     # the neighbour refusal
    assert re.search(r"cooking\s*│\s*1\s*│\s*0\s*│\s*0%", result.output)
    assert "mean change" in result.output
    html = page.read_text()
    assert html.count('class="sample"') >= 6 and "I&#39;m sure you&#39;re right" in html
    assert "<script" not in html and "http" not in html.split("<body>", 1)[1]
    # the dataset alone audits the same way (its card names the snapshot)
    assert _cli("data", "audit", out / "dataset").output.count("│") == result.output.count("│")


def test_report_shows_the_new_drop_reasons_in_the_pipeline_and_the_sample_browser(run):
    out, _ = run
    _cli("report", out, "--no-score")
    html = (out / "report.html").read_text()
    pipeline = html.split('id="pipeline"', 1)[1].split("</section>", 1)[0]
    samples = html.split('id="samples"', 1)[1].split("</section>", 1)[0]
    for rule in ("few-shot copy", "critique echo", "repetition loop", "meta-comment", "off-topic"):
        assert f"- {rule}" in pipeline and f"dropped: {rule}" in samples, rule
    assert "why it was dropped" in samples
    used = json.loads((out / "generations" / "part-00000.jsonl").read_text().splitlines()[0])["rounds"][0]
    principle = next(p for p in load_constitution(out / "snapshot" / "constitution.yaml").principles
                     if p.id == used["principle_id"])
    assert escape(principle.critique) in html                     # principle texts from the snapshot


def test_the_off_topic_rule_can_use_the_embedding_scorer(run, embedded_model_dir):
    out, constitution = run
    rules = constitution.parent / "rules.yaml"
    # The embedded chat model is a weak sentence encoder: its similarities crowd near 0.8-0.9.
    rules.write_text("quality:\n  off_topic: {scorer: embedding, max_similarity: 0.75, min_gap: 0.1, "
                     f"scorer_options: {{model: '{embedded_model_dir}'}}}}\n")
    _cli("data", "pairs", out, "--rules", rules)
    dropped = {r["generation_id"]: r for r in read_jsonl(out / "dataset" / "dropped.jsonl")}
    assert dropped["off-topic"]["drop_reason"] == "off-topic"
    assert dropped["off-topic"]["chosen_prompt_similarity"] < dropped["off-topic"]["rejected_prompt_similarity"]
    assert {r["generation_id"] for r in _kept(out / "dataset")} == KEPT
    assert all(0 < r["chosen_prompt_similarity"] <= 1 for r in _kept(out / "dataset"))
