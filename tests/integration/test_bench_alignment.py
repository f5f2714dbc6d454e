"""bench/alignment.py, CPU-sized: every stage runs on a few dozen pairs of the shipped HH-RLHF file and every
figure comes with a 95% interval. The figures themselves are noise at this size and are not asserted."""

from __future__ import annotations

import json
import subprocess
import sys

from support import REPO


def test_every_stage_runs_and_every_figure_has_an_interval(tiny_model_dir, tmp_path):
    from cai.preferences.split import read_pairs

    work = tmp_path / "alignment"
    run = subprocess.run([sys.executable, str(REPO / "bench" / "alignment.py"), "--quick", "--model",
                          str(tiny_model_dir), "--work", str(work), "--no-write"],
                         capture_output=True, text=True, timeout=1800)
    assert run.returncode == 0, run.stderr[-3000:]
    steps = json.loads((work / "steps.json").read_text())
    assert list(steps) == ["import", "split", "reward", "reward-eval", "dpo", "dpo-eval", "grpo", "grpo-eval",
                           "report"]
    assert all(step["seconds"] > 0 and step["peak_rss_mib"] > 0 for step in steps.values())
    result = json.loads((work / "results.json").read_text())
    accuracy = result["rm"]["rm_accuracy"]
    assert accuracy["n"] == result["rm_pairs"] > 0 and accuracy["ci"][0] <= accuracy["value"] <= accuracy["ci"][1]
    table = result["before_after"]
    assert table["columns"] == ["dpo", "grpo", "reward model"]
    rows = {row["name"]: row["cells"] for row in table["rows"]}
    for name in ("harmless_rate", "mean_toxicity", "toxicity_rate", "refusal_rate", "mean_reward", "win_rate"):
        for cell in rows[name][:2]:                      # DPO and GRPO against their start model
            entry = cell.get("delta") or cell["after"]
            assert entry["ci"][0] <= entry["value"] <= entry["ci"][1], (name, cell)
    assert "## Alignment" in run.stdout and "| win_rate | all |" in run.stdout
    assert 'id="before-after"' in (work / "report.html").read_text()
    # the harmful eval prompts are first turns of the held-out split, none of train's or validation's
    pairs = read_pairs(work / "dataset")
    seen = {m["content"] for s in ("train_prefs", "validation_prefs") for r in pairs[s] for m in r["prompt"]}
    asked = [json.loads(line)["prompt"] for line in (work / "prompts" / "harmful-test.jsonl").read_text().splitlines()]
    held = {r["prompt"][0]["content"] for r in pairs["test_prefs"]}
    assert asked and set(asked) <= held and not set(asked) & seen

    rerun = subprocess.run([sys.executable, str(REPO / "bench" / "alignment.py"), "--quick", "--model",
                            str(tiny_model_dir), "--work", str(work), "--no-write"],
                           capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0 and rerun.stderr.count("done earlier") == 9, rerun.stderr[-2000:]
