"""The export loads fresh with `datasets.load_dataset`, as TRL users load it, and an empty export says why not.

datasets caches a card's data files by their names: these tests load through one
cache directory across exports, as a user's ~/.cache/huggingface/datasets does.
"""

from __future__ import annotations

import pytest

from cai.preferences.export import DATA_DIR, SPLITS, data_files, read_card, write_dataset


def _rows(tag: str, n: int) -> list[dict]:
    return [{"pair_id": f"{tag}{i}", "generation_id": f"{tag}{i}",
             "prompt": [{"role": "user", "content": f"Question {i} about {tag}?"}],
             "chosen": [{"role": "assistant", "content": f"A careful answer {i} about {tag}."}],
             "rejected": [{"role": "assistant", "content": f"A careless answer {i}."}],
             "messages": [{"role": "user", "content": f"Question {i} about {tag}?"},
                          {"role": "assistant", "content": f"A careful answer {i} about {tag}."}],
             "category": "c", "source": "s", "strategy": "final-vs-initial", "principle_ids": ["p"], "model": "m"}
            for i in range(n)]


def _load(path, cache):
    import datasets

    datasets.disable_progress_bars()
    return datasets.load_dataset(str(path), cache_dir=str(cache))


def test_a_re_export_loads_its_new_rows_through_the_same_cache(tmp_path):
    out, cache = tmp_path / "dataset", tmp_path / "hf-cache"
    write_dataset(_rows("first", 10), out)
    first = _load(out, cache)
    assert {r["pair_id"] for r in first["train_prefs"]} | {r["pair_id"] for r in first["test_prefs"]} == \
        {f"first{i}" for i in range(10)}
    old_files = set((out / DATA_DIR).iterdir())

    write_dataset(_rows("second", 6), out, test_share=0.2)          # other rows, other settings, same folder
    second = _load(out, cache)
    ids = {r["pair_id"] for split in ("train_prefs", "test_prefs") for r in second[split]}
    assert ids == {f"second{i}" for i in range(6)}
    assert len(second["train_sft"]) + len(second["test_sft"]) == 6
    # the old export's files are gone, and the card names only the new ones
    assert not old_files & set((out / DATA_DIR).iterdir())
    assert sorted((out / DATA_DIR).iterdir()) == sorted(out / p for p in data_files(read_card(out)).values())


def test_the_same_rows_get_the_same_file_names(tmp_path):
    write_dataset(_rows("same", 5), tmp_path / "a")
    write_dataset(_rows("same", 5), tmp_path / "b")
    assert data_files(read_card(tmp_path / "a")) == data_files(read_card(tmp_path / "b"))


def test_an_empty_split_is_left_out_of_configs_and_the_rest_loads(tmp_path):
    out = tmp_path / "dataset"
    counts = write_dataset(_rows("one", 1), out)                     # one prompt: nothing for the test split
    assert counts["test_prefs"] == 0
    assert set(data_files(read_card(out))) == {"train_prefs", "train_sft"}
    loaded = _load(out, tmp_path / "cache")
    assert set(loaded) == {"train_prefs", "train_sft"} and len(loaded["train_prefs"]) == 1
    assert "empty: test_prefs, test_sft (datasets.load_dataset cannot load a 0-row split" in \
        (out / "README.md").read_text()


def test_an_export_with_no_rows_says_in_one_line_why_load_dataset_finds_nothing(tmp_path, cli):
    from datasets import load_from_disk
    from datasets.exceptions import DataFilesNotFoundError

    out = tmp_path / "dataset"
    write_dataset([], out)
    assert data_files(read_card(out)) == {}
    with pytest.raises(DataFilesNotFoundError):          # not "Instruction ... corresponds to no data!"
        _load(out, tmp_path / "cache")
    saved = load_from_disk(str(out / "hf"))              # what the note points to: four empty splits with columns
    assert {name: len(saved[name]) for name in SPLITS} == dict.fromkeys(SPLITS, 0)
    assert {"prompt", "chosen", "rejected"} <= set(saved["train_prefs"].column_names)
    assert "no rows in any split: datasets.load_dataset cannot load a 0-row split" in (out / "README.md").read_text()
    stats = cli(["data", "stats", out]).output
    assert "train_prefs" in stats
