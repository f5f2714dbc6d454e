"""`cai constitution ...` through the real CLI app, on real files."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from cai.cli.main import app
from cai.constitution import load_constitution
from cai.paths import shipped_dir

SHIPPED = shipped_dir("constitution")

SMALL = """\
# keep this comment
name: small
principles:
- id: alpha
  critique: Is it harmful?
  revision: Make it harmless.
  tags: [harmless]
  weight: 1.0
  enabled: true
- id: beta
  critique: Is it honest?
  revision: Make it honest.
  tags: [honest]
  weight: 2.0
  enabled: true
"""


def cai(*args: str):
    result = CliRunner().invoke(app, ["constitution", *map(str, args)])
    assert "Traceback" not in result.output
    return result


@pytest.fixture
def small(tmp_path) -> Path:
    path = tmp_path / "small.yaml"
    path.write_text(SMALL)
    return path


def test_validate_shipped_constitutions():
    hhh, harmless = SHIPPED / "hhh.yaml", SHIPPED / "harmless.yaml"
    result = cai("validate", hhh, harmless)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"ok: {hhh} (16 principles, 16 enabled, 4 few-shot dialogues)",
        f"ok: {harmless} (8 principles, 8 enabled, 2 few-shot dialogues)",
    ]


def test_validate_reports_good_and_bad_files(small, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(SMALL.replace("weight: 2.0", "weight: 0"))
    result = cai("validate", small, bad)
    assert result.exit_code == 2
    assert result.stdout == f"ok: {small} (2 principles, 2 enabled, 0 few-shot dialogues)\n"
    assert result.stderr == f"error: {bad}: line 14: principles[1] (id 'beta'): weight: must be greater than 0, got 0\n"


def test_list_shows_a_table(small):
    result = cai("list", small)
    assert result.exit_code == 0
    for text in ("alpha", "beta", "enabled", "harmless", "Is it honest?", "2 rounds, uniform"):
        assert text in result.stdout


def test_show_prints_one_principle_in_full(small):
    result = cai("show", small, "beta")
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [
        "id: beta", "enabled: true", "weight: 2", "tags: honest",
        "critique: Is it honest?", "revision: Make it honest.",
    ]


@pytest.mark.parametrize("command", ["show", "remove", "enable", "disable", "edit"])
def test_unknown_id_is_one_line_naming_file_and_id(small, command):
    extra = ["--weight", "2"] if command == "edit" else []
    result = cai(command, small, "alpah", *extra)
    assert result.exit_code == 2
    assert result.stderr == f"error: {small}: no principle with id 'alpah' (did you mean 'alpha'?)\n"
    assert small.read_text() == SMALL


def test_add_edit_disable_enable_remove_round_trip(small):
    assert cai("add", small, "--id", "gamma", "--critique", "Is it kind?", "--revision", "Make it kind.",
               "--tags", "helpful, tone", "--weight", "0.5", "--disabled").exit_code == 0
    gamma = load_constitution(small).principles[-1]
    assert (gamma.id, gamma.tags, gamma.weight, gamma.enabled) == ("gamma", ["helpful", "tone"], 0.5, False)

    result = cai("edit", small, "gamma", "--critique", "Is it kinder?", "--tags", "", "--id", "kindness")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"updated: {small}: principle 'kindness' (critique, tags, id)\n"
    assert cai("enable", small, "kindness").exit_code == 0
    assert cai("disable", small, "alpha").exit_code == 0
    c = load_constitution(small)
    assert [(p.id, p.enabled, p.tags) for p in c.principles] == [
        ("alpha", False, ["harmless"]), ("beta", True, ["honest"]), ("kindness", True, []),
    ]
    assert cai("remove", small, "kindness").stdout == f"removed: {small}: principle 'kindness'\n"
    assert small.read_text().startswith("# keep this comment\n")
    assert cai("enable", small, "alpha").exit_code == 0
    assert small.read_text() == SMALL


def test_add_duplicate_id_is_refused(small):
    result = cai("add", small, "--id", "beta", "--critique", "c?", "--revision", "r.")
    assert result.exit_code == 2
    assert result.stderr == f"error: {small}: a principle with id 'beta' already exists; choose another id\n"
    assert small.read_text() == SMALL


@pytest.mark.parametrize(
    "args, message",
    [
        (["edit", "{path}", "beta", "--weight", "0"],
         "line 14: principles[1] (id 'beta'): weight: must be greater than 0"),
        (["edit", "{path}", "beta", "--id", "Beta!"], "id: 'Beta!' is not a slug"),
        (["edit", "{path}", "beta"], "nothing to change"),
        (["add", "{path}", "--id", "x", "--critique", " ", "--revision", "r"], "critique: must not be empty"),
        (["disable", "{path}", "beta"], "no principle is enabled"),
        (["remove", "{path}", "beta"], "no principle is enabled"),
    ],
)
def test_refused_changes_leave_the_file_unchanged(small, args, message):
    assert cai("disable", small, "alpha").exit_code == 0  # allowed: beta stays enabled
    before = small.read_bytes()
    result = cai(*[a.format(path=small) for a in args])
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {small}: ") and message in lines[0]
    assert small.read_bytes() == before


def test_new_writes_a_valid_starter_and_never_overwrites(tmp_path):
    path = tmp_path / "mine.yaml"
    result = cai("new", path, "--name", "mine")
    assert result.exit_code == 0
    assert cai("validate", path).stdout.startswith(f"ok: {path} (2 principles, 2 enabled")
    assert load_constitution(path).name == "mine"
    before = path.read_text()
    again = cai("new", path)
    assert again.exit_code == 2
    assert again.stderr == f"error: {path}: already exists; refusing to overwrite it\n"
    assert path.read_text() == before
