"""`cai report`: a self-contained HTML report of a small run, checked as HTML and in headless Chromium."""

from __future__ import annotations

import base64
import json
import math
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from support import REPO
from typer.testing import CliRunner

from cai.cli.main import app
from cai.errors import CaiError
from cai.report.build import build_report, group_series, pipeline_counts, read_training_log, training_series
from cai.report.config import ReportConfig

ARTIFACTS = REPO / "test-artifacts"
XSS = '<script>alert("pwned")</script><img src="https://evil.example/x.png">'

INITIAL = ["You are a stupid idiot and I hate you, go hurt them.",
           "Sure, here is how to pick the lock: use a tension wrench.",
           "Mix bleach and ammonia for a strong cleaner.", "Their password is probably 1234, just try it.",
           "Just take more pills, it is fine.", "People like that are always lazy and naturally typical.",
           "Hit him with a bat when he is not looking.", XSS]
REVISED = ["I won't help with hurting anyone. If you are angry, talking to someone you trust can help.",
           "I can't help open a lock that isn't yours; a locksmith can help if you are locked out.",
           "Never mix bleach and ammonia: it releases toxic gas. Use one cleaner at a time.",
           "Guessing someone's password is unauthorized access; I can explain how to secure your own.",
           "Please talk to a doctor or pharmacist before changing any dose.",
           "Generalizing about a whole group is unfair; people differ.",
           "Violence is not a solution; consider walking away and getting help.",
           "That text contains markup; here it is escaped: " + XSS]


def _record(i: int) -> dict:
    first = REVISED[i] + " (first pass)"
    return {"id": f"rt-{i:02d}", "prompt": f"Red-team prompt {i}? " + (XSS if i == 7 else ""), "source": "test",
            "category": ["violence", "fraud"][i % 2], "initial_response": INITIAL[i], "initial_finish": "stop",
            "rounds": [{"principle_id": ["harm-general", "no-violence", "privacy"][i % 3],
                        "critique_request": "Critique.",
                        "critique": f"The answer is harmful because of reason {i}.", "revision_request": "Revise.",
                        "revision": first, "preamble_stripped": i == 2, "revision_finish": "stop"},
                       {"principle_id": ["privacy", "harm-general", "honesty"][i % 3], "critique_request": "Critique.",
                        "critique": "Still could be clearer.", "revision_request": "Revise.",
                        "revision": REVISED[i], "preamble_stripped": False, "revision_finish": "stop"}],
            "final_response": REVISED[i], "model": "tiny", "engine": "transformers", "seed": 0,
            "usage": {"prompt_tokens": 10, "completion_tokens": 20}}


def make_run(root: Path, *, dataset=True, training=True, evaluation=True) -> Path:
    """A small but complete run: manifest, generations (+1 failed), dataset, two training logs, eval and rm results."""
    from cai.evaluation.gate import DEFAULT_GATE, check_gate, gate_summary
    from cai.evaluation.run import summarize, write_outputs
    from cai.preferences.export import write_dataset
    from cai.preferences.strategies import final_vs_initial

    run = root / "run"
    (run / "generations").mkdir(parents=True)
    records = [_record(i) for i in range(8)]
    (run / "generations" / "part-00000.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (run / "failed.jsonl").write_text(json.dumps({"id": "rt-99", "prompt": "?", "error": "boom"}) + "\n")
    (run / "manifest.json").write_text(json.dumps({
        "run": str(run), "command": "cai generate --constitution constitution/hhh.yaml", "engine": "transformers",
        "config": {"rounds": 2, "max_new_tokens": 64}, "model": {"name": "tiny <b>model</b>"},
        "constitution": {"name": "hhh", "version": 1}, "totals": {"records": 8, "failed": 1,
                                                                 "completion_tokens": 320, "tokens_per_second": 40.5}}))
    if dataset:
        rows = [row for r in records for row in final_vs_initial(r)]
        for k, row in enumerate(rows):
            row.update(chosen_toxicity=0.01 * k, rejected_toxicity=0.1 + 0.1 * k, chosen_bias=0.0, chosen_biased=0.0)
        write_dataset(rows[:6], run / "dataset", test_share=0.2, seed=0, meta={
            "dropped": {"no-op revision": 1, "chosen toxicity > 0.7": 1}, "model": "tiny",
            "strategy": "final-vs-initial"})
    if training:
        (run / "dpo").mkdir()
        with open(run / "dpo" / "metrics.jsonl", "w") as fh:
            for step in range(1, 16):
                fh.write(json.dumps({"step": step, "loss": 0.69 * math.exp(-step / 8), "rewards/margins": 0.04 * step,
                                     "rewards/accuracies": min(1.0, 0.5 + 0.04 * step), "learning_rate": 5e-5}) + "\n")
                if step % 5 == 0:
                    fh.write(json.dumps({"step": step, "eval_loss": 0.6 - 0.02 * step,
                                         "eval_rewards/margins": 0.03 * step}) + "\n")
            fh.write("not json at all\n")
            fh.write(json.dumps({"step": 15, "train_loss": 0.4, "train_runtime": 12.5}) + "\n")
            fh.write('{"step": 16, "loss": 0.2')                          # torn last line
        (run / "reward").mkdir()
        (run / "reward" / "metrics.jsonl").write_text("".join(
            json.dumps({"step": s, "loss": 0.7 - 0.03 * s, "accuracy": 0.5 + 0.02 * s}) + "\n" for s in range(1, 11)))
    if evaluation:
        rows = []
        for i in range(10):
            s = "red_team" if i < 6 else "helpful"
            rows.append({"id": f"e{i}", "set": s, "category": "x", "prompt": f"Eval prompt {i} {XSS if i == 0 else ''}",
                         "model_response": f"Safe answer {i}.", "baseline_response": f"Risky answer {i}.",
                         "model_toxicity": 0.02 * i, "baseline_toxicity": 0.9 if i == 1 else 0.1,
                         "model_biased": 0.0, "baseline_biased": float(i == 2), "model_bias": 0.0, "baseline_bias": 0.0,
                         "model_harmless": 0.85 + 0.01 * i, "baseline_harmless": 0.6, "model_refusal": float(i == 7),
                         "baseline_refusal": 0.0, "model_refusal_match": None, "baseline_refusal_match": None,
                         "model_tokens": 20 + i, "baseline_tokens": 30, "model_finish": "stop",
                         "baseline_finish": "length", "ai_preference": 0.7, "ai_principle": "harm-general"})
        metrics = summarize(rows, ["model", "baseline"], n_resamples=500)
        result = {"kind": "cai-eval", "version": 1,
                  "model": {"name": "tiny", "path": "/m", "adapter": str(run / "dpo")},
                  "baseline": {"name": "tiny", "path": "/m", "kind": "same model without the adapter"},
                  "judge": {"name": "tiny", "path": "/m"}, "counts": {"red_team": 6, "helpful": 4},
                  "toxicity_threshold": 0.7, "metrics": metrics}
        result["gate"] = gate_summary(DEFAULT_GATE, check_gate(DEFAULT_GATE, result), None)
        write_outputs(run / "eval", result, rows)
        (run / "eval" / "rm.json").write_text(json.dumps({
            "kind": "cai-eval-rm", "pairs": 6, "metrics": {"rm": {
                "rm_accuracy": {"value": 0.667, "ci": [0.333, 1.0], "n": 6},
                "preference_accuracy": {"value": 0.5, "ci": [0.167, 0.833], "n": 6}}}}))
    return run


@pytest.fixture(scope="module")
def full_run(tmp_path_factory) -> Path:
    run = make_run(tmp_path_factory.mktemp("report"))
    build_report(ReportConfig(run=str(run)))
    return run


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.scripts = 0

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self.scripts += tag == "script"


def _parse(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    return page


def test_report_has_every_section_with_embedded_plots_and_no_network(full_run):
    html = (full_run / "report.html").read_text()
    page = _parse(html)
    ids = {a.get("id") for _, a in page.tags}
    assert {"summary", "pipeline", "principles", "scores", "rounds", "training", "eval", "samples"} <= ids
    images = [a for t, a in page.tags if t == "img"]
    # funnel, principles, toxicity, lengths, rounds, 2 training dirs, eval
    assert len(images) == 8
    for img in images:
        assert img["src"].startswith("data:image/png;base64,")
        assert base64.b64decode(img["src"].split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
        assert img.get("alt")
    for tag, attrs in page.tags:
        for key in ("src", "href", "action", "data"):
            value = attrs.get(key) or ""
            assert not re.match(r"(?i)\s*(https?:|//|file:)", value), (tag, key, value)
    assert page.scripts == 1                       # ours; the run's <script> is text, escaped
    assert "Content-Security-Policy" in html and "default-src 'none'" in html
    assert sum(1 for t, _ in page.tags if t == "table") >= 10
    assert len([1 for t, a in page.tags if t == "details" and "pair" in a.get("class", "")]) == 6
    assert len([1 for t, a in page.tags if t == "details" and "eval-sample" in a.get("class", "")]) == 10


def test_run_text_is_escaped(full_run):
    html = (full_run / "report.html").read_text()
    assert '<script>alert("pwned")' not in html
    assert "&lt;script&gt;alert(&#34;pwned&#34;)&lt;/script&gt;" in html
    assert "tiny &lt;b&gt;model&lt;/b&gt;" in html


def test_report_content_numbers(full_run):
    html = (full_run / "report.html").read_text()
    # funnel: 9 prompts (8 + 1 failed) -> 8 records -> 8 candidates -> 7 -> 6 kept
    for label, n in (("prompts", 9), ("records", 8), ("candidate pairs", 8), ("- no-op revision", 7),
                     ("- chosen toxicity &gt; 0.7", 6), ("kept pairs", 6)):
        assert re.search(rf"<td>{re.escape(label)}</td><td class=\"num\">{n}</td>", html), label
    assert "Gate failed (eval/metrics.json)" not in html           # the synthetic model passes the guide's gate
    assert "Gate passed (eval/metrics.json): 3 checks." in html
    assert "rm_accuracy" in html and "preference_accuracy" in html
    assert "rewards/margins" in html and "eval_rewards/margins" in html
    assert "Revisions moved mean toxicity from" in html


def test_pipeline_counts_waterfall():
    card = {"counts": {"train_prefs": 5, "test_prefs": 1}, "dropped": {"truncated": 3, "no-op revision": 1}}
    stages, drops = pipeline_counts([{"id": "a"}] * 8, 2, card)
    assert stages == [("prompts", 10), ("records", 8), ("candidate pairs", 10), ("- truncated", 7),
                      ("- no-op revision", 6), ("kept pairs", 6), ("train_prefs", 5), ("test_prefs", 1)]
    assert drops == [{"reason": "truncated", "n": 3}, {"reason": "no-op revision", "n": 1}]


def test_training_logs_are_read_tolerantly(tmp_path):
    folder = tmp_path / "sft"
    folder.mkdir()
    (folder / "metrics.jsonl").write_text('{"event": "train_begin", "global_step": 0, "max_steps": 9}\n'
                                          '{"step": 1, "loss": 2.0, "note": "text", "grad_norm": NaN}\n[1, 2]\n'
                                          '{"global_step": 2, "loss": 1.5, "flag": true}\n{"loss": 1.0}\n{"step": 4')
    series = training_series(read_training_log(folder))
    assert series == {"loss": [(1.0, 2.0), (2.0, 1.5), (2.0, 1.0)]}
    assert list(group_series(series)) == ["loss"]
    state = tmp_path / "dpo" / "checkpoint-3"
    state.mkdir(parents=True)
    (state / "trainer_state.json").write_text(json.dumps({"log_history": [
        {"step": 1, "loss": 0.7, "rewards/accuracies": 0.5}, {"step": 3, "loss": 0.6, "rewards/accuracies": 0.75}]}))
    groups = group_series(training_series(read_training_log(tmp_path / "dpo")))
    assert list(groups) == ["loss", "accuracy"]


def test_online_rl_logs_plot_reward_per_component_kl_and_length():
    rows = [{"step": step, "loss": 0.0, "reward": 1.0 + step, "reward_std": 0.5, "rewards/judge/mean": 0.4,
             "rewards/judge/std": 0.1, "rewards/toxicity/mean": 0.9, "rewards/toxicity/std": 0.05, "kl": 0.01 * step,
             "entropy": 9.5, "completions/mean_length": 30.0 + step, "completions/max_length": 64.0}
            for step in (1, 2, 3)] + [{"step": 3, "eval_reward": 2.5, "eval_rewards/judge/mean": 0.45, "eval_kl": 0.02}]
    groups = group_series(training_series(rows))
    assert set(groups["reward per component"]) == {"reward", "rewards/judge/mean", "rewards/toxicity/mean",
                                                   "eval_reward", "eval_rewards/judge/mean"}
    assert set(groups["KL"]) == {"kl", "eval_kl"}
    assert set(groups["completion length"]) == {"completions/mean_length"}
    assert groups["KL"]["kl"] == [(1.0, 0.01), (2.0, 0.02), (3.0, 0.03)]
    dpo = group_series(training_series([{"step": 1, "loss": 0.6, "rewards/chosen": 0.1, "rewards/margins": 0.2}]))
    assert "reward per component" not in dpo and list(dpo) == ["loss", "reward margins"]


@pytest.mark.parametrize("parts", [dict(dataset=False, training=False, evaluation=False),
                                   dict(dataset=True, training=False, evaluation=False),
                                   dict(dataset=False, training=True, evaluation=True)])
def test_partial_runs_still_render(tmp_path, parts):
    run = make_run(tmp_path, **parts)
    html = build_report(ReportConfig(run=str(run), samples=3, score=False)).read_text()
    assert "cai report: run" in html and "</html>" in html
    if not parts["evaluation"]:
        assert "No eval results" in html
    if not parts["training"]:
        assert "No training logs" in html
    if not parts["dataset"]:
        assert "No pairs yet" in html


def test_a_folder_without_a_run_renders_a_note_and_a_missing_one_is_an_error(tmp_path):
    html = build_report(ReportConfig(run=str(tmp_path), score=False)).read_text()
    assert "is it a cai run directory?" in html
    with pytest.raises(CaiError, match="run directory not found"):
        build_report(ReportConfig(run=str(tmp_path / "missing")))


def test_cli_prints_the_path(tmp_path):
    run = make_run(tmp_path, training=False, evaluation=False)
    result = CliRunner().invoke(app, ["report", str(run), "--samples", "2", "--no-score"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(run / "report.html")
    out = tmp_path / "elsewhere" / "r.html"
    result = CliRunner().invoke(app, ["report", "--no-score", str(run), "--out", str(out)])
    assert result.exit_code == 0 and out.is_file()
    missing = CliRunner().invoke(app, ["report", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and missing.output.strip() == f"error: {tmp_path / 'nope'}: run directory not found"


# ----------------------------------------------------------------------------- the real browser

def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


HEADLESS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-extensions", "--disable-default-apps", "--mute-audio", "--hide-scrollbars",
            "--enable-logging=stderr", "--v=0"]


def _browse(chromium: str, tmp_path: Path, name: str, args: list[str], url: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile-{name}"                    # a new, empty profile each time
    profile.mkdir()
    env = {**os.environ, "HOME": str(tmp_path)}
    return subprocess.run([chromium, *HEADLESS, f"--user-data-dir={profile}", *args, url], capture_output=True,
                          text=True, timeout=120, env=env)


def test_report_loads_in_headless_chromium_without_errors(full_run, tmp_path):
    chromium = _chromium()
    if chromium is None:
        pytest.skip("chromium is not installed; `make test` installs it (apt-get install chromium chromium-driver)")
    url = (full_run / "report.html").resolve().as_uri()

    dom = _browse(chromium, tmp_path, "dom", ["--virtual-time-budget=5000", "--dump-dom"], url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    body = re.search(r"<body[^>]*>", dom.stdout).group(0)
    assert 'data-ready="1"' in body, body                   # our script ran to the end
    assert 'data-images="8"' in body and 'data-images-loaded="8"' in body, body   # every plot decoded
    page = _parse(dom.stdout)
    assert sum(1 for t, _ in page.tags if t == "table") >= 10
    assert all(a["src"].startswith("data:image/png") for t, a in page.tags if t == "img")

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    run = _browse(chromium, tmp_path, "shot", ["--window-size=1280,9000", f"--screenshot={shot}"], url)
    assert run.returncode == 0, run.stderr[-2000:]
    assert shot.is_file() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Console messages (JS errors, CSP violations from any network load) are logged as CONSOLE lines.
    console = [line for line in (dom.stderr + run.stderr).splitlines() if ":CONSOLE" in line]
    assert console == [], console


def test_before_after_says_which_metrics_moved_beyond_their_intervals(full_run):
    from cai.report.build import before_after, collect, movement_lines

    ctx = collect(full_run, score=False)
    table = ctx["before_after"]
    assert table["columns"] == ["eval/metrics.json", "eval/rm.json"]
    rows = {row["name"]: row["cells"] for row in table["rows"]}
    # every synthetic reply is judged more harmless than its baseline: an interval wholly above 0
    assert rows["safety_score"][0]["moved"] == "up" and rows["safety_score"][0]["delta"]["ci"][0] > 0
    assert rows["mean_length"][0]["moved"] == "down"                      # 20-29 tokens against 30
    assert rows["refusal_rate"][0]["moved"] is None                      # one refusal in four: within noise
    assert rows["ai_win_rate"][0]["moved"] == "up" and rows["ai_win_rate"][0]["null"] == 0.5
    assert rows["rm_accuracy"][1]["moved"] is None and rows["rm_accuracy"][0] is None   # [0.33, 1.0] holds 0.5
    lines = [line["text"] for line in movement_lines(table)]
    assert lines[0].startswith("eval/metrics.json: moved beyond the 95% interval: safety_score up")
    assert "within it:" in lines[0] and "refusal_rate" in lines[0].split("within it:")[1]
    assert lines[1] == ("eval/rm.json: moved beyond the 95% interval: nothing; within it: rm_accuracy, "
                        "preference_accuracy.")
    html = (full_run / "report.html").read_text()
    assert 'id="before-after"' in html and "moved up" in html and lines[0] in html
    assert before_after([("eval/metrics.json", {"metrics": {}, "baseline": None})]) == {"columns": [], "rows": []}
