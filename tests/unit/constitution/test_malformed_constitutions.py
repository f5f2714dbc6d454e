"""Every way a hand-written constitution can be wrong gives one located line and exit 2, never a traceback."""

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cai.cli.main import app

# Line numbers below refer to this document.
BASE = """\
name: test
sampling: {rounds: 2, strategy: uniform}
principles:
- id: first
  critique: Is it harmful?
  revision: Make it harmless.
- id: second
  critique: Is it honest?
  revision: Make it honest.
  weight: 2.0
few_shot:
- - {role: user, content: hi}
  - {role: assistant, content: hello}
"""


def base(old: str, new: str) -> str:
    assert old in BASE
    return BASE.replace(old, new, 1)


DISABLED = base("  revision: Make it harmless.\n", "  revision: Make it harmless.\n  enabled: false\n").replace(
    "  weight: 2.0\n", "  weight: 2.0\n  enabled: false\n"
)

# (case id, file content, text that must appear in one error line: the line number and field)
CASES = [
    ("tab-indent", base("  critique: Is it harmful?", "\tcritique: Is it harmful?"),
     "line 5: invalid YAML: found character '\\t'"),
    ("bad-indent", base("  revision: Make it harmless.", "     revision: Make it harmless."), "line 6: invalid YAML"),
    ("under-indent", base("  revision: Make it harmless.", " revision: Make it harmless."), "line 6: invalid YAML"),
    ("duplicate-key", base("  revision: Make it harmless.", "  revision: Make it harmless.\n  revision: again"),
     'line 7: invalid YAML: found duplicate key "revision"'),
    ("duplicate-principle-id", base("id: second", "id: first"),
     "line 7: principles[1] (id 'first'): id: duplicate id 'first', already used by principles[0]"),
    ("empty-critique", base("Is it harmful?", '"   "'),
     "line 5: principles[0] (id 'first'): critique: must not be empty"),
    ("missing-revision", base("  revision: Make it honest.\n", ""),
     "line 7: principles[1] (id 'second'): revision: required field is missing"),
    ("weight-zero", base("weight: 2.0", "weight: 0"),
     "line 10: principles[1] (id 'second'): weight: must be greater than 0"),
    ("weight-negative", base("weight: 2.0", "weight: -1.5"),
     "line 10: principles[1] (id 'second'): weight: must be greater than 0"),
    ("weight-string", base("weight: 2.0", "weight: abc"),
     "line 10: principles[1] (id 'second'): weight: must be a finite number, got 'abc'"),
    ("unknown-key-typo", base("weight: 2.0", "wieght: 2.0"),
     "line 10: principles[1] (id 'second'): wieght: unknown key (did you mean 'weight'?)"),
    ("unknown-top-level-key", base("few_shot:", "fewshot:"),
     "line 11: fewshot: unknown key (did you mean 'few_shot'?)"),
    ("bad-slug-id", base("id: first", "id: First Rule"),
     "line 4: principles[0] (id 'First Rule'): id: 'First Rule' is not a slug"),
    ("tags-not-a-list", base("  weight: 2.0", "  tags: honest\n  weight: 2.0"),
     "line 10: principles[1] (id 'second'): tags: must be a list"),
    ("enabled-not-bool", base("  weight: 2.0", "  enabled: maybe"),
     "line 10: principles[1] (id 'second'): enabled: must be true or false"),
    ("missing-principles", "name: test\n", "principles: required field is missing"),
    ("missing-name", base("name: test\n", ""), "name: required field is missing"),
    ("empty-principles", "name: test\nprinciples: []\n", "line 2: principles: must not be empty"),
    ("principles-not-a-list", "name: test\nprinciples: {id: a}\n", "line 2: principles: must be a list"),
    ("principle-not-a-mapping", "name: test\nprinciples:\n- just text\n", "line 3: principles[0]: must be a mapping"),
    ("all-disabled", DISABLED, "line 3: principles: no principle is enabled"),
    ("rounds-zero", base("rounds: 2", "rounds: 0"), "line 2: sampling.rounds: must be at least 1, got 0"),
    ("rounds-not-int", base("rounds: 2", "rounds: two"), "line 2: sampling.rounds: must be a whole number"),
    ("unknown-strategy", base("strategy: uniform", "strategy: random"),
     "line 2: sampling.strategy: must be one of 'uniform' or 'weighted', got 'random'"),
    ("few-shot-starts-with-assistant",
     base("- - {role: user, content: hi}\n  - {role: assistant, content: hello}",
          "- - {role: assistant, content: hi}\n  - {role: user, content: hello}"),
     "line 12: few_shot[0][0].role: expected 'user'"),
    ("few-shot-not-alternating", base("  - {role: assistant, content: hello}", "  - {role: user, content: hello}"),
     "line 13: few_shot[0][1].role: expected 'assistant'"),
    ("few-shot-odd-length", base("  - {role: assistant, content: hello}\n", ""),
     "line 12: few_shot[0]: a dialogue needs user/assistant pairs"),
    ("few-shot-wrong-role", base("role: assistant", "role: bot"),
     "line 13: few_shot[0][1].role: must be one of 'user', 'assistant' or 'system', got 'bot'"),
    ("few-shot-empty-content", base("content: hello", "content: ''"),
     "line 13: few_shot[0][1].content: must not be empty"),
    ("few-shot-not-nested", base("- - {role: user, content: hi}\n  - {role: assistant, content: hello}",
                                 "- {role: user, content: hi}"), "line 12: few_shot[0]: must be a list"),
    ("empty-file", "", "file is empty"),
    ("only-comments", "# nothing here\n", "file is empty"),
    ("top-level-list", "- name: test\n- principles: []\n",
     "line 1: top level must be a mapping (name:, principles:, ...), got a list"),
    ("top-level-scalar", "just some words\n", "line 1: top level must be a mapping"),
    ("binary", bytes(range(256)) * 4, "not a UTF-8 text file"),
    ("nul-bytes", b"name: test\x00\n", "contains NUL bytes"),
]


@pytest.mark.parametrize("content, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_constitution_gives_one_located_line(tmp_path, content, expected):
    path = tmp_path / "bad.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    result = CliRunner().invoke(app, ["constitution", "validate", str(path)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.splitlines()
    assert lines and all(line.startswith(f"error: {path}: ") for line in lines), result.stderr
    assert any(expected in line for line in lines), result.stderr
    assert result.stdout == ""


def test_missing_file_and_directory(tmp_path):
    result = CliRunner().invoke(app, ["constitution", "validate", str(tmp_path / "nope.yaml"), str(tmp_path)])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"error: {tmp_path / 'nope.yaml'}: file not found",
        f"error: {tmp_path}: is a directory, expected a YAML file",
    ]


def test_several_problems_are_all_reported_in_file_order(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(base("id: second", "id: first").replace("weight: 2.0", "weight: 0").replace("Is it harmful?", "''"))
    result = CliRunner().invoke(app, ["constitution", "validate", str(path)])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"error: {path}: line 5: principles[0] (id 'first'): critique: must not be empty",
        f"error: {path}: line 7: principles[1] (id 'first'): id: duplicate id 'first', already used by principles[0]",
        f"error: {path}: line 10: principles[1] (id 'first'): weight: must be greater than 0, got 0",
    ]


def test_real_command_exits_2_without_traceback(tmp_path):
    """The installed `cai` script, in a fresh process, as a user would run it."""
    cai = Path(sys.executable).with_name("cai")
    bad = [tmp_path / f"{name}.yaml" for name, *_ in CASES[:4]]
    for path, (_, content, _) in zip(bad, CASES):
        path.write_text(content)
    (tmp_path / "binary.yaml").write_bytes(bytes(range(256)))
    result = subprocess.run([str(cai), "constitution", "validate", *map(str, bad), str(tmp_path / "binary.yaml")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "Traceback" not in result.stdout + result.stderr
    assert len(result.stderr.splitlines()) == 5
    assert all(line.startswith("error: ") for line in result.stderr.splitlines())
