"""`cai data split`: train, validation and test by prompt, seeded, the held-out split sharing no prompt."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import REPO
from support import cli as _invoke

HH = REPO / "data" / "hh-rlhf" / "harmless-base-test.jsonl.gz"


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> Path:
    """The first 600 rows of the shipped HH-RLHF file: real text, where prompts repeat across pairs."""
    out = tmp_path_factory.mktemp("split") / "hh"
    _invoke(["data", "import", "hh-rlhf", HH, "--out", out, "--limit", "600"])
    return out


def _keys(rows) -> set[str]:
    from cai.preferences.export import prompt_key

    return {prompt_key(r) for r in rows}


def test_the_three_splits_share_no_prompt_and_keep_every_pair(imported, tmp_path):
    from cai.preferences.split import read_pairs

    out = tmp_path / "split"
    _invoke(["data", "split", imported, "--out", out, "--test-share", "0.2", "--validation-share", "0.1"])
    pairs = read_pairs(out)
    train, validation, test = (pairs[s] for s in ("train_prefs", "validation_prefs", "test_prefs"))
    assert not _keys(test) & (_keys(train) | _keys(validation))
    assert not _keys(validation) & _keys(train)
    source = read_pairs(imported)["test_prefs"]                     # the file is HH-RLHF's test split
    assert sorted(r["pair_id"] for r in train + validation + test) == sorted(r["pair_id"] for r in source)
    assert len(_keys(source)) < len(source)                         # prompts repeat: the split is not by row
    n = len(_keys(source))
    assert abs(len(_keys(test)) - 0.2 * n) <= 1 and abs(len(_keys(validation)) - 0.1 * n) <= 1
    from datasets import load_from_disk

    dd = load_from_disk(str(out / "hf"))
    assert {"validation_prefs", "validation_sft"} <= set(dd) and len(dd["validation_sft"]) == len(validation)


def test_the_split_is_seeded(imported, tmp_path):
    from cai.preferences.split import read_pairs

    ids = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        _invoke(["data", "split", imported, "--out", tmp_path / name, "--test-share", "0.2", "--seed", seed])
        ids[name] = {s: sorted(r["pair_id"] for r in rows) for s, rows in read_pairs(tmp_path / name).items()}
    assert ids["a"] == ids["b"] and ids["a"]["test_prefs"] != ids["c"]["test_prefs"]


def test_a_datasets_own_test_split_is_kept_and_validation_comes_out_of_train(imported, tmp_path):
    from cai.preferences.split import read_pairs

    first, second = tmp_path / "first", tmp_path / "second"
    _invoke(["data", "split", imported, "--out", first, "--test-share", "0.3", "--validation-share", "0.1"])
    _invoke(["data", "split", first, "--out", second, "--validation-share", "0.2"])
    before, after = read_pairs(first), read_pairs(second)
    assert [r["pair_id"] for r in after["test_prefs"]] == [r["pair_id"] for r in before["test_prefs"]]
    assert not _keys(after["validation_prefs"]) & _keys(after["train_prefs"])
    assert _keys(after["validation_prefs"]) <= _keys(before["train_prefs"] + before["validation_prefs"])


def test_bad_settings_and_data_are_one_line(imported, tmp_path):
    out = tmp_path / "x"
    result = _invoke(["data", "split", imported, "--out", out], code=2)
    assert result.output.strip() == (f"error: {imported}: its train split is empty; "
                                     "pass --test-share to re-split every pair")
    result = _invoke(["data", "split", imported, "--out", out, "--test-share", "0.6", "--validation-share", "0.4"],
                     code=2)
    assert result.output.strip() == "error: --test-share: 0.6 with --validation-share 0.4 leaves no prompt to train on"
    result = _invoke(["data", "split", tmp_path, "--out", out, "--test-share", "0.2"], code=2)
    assert "not a cai dataset (no hf/dataset_dict.json)" in result.output
    assert not out.exists()
