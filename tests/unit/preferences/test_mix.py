"""`cai data mix`: weighted, seeded, test splits kept apart, the card naming the sources."""

from __future__ import annotations

from pathlib import Path

from support import cli as _invoke
from support.imports import card
from support.imports import rows as _rows
from support.train import preference_rows


def _cai_dataset(out: Path, n: int, tag: str, test_share: float) -> Path:
    from cai.preferences.export import write_dataset

    rows = preference_rows(n)
    for r in rows:
        r["prompt"][0]["content"] = f"{tag} {r['prompt'][0]['content']}"
        r["messages"] = r["prompt"] + r["chosen"]
        r["chosen_toxicity"] = 0.01
    write_dataset(rows, out, test_share=test_share, seed=0)
    return out


def _helpful_set(out: Path, n: int, shared_prompt: str) -> Path:
    """A helpfulness set in the implicit-prompt layout (ultrafeedback_binarized): chosen holds the user turn."""
    from datasets import Dataset, DatasetDict

    def row(i: int, prompt: str) -> dict:
        return {"prompt": prompt, "prompt_id": f"h{i}",
                "chosen": [{"role": "user", "content": prompt},
                           {"role": "assistant", "content": f"Clear answer {i}."}],
                "rejected": [{"role": "user", "content": prompt},
                             {"role": "assistant", "content": f"Vague answer {i}."}],
                "score_chosen": 8.0, "score_rejected": 3.0}

    train = [row(i, f"Helpful question {i}?") for i in range(n)] + [row(n, shared_prompt)]
    test = [row(100 + i, f"Held-out helpful question {i}?") for i in range(3)]
    DatasetDict({"train_prefs": Dataset.from_list(train), "test_prefs": Dataset.from_list(test)}).save_to_disk(str(out))
    return out


def test_mix_by_weight_is_seeded_keeps_tests_apart_and_lists_sources(tmp_path):
    cai = _cai_dataset(tmp_path / "cai", 40, "cai", 0.2)
    cai_test = _rows(cai, "test_prefs")
    helpful = _helpful_set(tmp_path / "helpful", 30, cai_test[0]["prompt"][0]["content"])
    out = tmp_path / "mix"
    _invoke(["data", "mix", cai, helpful, "--weights", "0.85,0.15", "--out", out, "--seed", "1"])
    train, test = _rows(out, "train_prefs"), _rows(out, "test_prefs")
    by_source = {name: [r for r in train if r["source"] == name] for name in ("cai", "helpful")}
    n_cai = len(_rows(cai, "train_prefs"))
    # as large as possible without repeating a cai row: all of cai's train is 85%
    assert len(by_source["cai"]) == n_cai and len(by_source["helpful"]) == round(0.15 * n_cai / 0.85)
    # tests are kept whole, and the helpful train row sharing a cai test prompt is dropped
    assert len(test) == len(cai_test) + 3
    test_prompts = {r["prompt"][0]["content"] for r in test}
    assert not test_prompts & {r["prompt"][0]["content"] for r in train}
    # the implicit-prompt rows became cai's explicit form, ids namespaced by source
    h = by_source["helpful"][0]
    assert h["prompt"][0]["role"] == "user" and len(h["prompt"]) == 1 and h["chosen"][0]["role"] == "assistant"
    assert h["pair_id"].startswith("helpful:") and "chosen_toxicity" not in h       # not in every source: left out
    front = card(out)
    assert [s["name"] for s in front["sources"]] == ["cai", "helpful"] and front["strategy"] == "mix"
    assert front["sources"][0]["weight"] == 0.85 and front["sources"][1]["test_rows"] == 3
    assert front["dropped"] == {"prompt also in the test split": 1}
    assert "## Sources" in (out / "README.md").read_text()

    _invoke(["data", "mix", cai, helpful, "--weights", "0.85,0.15", "--out", tmp_path / "again", "--seed", "1"])
    assert _rows(tmp_path / "again", "train_prefs") == train
    _invoke(["data", "mix", cai, helpful, "--weights", "0.85,0.15", "--out", tmp_path / "other", "--seed", "2"])
    other = _rows(tmp_path / "other", "train_prefs")
    assert [r["pair_id"] for r in other] != [r["pair_id"] for r in train]
    assert _rows(tmp_path / "other", "test_prefs") == test
    _invoke(["data", "validate", out])


def test_mix_errors_are_one_line(tmp_path):
    cai = _cai_dataset(tmp_path / "cai", 10, "cai", 0.2)
    result = _invoke(["data", "mix", cai, cai, "--weights", "0.5", "--out", tmp_path / "x"], code=2)
    assert result.output.strip() == "error: --weights: 1 weights for 2 datasets"
    result = _invoke(["data", "mix", cai, cai, "--weights", "a,b", "--out", tmp_path / "x"], code=2)
    assert "expected numbers separated by commas" in result.output
    result = _invoke(["data", "mix", cai, "--out", tmp_path / "x"], code=2)
    assert result.output.strip() == "error: DATASETS: give at least two datasets to mix, got 1"
    result = _invoke(["data", "mix", cai, cai, "--weights", "1,0", "--out", tmp_path / "x"], code=2)
    assert result.output.strip() == "error: --weights: every weight must be above 0, got 1,0"
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "train.jsonl").write_text('{"question": "q"}\n')
    result = _invoke(["data", "mix", cai, bad, "--out", tmp_path / "x"], code=2)
    assert result.output.strip().startswith(f"error: {bad / 'train.jsonl'}: line 1: chosen: missing")
