"""A bad setting is one line that names the flag the user typed, exit 2, before any model loads."""

from __future__ import annotations

import pytest
from support import REPO, cli

HHH = str(REPO / "constitution" / "hhh.yaml")


@pytest.mark.parametrize("args,line", [
    (["generate", "-c", HHH, "--batch-size", "0"], "error: --batch-size: must be at least 1, got 0"),
    (["generate", "-c", HHH, "--rounds", "-1"], "error: --rounds: must be at least 0, got -1"),
    (["generate", "-c", HHH, "--on-long", "cut"],
     "error: --on-long: unknown value 'cut'; choose one of skip, truncate"),
    (["generate", "-c", HHH, "--shard", "3/2"], "error: --shard: shard '3/2': shard index must satisfy"),
    (["generate", "-c", HHH, "--engine", "openai", "--model", "m"], "error: --base-url: needed with --engine openai"),
    (["generate", "-c", HHH, "--engine", "openai", "--base-url", "http://h/v1"],
     "error: --model: needed with --engine"),
    (["generate", "-c", HHH, "--engine", "openai", "--model", "m", "--base-url", "http://a:8000/v1",
      "--base-url", "http://b:8000/v1,htp://c:8000/v1"],
     "error: --base-url: 'htp://c:8000/v1': needs http:// or https:// in front"),
    (["generate", "-c", HHH, "--engine", "openai", "--model", "m", "--base-url", "http://a:80000/v1"],
     "error: --base-url: 'http://a:80000/v1': not a URL (Port out of range 0-65535)"),
    (["generate", "-c", HHH, "--engine", "openai", "--model", "m", "--base-url", "http://a:8000/v1,,http://b/v1"],
     "error: --base-url: '': empty (a stray comma?)"),
    (["generate", "-c", HHH, "--engine", "openai", "--model", "m", "--base-url", "http://:8000/v1"],
     "error: --base-url: 'http://:8000/v1': has no host"),
    (["generate", "-c", HHH, "--engine", "openai", "--model", "m", "--base-url", "http://a/v1,http://a/v1/"],
     "error: --base-url: 'http://a/v1': given twice"),
    (["generate", "-c", HHH, "--engine", "openai", "--model", "m", "--base-url", "http://a/v1", "--concurrency", "0"],
     "error: --concurrency: must be at least 1, got 0"),
    (["generate", "-c", HHH, "--chat-template", "/no/such/template.jinja"],
     "error: --chat-template: /no/such/template.jinja: cannot read (FileNotFoundError)"),
    (["generate", "-c", HHH, "--strategy", "best"], "error: --strategy: unknown strategy 'best'"),
    (["data", "pairs", "runs/none", "--test-share", "2"], "error: --test-share: must be in [0, 1), got 2"),
    (["generate", "-c", HHH, "--replicas", "2"], "error: --replicas: applies only with --ray"),
    (["generate", "-c", HHH, "--ray", "--replicas", "0"], "error: --replicas: must be at least 1, got 0"),
    (["generate", "-c", HHH, "--engine", "openai", "--base-url", "http://h/v1", "--model", "m", "--ray"],
     "error: --ray: the openai engine runs on its server"),
    (["data", "pairs", "runs/none", "--ray"], "error: --ray: only the judge runs on Ray"),     # a bare --ray last,
    (["data", "pairs", "--ray", "runs/none"], "error: --ray: only the judge runs on Ray"),     # or before RUN
    (["train", "dpo", "--data", "runs/none", "--num-processes", "0"], "error: --num-processes: must be at least 1"),
])
def test_a_bad_setting_names_its_flag_in_one_line(args, line):
    result = cli(args, code=2)
    lines = [text for text in result.stderr.splitlines() if text.strip()]
    assert len(lines) == 1 and lines[0].startswith(line), result.stderr
