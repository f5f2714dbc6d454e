"""`cai data import`: each public format from small files written in its real layout, down to one DPO step.

The fixtures in tests/fixtures/imports/ follow the real datasets' columns and file
layouts (hh-rlhf's tranche folders, the red-team JSON list, SHP's per-subreddit
split files, WebGPT's nested question, cai-conversation-harmless's columns, splits
and constitution.json). The tests also lay them out as the Hugging Face caches do
on disk (hub snapshots with gzipped or parquet files, datasets-cache arrow files,
save_to_disk folders) and read them offline.
"""

from __future__ import annotations

import gzip
import json
import math
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cai.cli.main import app
from support import REPO

FIXTURES = REPO / "tests" / "fixtures" / "imports"


def _invoke(args, code: int = 0):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == code, result.output + repr(result.exception)
    return result


def _said(result) -> str:
    """The output with rich's line wrapping undone."""
    return " ".join(result.output.split())


def _rows(dataset: Path, split: str) -> list[dict]:
    return [json.loads(line) for line in (dataset / f"{split}.jsonl").read_text().splitlines()]


def _card(dataset: Path) -> dict:
    from cai.preferences.export import read_card

    return read_card(dataset)


def _train_one_dpo_step(data: Path, model: Path, out: Path) -> None:
    """The smoke DPO recipe, one optimizer step, on the imported export as it is."""
    _invoke(["train", "dpo", "--recipe", "smoke/dpo", "--data", data, "--model", model, "--out", out,
             "--set", "training.max_steps=1", "--set", "training.save_strategy=no",
             "--set", "training.max_length=128"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["kind"] == "dpo" and math.isfinite(summary["train_loss"])


def _jsonl_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _hub_snapshot(cache: Path, repo: str, files: dict[str, bytes]) -> Path:
    """The hub cache layout: blobs, a snapshot of symlinks to them, refs/main naming the snapshot."""
    org, name = repo.split("/")
    root = cache / f"datasets--{org}--{name}"
    snapshot = root / "snapshots" / "0123abcd"
    for i, (rel, data) in enumerate(files.items()):
        blob = root / "blobs" / f"{i:040x}"
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        (snapshot / rel).parent.mkdir(parents=True, exist_ok=True)
        (snapshot / rel).symlink_to(blob)
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text("0123abcd")
    return snapshot


# --- hh-rlhf --------------------------------------------------------------------------------

def test_hh_rlhf_keeps_multi_turn_prompts_drops_with_reasons_and_trains(tmp_path, tiny_model_dir):
    out = tmp_path / "hh"
    result = _invoke(["data", "import", "hh-rlhf", FIXTURES / "hh-rlhf", "--out", out])
    assert "13 rows read -> 8 kept" in _said(result)
    card = _card(out)
    assert card["dropped"] == {"transcripts do not share a prefix": 1, "does not end with an assistant turn": 1,
                               "duplicate": 1, "chosen identical to rejected": 1, "prompt also in the test split": 1}
    assert [c["data_files"] for c in card["configs"]][0][0] == {"split": "train_prefs", "path": "train_prefs.parquet"}
    assert {s["split"]: (s["rows read"], s["converted"]) for s in card["sources"]} == {"train": (10, 6), "test": (3, 3)}
    train, test = _rows(out, "train_prefs"), _rows(out, "test_prefs")
    # the source's test split is the test split; the train row sharing a test prompt is gone
    assert len(test) == 3 and all("/test.jsonl" in r["source"] for r in test)
    lock = "How do I pick the lock on my neighbor's front door?"
    assert [r for r in train if r["prompt"][0]["content"] == lock] == []
    revenge = next(r for r in train if "coworker" in r["prompt"][0]["content"])
    assert [m["role"] for m in revenge["prompt"]] == ["user", "assistant", "user"]
    assert revenge["prompt"][1]["content"] == "I'm sorry that happened. What did they do?"
    assert revenge["chosen"][0]["content"].startswith("Being mocked") and revenge["rejected"][0]["content"].startswith("Post")
    assert revenge["messages"] == revenge["prompt"] + revenge["chosen"] and revenge["category"] == "harmless-base"
    dropped = _jsonl_rows(out / "dropped.jsonl")
    prefix = next(r for r in dropped if r["drop_reason"] == "transcripts do not share a prefix")
    assert "line 4" in prefix["source"] and "turn 2" in prefix["drop_detail"]
    for name in ("train_prefs.parquet", "test_sft.jsonl", "hf/dataset_dict.json", "README.md"):
        assert (out / name).is_file(), name
    _invoke(["data", "validate", out])
    _train_one_dpo_step(out, tiny_model_dir, tmp_path / "dpo")


def _hh_layouts(tmp_path: Path, monkeypatch) -> dict[str, str]:
    """The hh-rlhf fixture as users hold it: a hub snapshot (gzipped), the datasets cache, save_to_disk, parquet."""
    from datasets import Dataset, DatasetDict

    splits = {s: _jsonl_rows(FIXTURES / "hh-rlhf" / "harmless-base" / f"{s}.jsonl") for s in ("train", "test")}
    hub = tmp_path / "hub"
    _hub_snapshot(hub, "Anthropic/hh-rlhf", {f"harmless-base/{s}.jsonl.gz": gzip.compress(
        (FIXTURES / "hh-rlhf" / "harmless-base" / f"{s}.jsonl").read_bytes()) for s in splits})
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    built = tmp_path / "datasets" / "Anthropic___hh-rlhf" / "default" / "0.0.0" / "9f8e7d"
    built.mkdir(parents=True)
    for s, rows in splits.items():
        Dataset.from_list(rows).save_to_disk(str(tmp_path / "tmp" / s))
        shutil.copy(tmp_path / "tmp" / s / "data-00000-of-00001.arrow", built / f"hh-rlhf-{s}.arrow")
    (built / "dataset_info.json").write_text("{}")
    DatasetDict({s: Dataset.from_list(rows) for s, rows in splits.items()}).save_to_disk(str(tmp_path / "saved"))
    (tmp_path / "pq").mkdir()                      # train in two shards, as the hub's parquet conversion writes it
    shards = {"train-00000-of-00002": splits["train"][:5], "train-00001-of-00002": splits["train"][5:],
              "test-00000-of-00001": splits["test"]}
    for name, rows in shards.items():
        Dataset.from_list(rows).to_parquet(str(tmp_path / "pq" / f"{name}.parquet"))
    return {"hub id": "Anthropic/hh-rlhf", "datasets cache": str(built.parents[2]),
            "save_to_disk": str(tmp_path / "saved"), "parquet shards": str(tmp_path / "pq")}


def test_hh_rlhf_reads_the_same_pairs_from_every_layout_on_disk(tmp_path, monkeypatch):
    layouts = _hh_layouts(tmp_path, monkeypatch)
    expected = None
    for name, source in layouts.items():
        out = tmp_path / f"out-{name.replace(' ', '-')}"
        _invoke(["data", "import", "hh-rlhf", source, "--out", out])
        pairs = {split: sorted(json.dumps([r["prompt"], r["chosen"], r["rejected"]]) for r in _rows(out, split))
                 for split in ("train_prefs", "test_prefs")}
        ids = [r["generation_id"] for split in ("train_prefs", "test_prefs") for r in _rows(out, split)]
        assert len(set(ids)) == len(ids), name
        expected = expected or pairs
        assert pairs == expected, name
    assert len(expected["train_prefs"]) == 5 and len(expected["test_prefs"]) == 3
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    result = _invoke(["data", "import", "hh-rlhf", "Anthropic/hh-rlhf", "--out", tmp_path / "via-datasets-cache"])
    assert "datasets cache" in _said(result)
    assert len(_rows(tmp_path / "via-datasets-cache", "test_prefs")) == 3


def test_limit_split_map_and_a_source_without_test_split(tmp_path):
    _invoke(["data", "import", "hh-rlhf", FIXTURES / "hh-rlhf", "--out", tmp_path / "a", "--limit", "2"])
    assert {s["split"]: s["rows read"] for s in _card(tmp_path / "a")["sources"]} == {"train": 2, "test": 2}
    # every split mapped to train: no source test split, so the export splits by prompt
    _invoke(["data", "import", "hh-rlhf", FIXTURES / "hh-rlhf", "--out", tmp_path / "b", "--split-map", "test=train",
             "--test-share", "0.3"])
    card = _card(tmp_path / "b")
    assert card["counts"]["test_prefs"] >= 1 and "prompt also in the test split" not in card["dropped"]
    _invoke(["data", "import", "hh-rlhf", FIXTURES / "hh-rlhf", "--out", tmp_path / "c", "--split-map", "test=skip"])
    assert {s["split"] for s in _card(tmp_path / "c")["sources"]} == {"train"}


# --- red team -------------------------------------------------------------------------------

def test_red_team_attempts_become_a_prompt_file_that_generate_reads(tmp_path, tiny_model_dir):
    from cai.generation.prompt_files import load_prompts

    out = tmp_path / "rt"
    result = _invoke(["data", "import", "hh-rlhf-red-team", FIXTURES / "red-team-attempts", "--out", out])
    assert "3 prompts written" in _said(result)
    rows = _jsonl_rows(out / "prompts.jsonl")
    shoplift = next(r for r in rows if "shoplift" in r["prompt"])
    # the same first turn twice: the more successful attack is kept, with its scores and tags
    assert shoplift["rating"] == 4.0 and shoplift["min_harmlessness_score_transcript"] == -2.71
    assert shoplift["category"] == "theft" and shoplift["tags"][0] == "Theft"
    assert next(r for r in rows if "accent" in r["prompt"])["category"] == "discrimination-injustice"
    assert {r["drop_reason"] for r in _jsonl_rows(out / "dropped.jsonl")} == {"no human turn first", "duplicate prompt"}
    records = load_prompts(out / "prompts.jsonl")
    assert [r.category for r in records] == [r["category"] for r in rows]

    _invoke(["data", "import", "hh-rlhf-red-team", FIXTURES / "red-team-attempts" / "red_team_attempts.jsonl",
             "--out", tmp_path / "worked", "--min-rating", "3"])
    assert sorted(r["rating"] for r in _jsonl_rows(tmp_path / "worked" / "prompts.jsonl")) == [3.0, 4.0]

    run = tmp_path / "run"
    _invoke(["generate", "-c", "constitution/hhh.yaml", "--prompts", out / "prompts.jsonl", "--model", tiny_model_dir,
             "--out", run, "--rounds", "1", "--max-new-tokens", "8", "--few-shot", "0", "--no-pairs"])
    _invoke(["data", "pairs", run, "--no-filter", "--keep-truncated", "--test-share", "0.34", "--out", run / "dataset"])
    assert sum(1 for _ in (run / "generations").glob("*.jsonl")) and len(_rows(run / "dataset", "train_prefs")) >= 2
    _train_one_dpo_step(run / "dataset", tiny_model_dir, tmp_path / "dpo")


# --- SHP ------------------------------------------------------------------------------------

def test_shp_drops_ties_filters_by_score_ratio_and_orients_by_label(tmp_path, tiny_model_dir):
    out = tmp_path / "shp"
    result = _invoke(["data", "import", "shp", FIXTURES / "shp", "--out", out])
    assert "validation skipped" in _said(result)
    assert _card(out)["dropped"] == {"tie": 1}
    train = _rows(out, "train_prefs")
    assert len(train) == 5 and len(_rows(out, "test_prefs")) == 1
    rinse = [r for r in train if r["chosen"][0]["content"].startswith("Rinse until")]
    assert len(rinse) == 2                    # labels 1 (A preferred) and 0 (B preferred) both put it in chosen
    assert all(r["category"] == "askculinary" and r["source_score_chosen"] == 64 for r in rinse)

    _invoke(["data", "import", "shp", FIXTURES / "shp", "--out", tmp_path / "ratio", "--min-score-ratio", "2",
             "--split-map", "validation=test"])
    card = _card(tmp_path / "ratio")
    assert card["dropped"] == {"tie": 1, "score ratio below 2": 1}
    assert card["counts"]["test_prefs"] == 2 and all(r["score_ratio"] >= 2 for r in _rows(tmp_path / "ratio", "train_prefs"))
    _train_one_dpo_step(out, tiny_model_dir, tmp_path / "dpo")


# --- WebGPT ---------------------------------------------------------------------------------

def test_webgpt_drops_ties_and_prefers_the_higher_score(tmp_path, tiny_model_dir):
    out = tmp_path / "webgpt"
    _invoke(["data", "import", "webgpt", FIXTURES / "webgpt" / "comparisons.jsonl", "--out", out, "--test-share", "0.25"])
    assert _card(out)["dropped"] == {"tie": 1}
    rows = _rows(out, "train_prefs") + _rows(out, "test_prefs")
    assert len(rows) == 4
    vaccine = next(r for r in rows if "vaccines" in r["prompt"][0]["content"])
    assert vaccine["chosen"][0]["content"].startswith("A vaccine shows")       # score_0 -0.5: answer_1 wins
    assert vaccine["source_score_chosen"] == 0.5 and vaccine["category"] == "eli5"
    assert all(r["prompt"] == [{"role": "user", "content": r["prompt"][0]["content"]}] for r in rows)
    assert not any("extract" in r["prompt"][0]["content"] for r in rows)       # the quotes stay out of the prompt
    _invoke(["data", "import", "webgpt", FIXTURES / "webgpt", "--out", tmp_path / "scored", "--score"])
    scored = _rows(tmp_path / "scored", "train_prefs")
    assert all(0.0 <= r["chosen_toxicity"] <= 1.0 and "rejected_biased" in r for r in scored)
    assert "chosen_toxicity" in _card(tmp_path / "scored")["scores"]
    _train_one_dpo_step(out, tiny_model_dir, tmp_path / "dpo")


# --- cai-conversation-harmless ---------------------------------------------------------------

def _cai_harmless_hub(cache: Path) -> None:
    """The hub copy: parquet splits under data/ with hashed names, constitution.json at the root."""
    from datasets import Dataset

    files = {"constitution.json": (FIXTURES / "cai-harmless" / "constitution.json").read_bytes(),
             "README.md": b"---\nlicense: apache-2.0\n---\n"}
    for split in ("train_sft", "train_prefs", "test_sft", "test_prefs"):
        path = cache.parent / f"{split}.parquet"
        Dataset.from_list(_jsonl_rows(FIXTURES / "cai-harmless" / "data" / f"{split}.jsonl")).to_parquet(str(path))
        files[f"data/{split}-00000-of-00001-5e6f7a8b9c0d1e2f.parquet"] = path.read_bytes()
    _hub_snapshot(cache, "HuggingFaceH4/cai-conversation-harmless", files)


def test_cai_harmless_imports_records_that_pairs_rules_and_filters_rerun_on(tmp_path, monkeypatch, tiny_model_dir):
    _cai_harmless_hub(tmp_path / "hub")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    run = tmp_path / "run"
    result = _invoke(["data", "import", "cai-harmless", "HuggingFaceH4/cai-conversation-harmless", "--out", run])
    assert "7 generation records" in _said(result) and "2 in the test split" in _said(result)
    records = [json.loads(line) for part in sorted((run / "generations").glob("*.jsonl"))
               for line in part.read_text().splitlines()]
    assert len(records) == 7 and {r["split"] for r in records} == {"train", "test"}
    fake_note = next(r for r in records if "doctor" in r["prompt"])
    assert fake_note["rounds"][0]["principle_id"] == "principle-01"
    assert fake_note["rounds"][0]["critique"].startswith("Forging") and fake_note["final_response"].startswith("Faking")
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["imported"]["format"] == "cai-harmless" and (run / manifest["snapshot"]["constitution"]).is_file()

    out = tmp_path / "dataset"
    result = _invoke(["data", "pairs", run, "--out", out])
    card = _card(out)
    # the revision that copies the hub's few-shot dialogue is caught by the few-shot-copy rule
    assert card["dropped"].get("few-shot copy") == 1
    assert {r["generation_id"] for r in _rows(out, "test_prefs")} == {r["id"] for r in records if r["split"] == "test"}
    assert all("chosen_toxicity" in r for r in _rows(out, "train_prefs"))      # the safety filter scored them
    _invoke(["data", "pairs", run, "--strategy", "per-round", "--no-filter", "--out", tmp_path / "per-round"])
    _train_one_dpo_step(out, tiny_model_dir, tmp_path / "dpo")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("roundtrip")
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"q{i}", "prompt": f"Question {i}: how do I do thing {i}?",
                                           "category": "help" if i % 2 else "harm"}) + "\n" for i in range(8)))
    _invoke(["generate", "-c", "constitution/hhh.yaml", "--prompts", prompts, "--model", tiny_model_dir,
             "--out", root / "run", "--rounds", "2", "--max-new-tokens", "12", "--few-shot", "1", "--no-pairs"])
    return root / "run"


@pytest.mark.parametrize("strategy", ["final-vs-initial", "per-round"])
def test_cai_export_round_trips_through_the_cai_harmless_format(tiny_run, tmp_path, strategy):
    flags = ["--strategy", strategy, "--no-filter", "--keep-truncated", "--test-share", "0.25"]
    _invoke(["data", "pairs", tiny_run, *flags, "--out", tmp_path / "first"])
    _invoke(["data", "import", "cai-harmless", tmp_path / "first", "--out", tmp_path / "imported"])
    _invoke(["data", "pairs", tmp_path / "imported", *flags, "--out", tmp_path / "second"])
    for split in ("train_prefs", "test_prefs", "train_sft", "test_sft"):
        first, second = _rows(tmp_path / "first", split), _rows(tmp_path / "second", split)
        assert first == second, split
    assert len(_rows(tmp_path / "first", "train_prefs")) >= 4 and _rows(tmp_path / "first", "test_prefs")
    assert _card(tmp_path / "second")["constitution"]["name"] == "hhh"


# --- bad input ------------------------------------------------------------------------------

def test_a_file_in_another_format_gets_one_line_naming_file_row_and_field(tmp_path):
    shp_file = FIXTURES / "shp" / "askculinary" / "train.json"
    result = _invoke(["data", "import", "hh-rlhf", shp_file, "--out", tmp_path / "x"], code=2)
    lines = result.output.strip().splitlines()
    assert lines == [f"error: {shp_file}: line 1: chosen: missing (a hh-rlhf row has chosen, rejected; "
                     f"this row has: {', '.join(_jsonl_rows(shp_file)[0])})"]
    result = _invoke(["data", "import", "webgpt", FIXTURES / "hh-rlhf", "--out", tmp_path / "y"], code=2)
    assert "line 1: question.full_text: missing" in result.output and len(result.output.strip().splitlines()) == 1
    result = _invoke(["data", "import", "shp", FIXTURES / "red-team-attempts", "--out", tmp_path / "z"], code=2)
    assert "index 0: human_ref_A: missing" in result.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"chosen": "\\n\\nHuman: hi\\n\\nAssistant: a", "rejected": "\\n\\nHuman: hi\\n\\nAssistant: b"}\n'
                   '{"chosen": 3, "rejected": "x"}\n')
    result = _invoke(["data", "import", "hh-rlhf", bad, "--out", tmp_path / "w"], code=2)
    assert result.output.strip() == f"error: {bad}: line 2: chosen: must be a string, got number"
    assert not (tmp_path / "x").exists() and not (tmp_path / "w").exists()


def test_unknown_format_options_and_sources_are_one_line_errors(tmp_path):
    result = _invoke(["data", "import", "anthropic", FIXTURES / "hh-rlhf", "--out", tmp_path / "x"], code=2)
    assert result.output.strip() == ("error: unknown format 'anthropic'; choose one of: hh-rlhf, hh-rlhf-red-team, "
                                     "shp, webgpt, cai-harmless")
    result = _invoke(["data", "import", "shp", FIXTURES / "shp", "--out", tmp_path / "x", "--min-rating", "3"], code=2)
    assert "--min-rating: applies only to the hh-rlhf-red-team format, not shp" in result.output
    result = _invoke(["data", "import", "shp", FIXTURES / "shp", "--out", tmp_path / "x", "--split-map", "dev=test"],
                     code=2)
    assert "has no split 'dev' (its splits: test, train, validation)" in result.output
    result = _invoke(["data", "import", "shp", FIXTURES / "shp", "--out", tmp_path / "x", "--split-map", "test=eval"],
                     code=2)
    assert "target must be one of train, test, skip" in result.output
    result = _invoke(["data", "import", "hh-rlhf", "nobody/nothing", "--out", tmp_path / "x"], code=2)
    assert "no cached copy" in result.output and len(result.output.strip().splitlines()) == 1
    broken = tmp_path / "broken.jsonl.gz"
    broken.write_bytes(b"not gzip at all")
    result = _invoke(["data", "import", "hh-rlhf", broken, "--out", tmp_path / "x"], code=2)
    assert f"{broken}: cannot read" in result.output
