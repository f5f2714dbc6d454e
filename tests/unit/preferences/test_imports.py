"""`cai data import`: each public format from small files written in its real layout.

The fixtures in tests/fixtures/imports/ follow the real datasets' columns and file
layouts (hh-rlhf's tranche folders, the red-team JSON list, SHP's per-subreddit
split files, WebGPT's nested question, cai-conversation-harmless's columns, splits
and constitution.json). The tests also lay them out as the Hugging Face caches do
on disk (hub snapshots with gzipped or parquet files, datasets-cache arrow files,
save_to_disk folders) and read them offline. Training on each import is in
tests/integration/test_imports_pipeline.py.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest
from support.imports import FIXTURES, cai_harmless_hub, card, hub_snapshot, jsonl_rows, rows, said

# --- hh-rlhf --------------------------------------------------------------------------------

def test_hh_rlhf_keeps_multi_turn_prompts_and_drops_with_reasons(tmp_path, cli):
    out = tmp_path / "hh"
    result = cli(["data", "import", "hh-rlhf", FIXTURES / "hh-rlhf", "--out", out])
    assert "13 rows read -> 8 kept" in said(result)
    front = card(out)
    assert front["dropped"] == {"transcripts do not share a prefix": 1, "does not end with an assistant turn": 1,
                                "duplicate": 1, "chosen identical to rejected": 1, "prompt also in the test split": 1}
    assert front["configs"][0]["data_files"][0]["split"] == "train_prefs"
    assert (out / front["configs"][0]["data_files"][0]["path"]).is_file()
    assert {s["split"]: (s["target"], s["rows_read"], s["converted"]) for s in front["sources"]} == \
        {"train": ("train", 10, 6), "test": ("test", 3, 3)}
    train, test = rows(out, "train_prefs"), rows(out, "test_prefs")
    # the source's test split is the test split; the train row sharing a test prompt is gone
    assert len(test) == 3 and all("/test.jsonl" in r["source"] for r in test)
    lock = "How do I pick the lock on my neighbor's front door?"
    assert [r for r in train if r["prompt"][0]["content"] == lock] == []
    revenge = next(r for r in train if "coworker" in r["prompt"][0]["content"])
    assert [m["role"] for m in revenge["prompt"]] == ["user", "assistant", "user"]
    assert revenge["prompt"][1]["content"] == "I'm sorry that happened. What did they do?"
    assert revenge["chosen"][0]["content"].startswith("Being mocked")
    assert revenge["rejected"][0]["content"].startswith("Post")
    assert revenge["messages"] == revenge["prompt"] + revenge["chosen"] and revenge["category"] == "harmless-base"
    dropped = jsonl_rows(out / "dropped.jsonl")
    prefix = next(r for r in dropped if r["drop_reason"] == "transcripts do not share a prefix")
    assert "line 4" in prefix["source"] and "turn 2" in prefix["drop_detail"]
    for name in ("test_sft.jsonl", "hf/dataset_dict.json", "README.md"):
        assert (out / name).is_file(), name
    assert "## Sources" in (out / "README.md").read_text()
    assert "rows_read" in said(cli(["data", "stats", out]))
    cli(["data", "validate", out])


def _hh_layouts(tmp_path: Path, monkeypatch) -> dict[str, str]:
    """The hh-rlhf fixture as users hold it: a hub snapshot (gzipped), the datasets cache, save_to_disk, parquet."""
    from datasets import Dataset, DatasetDict

    splits = {s: jsonl_rows(FIXTURES / "hh-rlhf" / "harmless-base" / f"{s}.jsonl") for s in ("train", "test")}
    hub = tmp_path / "hub"
    hub_snapshot(hub, "Anthropic/hh-rlhf", {f"harmless-base/{s}.jsonl.gz": gzip.compress(
        (FIXTURES / "hh-rlhf" / "harmless-base" / f"{s}.jsonl").read_bytes()) for s in splits})
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    built = tmp_path / "datasets" / "Anthropic___hh-rlhf" / "default" / "0.0.0" / "9f8e7d"
    built.mkdir(parents=True)
    for s, split_rows in splits.items():
        Dataset.from_list(split_rows).save_to_disk(str(tmp_path / "tmp" / s))
        shutil.copy(tmp_path / "tmp" / s / "data-00000-of-00001.arrow", built / f"hh-rlhf-{s}.arrow")
    (built / "dataset_info.json").write_text("{}")
    DatasetDict({s: Dataset.from_list(r) for s, r in splits.items()}).save_to_disk(str(tmp_path / "saved"))
    (tmp_path / "pq").mkdir()                      # train in two shards, as the hub's parquet conversion writes it
    shards = {"train-00000-of-00002": splits["train"][:5], "train-00001-of-00002": splits["train"][5:],
              "test-00000-of-00001": splits["test"]}
    for name, shard in shards.items():
        Dataset.from_list(shard).to_parquet(str(tmp_path / "pq" / f"{name}.parquet"))
    return {"hub id": "Anthropic/hh-rlhf", "datasets cache": str(built.parents[2]),
            "save_to_disk": str(tmp_path / "saved"), "parquet shards": str(tmp_path / "pq")}


def test_hh_rlhf_reads_the_same_pairs_from_every_layout_on_disk(tmp_path, monkeypatch, cli):
    layouts = _hh_layouts(tmp_path, monkeypatch)
    expected = None
    for name, source in layouts.items():
        out = tmp_path / f"out-{name.replace(' ', '-')}"
        cli(["data", "import", "hh-rlhf", source, "--out", out])
        pairs = {split: sorted(json.dumps([r["prompt"], r["chosen"], r["rejected"]]) for r in rows(out, split))
                 for split in ("train_prefs", "test_prefs")}
        ids = [r["generation_id"] for split in ("train_prefs", "test_prefs") for r in rows(out, split)]
        assert len(set(ids)) == len(ids), name
        expected = expected or pairs
        assert pairs == expected, name
    assert len(expected["train_prefs"]) == 5 and len(expected["test_prefs"]) == 3
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    result = cli(["data", "import", "hh-rlhf", "Anthropic/hh-rlhf", "--out", tmp_path / "via-datasets-cache"])
    assert "datasets cache" in said(result)
    assert len(rows(tmp_path / "via-datasets-cache", "test_prefs")) == 3


def test_limit_split_map_and_a_source_without_test_split(tmp_path, cli):
    cli(["data", "import", "hh-rlhf", FIXTURES / "hh-rlhf", "--out", tmp_path / "a", "--limit", "2"])
    assert {s["split"]: s["rows_read"] for s in card(tmp_path / "a")["sources"]} == {"train": 2, "test": 2}
    # every split mapped to train: no source test split, so the export splits by prompt
    cli(["data", "import", "hh-rlhf", FIXTURES / "hh-rlhf", "--out", tmp_path / "b", "--split-map", "test=train",
         "--test-share", "0.3"])
    front = card(tmp_path / "b")
    assert front["counts"]["test_prefs"] >= 1 and "prompt also in the test split" not in front["dropped"]
    cli(["data", "import", "hh-rlhf", FIXTURES / "hh-rlhf", "--out", tmp_path / "c", "--split-map", "test=skip"])
    assert {s["split"] for s in card(tmp_path / "c")["sources"]} == {"train"}


# --- red team -------------------------------------------------------------------------------

def test_red_team_attempts_become_a_prompt_file(tmp_path, cli):
    from cai.generation.prompt_files import load_prompts

    out = tmp_path / "rt"
    result = cli(["data", "import", "hh-rlhf-red-team", FIXTURES / "red-team-attempts", "--out", out])
    assert "3 prompts written" in said(result)
    prompts = jsonl_rows(out / "prompts.jsonl")
    shoplift = next(r for r in prompts if "shoplift" in r["prompt"])
    # the same first turn twice: the more successful attack is kept, with its scores and tags
    assert shoplift["rating"] == 4.0 and shoplift["min_harmlessness_score_transcript"] == -2.71
    assert shoplift["category"] == "theft" and shoplift["tags"][0] == "Theft"
    assert next(r for r in prompts if "accent" in r["prompt"])["category"] == "discrimination-injustice"
    assert {r["drop_reason"] for r in jsonl_rows(out / "dropped.jsonl")} == {"no human turn first", "duplicate prompt"}
    records = load_prompts(out / "prompts.jsonl")
    assert [r.category for r in records] == [r["category"] for r in prompts]

    cli(["data", "import", "hh-rlhf-red-team", FIXTURES / "red-team-attempts" / "red_team_attempts.jsonl",
         "--out", tmp_path / "worked", "--min-rating", "3"])
    assert sorted(r["rating"] for r in jsonl_rows(tmp_path / "worked" / "prompts.jsonl")) == [3.0, 4.0]


# --- SHP ------------------------------------------------------------------------------------

def test_shp_drops_ties_filters_by_score_ratio_and_orients_by_label(tmp_path, cli):
    out = tmp_path / "shp"
    result = cli(["data", "import", "shp", FIXTURES / "shp", "--out", out])
    assert "validation skipped" in said(result)
    assert card(out)["dropped"] == {"tie": 1}
    train = rows(out, "train_prefs")
    assert len(train) == 5 and len(rows(out, "test_prefs")) == 1
    rinse = [r for r in train if r["chosen"][0]["content"].startswith("Rinse until")]
    assert len(rinse) == 2                    # labels 1 (A preferred) and 0 (B preferred) both put it in chosen
    assert all(r["category"] == "askculinary" and r["source_score_chosen"] == 64 for r in rinse)

    cli(["data", "import", "shp", FIXTURES / "shp", "--out", tmp_path / "ratio", "--min-score-ratio", "2",
         "--split-map", "validation=test"])
    front = card(tmp_path / "ratio")
    assert front["dropped"] == {"tie": 1, "score ratio below 2": 1}
    assert front["counts"]["test_prefs"] == 2
    assert all(r["score_ratio"] >= 2 for r in rows(tmp_path / "ratio", "train_prefs"))


# --- WebGPT ---------------------------------------------------------------------------------

def test_webgpt_drops_ties_and_prefers_the_higher_score(tmp_path, cli):
    out = tmp_path / "webgpt"
    cli(["data", "import", "webgpt", FIXTURES / "webgpt" / "comparisons.jsonl", "--out", out, "--test-share", "0.25"])
    assert card(out)["dropped"] == {"tie": 1}
    pairs = rows(out, "train_prefs") + rows(out, "test_prefs")
    assert len(pairs) == 4
    vaccine = next(r for r in pairs if "vaccines" in r["prompt"][0]["content"])
    assert vaccine["chosen"][0]["content"].startswith("A vaccine shows")       # score_0 -0.5: answer_1 wins
    assert vaccine["source_score_chosen"] == 0.5 and vaccine["category"] == "eli5"
    assert all(r["prompt"] == [{"role": "user", "content": r["prompt"][0]["content"]}] for r in pairs)
    assert not any("extract" in r["prompt"][0]["content"] for r in pairs)      # the quotes stay out of the prompt


def test_score_adds_the_toxicity_and_bias_columns_and_their_summary(tmp_path, cli):
    cli(["data", "import", "webgpt", FIXTURES / "webgpt", "--out", tmp_path / "scored", "--score"])
    scored = rows(tmp_path / "scored", "train_prefs")
    assert all(0.0 <= r["chosen_toxicity"] <= 1.0 and "rejected_biased" in r for r in scored)
    assert "chosen_toxicity" in card(tmp_path / "scored")["scores"]


# --- cai-conversation-harmless ---------------------------------------------------------------

def test_cai_harmless_imports_records_that_pairs_rules_and_filters_rerun_on(tmp_path, monkeypatch, cli):
    cai_harmless_hub(tmp_path / "hub")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    run = tmp_path / "run"
    result = cli(["data", "import", "cai-harmless", "HuggingFaceH4/cai-conversation-harmless", "--out", run])
    assert "7 generation records" in said(result) and "2 in the test split" in said(result)
    records = [json.loads(line) for part in sorted((run / "generations").glob("*.jsonl"))
               for line in part.read_text().splitlines()]
    assert len(records) == 7 and {r["split"] for r in records} == {"train", "test"}
    fake_note = next(r for r in records if "doctor" in r["prompt"])
    assert fake_note["rounds"][0]["principle_id"] == "principle-01"
    assert fake_note["rounds"][0]["critique"].startswith("Forging")
    assert fake_note["final_response"].startswith("Faking")
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["imported"]["format"] == "cai-harmless" and (run / manifest["snapshot"]["constitution"]).is_file()

    out = tmp_path / "dataset"
    cli(["data", "pairs", run, "--out", out])
    # the revision that copies the hub's few-shot dialogue is caught by the few-shot-copy rule
    assert card(out)["dropped"].get("few-shot copy") == 1
    assert {r["generation_id"] for r in rows(out, "test_prefs")} == {r["id"] for r in records if r["split"] == "test"}
    assert all("chosen_toxicity" in r for r in rows(out, "train_prefs"))      # the safety filter scored them
    cli(["data", "pairs", run, "--strategy", "per-round", "--no-filter", "--out", tmp_path / "per-round"])
    assert rows(tmp_path / "per-round", "train_prefs")


# --- bad input ------------------------------------------------------------------------------

def test_a_file_in_another_format_gets_one_line_naming_file_row_and_field(tmp_path, cli):
    shp_file = FIXTURES / "shp" / "askculinary" / "train.json"
    result = cli(["data", "import", "hh-rlhf", shp_file, "--out", tmp_path / "x"], code=2)
    assert result.output.strip().splitlines() == [
        f"error: {shp_file}: line 1: chosen: missing (a hh-rlhf row has chosen, rejected; "
        f"this row has: {', '.join(jsonl_rows(shp_file)[0])})"]
    result = cli(["data", "import", "webgpt", FIXTURES / "hh-rlhf", "--out", tmp_path / "y"], code=2)
    assert "line 1: question.full_text: missing" in result.output and len(result.output.strip().splitlines()) == 1
    result = cli(["data", "import", "shp", FIXTURES / "red-team-attempts", "--out", tmp_path / "z"], code=2)
    assert "index 0: human_ref_A: missing" in result.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"chosen": "\\n\\nHuman: hi\\n\\nAssistant: a", "rejected": "\\n\\nHuman: hi\\n\\nAssistant: b"}\n'
                   '{"chosen": 3, "rejected": "x"}\n')
    result = cli(["data", "import", "hh-rlhf", bad, "--out", tmp_path / "w"], code=2)
    assert result.output.strip() == f"error: {bad}: line 2: chosen: must be a string, got number"
    assert not (tmp_path / "x").exists() and not (tmp_path / "w").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["anthropic", FIXTURES / "hh-rlhf"], "error: FORMAT: unknown format 'anthropic'; choose one of hh-rlhf, "
                                          "hh-rlhf-red-team, shp, webgpt, cai-harmless"),
    (["shp", FIXTURES / "shp", "--min-rating", "3"], "error: --min-rating: applies only to the hh-rlhf-red-team "
                                                     "format, not shp"),
    (["hh-rlhf-red-team", FIXTURES / "red-team-attempts", "--min-rating", "5"],
     "error: --min-rating: must be between 0 and 4, got 5"),
    (["shp", FIXTURES / "shp", "--split-map", "dev=test"],
     f"error: --split-map: dev: {FIXTURES / 'shp'} has no split 'dev' (its splits: test, train, validation)"),
    (["shp", FIXTURES / "shp", "--split-map", "test=eval"],
     "error: --split-map: test=eval: target must be one of train, test, skip, got 'eval'"),
    (["shp", FIXTURES / "shp", "--split-map", "test"], "error: --split-map: expected SOURCE_SPLIT=TARGET, got 'test'"),
    (["shp", FIXTURES / "shp", "--limit", "0"], "error: --limit: must be at least 1, got 0"),
    (["cai-harmless", FIXTURES / "cai-harmless", "--score"],
     "error: --score: applies to the preference formats; cai-harmless writes records, scored later by "
     "`cai data pairs`"),
])
def test_bad_settings_are_one_line_naming_the_flag(tmp_path, cli, args, message):
    result = cli(["data", "import", *args, "--out", tmp_path / "x"], code=2)
    assert result.output.strip() == message
    assert not (tmp_path / "x").exists()


def test_missing_and_unreadable_sources_are_one_line(tmp_path, cli):
    result = cli(["data", "import", "hh-rlhf", "nobody/nothing", "--out", tmp_path / "x"], code=2)
    assert "no cached copy" in result.output and len(result.output.strip().splitlines()) == 1
    broken = tmp_path / "broken.jsonl.gz"
    broken.write_bytes(b"not gzip at all")
    result = cli(["data", "import", "hh-rlhf", broken, "--out", tmp_path / "x"], code=2)
    assert f"{broken}: cannot read" in result.output
