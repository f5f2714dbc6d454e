"""Constitution models, loading, hashing and round-trip editing on real files."""

import os
import stat
from pathlib import Path

import pytest
from pydantic import ValidationError

from cai.constitution import (
    Constitution,
    Principle,
    add_principle,
    constitution_hash,
    edit_principle,
    enabled_principles,
    get_principle,
    load_constitution,
    new_constitution,
    remove_principle,
    set_enabled,
)
from cai.errors import CaiError
from cai.paths import shipped_dir

SHIPPED = shipped_dir("constitution")

COMMENTED = """\
# top comment: keep me
name: small   # the name
version: 1
description: A test constitution.
sampling: {rounds: 2, strategy: weighted, no_repeat: true}
principles:
# --- first group
- id: alpha
  critique: Is it harmful?   # end-of-line comment
  revision: Make it harmless.
  tags: [harmless]
  weight: 1.0
  enabled: true
# --- second group
- id: beta
  revision: Make it honest.
  critique: Is it honest?
  weight: 2.0
- id: gamma
  critique: Is it helpful?
  revision: Make it helpful.
  enabled: false
# the dialogues follow
few_shot:
- - {role: user, content: hi}
  - {role: assistant, content: hello}
"""


@pytest.fixture
def small(tmp_path) -> Path:
    path = tmp_path / "small.yaml"
    path.write_text(COMMENTED)
    return path


def changed_lines(before: str, after: str) -> list[tuple[str, str]]:
    a, b = before.splitlines(), after.splitlines()
    assert len(a) == len(b)
    return [(x, y) for x, y in zip(a, b) if x != y]


# ---------------------------------------------------------------- shipped files


@pytest.mark.parametrize("name, count", [("hhh", 16), ("harmless", 8)])
def test_shipped_constitutions_load(name, count):
    c = load_constitution(SHIPPED / f"{name}.yaml")
    assert c.name == name
    assert len(c.principles) == count
    assert enabled_principles(c) == c.principles
    assert all(len(d) == 6 for d in c.few_shot)


def test_hhh_covers_helpful_honest_harmless_and_has_a_benign_example():
    c = load_constitution(SHIPPED / "hhh.yaml")
    assert {t for p in c.principles for t in p.tags} >= {"helpful", "honest", "harmless"}
    assert c.sampling.strategy == "weighted" and c.sampling.rounds == 2 and c.sampling.no_repeat
    assert 3 <= len(c.few_shot) <= 5
    critiques = " ".join(d[3].content for d in c.few_shot)
    assert "Nothing in the answer could hurt anyone" in critiques  # the benign dialogue


@pytest.mark.parametrize("name", ["hhh", "harmless"])
def test_few_shot_requests_quote_a_principle(name):
    """Few-shot turns 2 and 4 are critique/revision requests: they must match a principle word for word."""
    c = load_constitution(SHIPPED / f"{name}.yaml")
    for dialogue in c.few_shot:
        principle = next(p for p in c.principles if p.critique == dialogue[2].content)
        assert dialogue[4].content == principle.revision


@pytest.mark.parametrize("name", ["hhh", "harmless"])
def test_shipped_files_survive_a_no_op_edit_byte_for_byte(tmp_path, name):
    path = tmp_path / f"{name}.yaml"
    text = (SHIPPED / f"{name}.yaml").read_text()
    path.write_text(text)
    first = load_constitution(path).principles[0]
    edit_principle(path, first.id, weight=first.weight)
    assert path.read_text() == text


# ---------------------------------------------------------------- models and helpers


def test_models_reject_bad_values_when_built_in_code():
    p = {"id": "a", "critique": "c", "revision": "r"}
    with pytest.raises(ValidationError, match="duplicate id"):
        Constitution(name="x", principles=[p, p])
    with pytest.raises(ValidationError):
        Principle(id="a", critique="c", revision="r", weight=0)
    with pytest.raises(ValidationError):
        Principle(id="a", critique="c", revision="r", colour="red")
    c = Constitution(name="x", principles=[p])
    assert c.sampling.rounds == 2 and c.sampling.strategy == "uniform" and c.few_shot == []


def test_get_principle_names_the_file_and_id(small):
    c = load_constitution(small)
    assert get_principle(c, "beta").weight == 2.0
    with pytest.raises(CaiError) as err:
        get_principle(c, "betta")
    assert str(err.value) == f"{small}: no principle with id 'betta' (did you mean 'beta'?)"


def test_enabled_principles_skips_disabled(small):
    assert [p.id for p in enabled_principles(load_constitution(small))] == ["alpha", "beta"]


def test_hash_follows_content_not_formatting(small, tmp_path):
    reformatted = tmp_path / "other.yaml"
    reformatted.write_text(COMMENTED.replace("# top comment: keep me", "# another comment").replace("1.0", "1"))
    assert constitution_hash(small) == constitution_hash(reformatted) == constitution_hash(load_constitution(small))
    assert len(constitution_hash(small)) == 64
    edit_principle(small, "beta", weight=3)
    assert constitution_hash(small) != constitution_hash(reformatted)


# ---------------------------------------------------------------- editing


def test_edit_keeps_comments_and_key_order(small):
    edit_principle(small, "beta", weight=2.5, critique="Is it truthful?")
    after = small.read_text()
    assert changed_lines(COMMENTED, after) == [
        ("  critique: Is it honest?", "  critique: Is it truthful?"),
        ("  weight: 2.0", "  weight: 2.5"),
    ]
    assert "revision: Make it honest.\n  critique: Is it truthful?" in after  # beta's own key order


def test_rename_and_tags(small):
    edit_principle(small, "alpha", id="alpha-two", tags=["harmless", "extra"])
    c = load_constitution(small)
    assert get_principle(c, "alpha-two").tags == ["harmless", "extra"]
    assert "  tags: [harmless, extra]   " not in small.read_text()
    assert "# --- first group\n- id: alpha-two\n" in small.read_text()


def test_adding_a_key_keeps_the_following_comment_after_it(small):
    edit_principle(small, "alpha", weight=1.0)  # no-op
    edit_principle(small, "beta", tags=["honest"])
    text = small.read_text()
    assert "  weight: 2.0\n  tags: [honest]\n- id: gamma" in text


@pytest.mark.parametrize(
    "refused_edit, message",
    [
        (lambda p: edit_principle(p, "beta", weight=0),
         "line 18: principles[1] (id 'beta'): weight: must be greater than 0"),
        (lambda p: edit_principle(p, "beta", critique="  "), "principles[1] (id 'beta'): critique: must not be empty"),
        (lambda p: edit_principle(p, "beta", id="Not A Slug"), "id: 'Not A Slug' is not a slug"),
        (lambda p: edit_principle(p, "beta", id="alpha"), "a principle with id 'alpha' already exists"),
        (lambda p: edit_principle(p, "beta", colour="red"), "cannot edit field(s) colour"),
        (lambda p: edit_principle(p, "delta", weight=1), "no principle with id 'delta'"),
        (lambda p: add_principle(p, id="alpha", critique="c", revision="r"),
         "a principle with id 'alpha' already exists"),
        (lambda p: add_principle(p, id="new", critique="c", revision="r", weight=-1), "weight: must be greater than 0"),
        (lambda p: remove_principle(p, "delta"), "no principle with id 'delta'"),
        (lambda p: (set_enabled(p, "alpha", False), remove_principle(p, "beta")), "no principle is enabled"),
        (lambda p: (set_enabled(p, "alpha", False), set_enabled(p, "beta", False)), "no principle is enabled"),
    ],
)
def test_refused_edit_leaves_the_file_byte_identical(small, refused_edit, message):
    with pytest.raises(CaiError) as err:
        refused_edit(small)
    before = small.read_bytes()  # after any allowed first step of a two-step case
    assert message in str(err.value)
    assert "\n" not in str(err.value)
    assert str(err.value).startswith(f"{small}: ")
    with pytest.raises(CaiError):
        refused_edit(small)
    assert small.read_bytes() == before
    assert [p.name for p in small.parent.iterdir()] == ["small.yaml"]  # no temp file left behind


def test_refused_edit_is_byte_identical_to_the_original(small):
    with pytest.raises(CaiError, match="change refused, file unchanged"):
        edit_principle(small, "alpha", weight=0)
    assert small.read_text() == COMMENTED


def test_add_appends_before_the_comment_that_introduces_the_next_section(small):
    p = add_principle(small, id="delta", critique="Is it kind?", revision="Make it kind.", tags=["helpful"], weight=0.5)
    assert p.weight == 0.5 and p.enabled
    text = small.read_text()
    assert text.startswith("# top comment: keep me\nname: small   # the name\n")
    assert "  enabled: false\n- id: delta\n" in text
    assert "  tags: [helpful]\n  weight: 0.5\n  enabled: true\n# the dialogues follow\nfew_shot:" in text
    assert [x.id for x in load_constitution(small).principles] == ["alpha", "beta", "gamma", "delta"]


def test_add_disabled(small):
    assert add_principle(small, id="delta", critique="c?", revision="r.", enabled=False).enabled is False


def test_remove_keeps_the_section_comments(small):
    remove_principle(small, "alpha")
    text = small.read_text()
    assert "# --- first group\n# --- second group\n- id: beta" in text
    remove_principle(small, "gamma")
    assert "  weight: 2.0\n# the dialogues follow\nfew_shot:" in small.read_text()
    assert [p.id for p in load_constitution(small).principles] == ["beta"]


def test_enable_and_disable(small):
    assert set_enabled(small, "gamma", True).enabled
    assert not set_enabled(small, "alpha", False).enabled
    assert "  enabled: false\n# --- second group" in small.read_text()


def test_editing_keeps_an_indented_list_style(tmp_path):
    path = tmp_path / "indented.yaml"
    text = "name: x\nprinciples:\n  - id: a\n    critique: c?\n    revision: r.\n    weight: 1.0\n"
    path.write_text(text)
    edit_principle(path, "a", weight=2.0)
    assert path.read_text() == text.replace("1.0", "2.0")


def test_editing_an_invalid_file_is_refused(small):
    small.write_text(COMMENTED.replace("weight: 2.0", "weight: -2"))
    with pytest.raises(CaiError, match="weight: must be greater than 0"):
        edit_principle(small, "alpha", weight=3)
    assert "weight: 1.0" in small.read_text()


def test_edit_keeps_the_file_mode(small):
    small.chmod(0o640)
    edit_principle(small, "alpha", weight=3)
    assert stat.S_IMODE(small.stat().st_mode) == 0o640


def test_new_constitution_is_valid_commented_and_never_overwrites(tmp_path):
    path = tmp_path / "mine.yaml"
    c = new_constitution(path, "mine")
    assert c.name == "mine" and len(c.principles) >= 2
    text = path.read_text()
    assert text.startswith("# ") and "# or weighted" in text
    assert load_constitution(path) == c
    with pytest.raises(CaiError, match="already exists"):
        new_constitution(path)
    assert path.read_text() == text
    assert new_constitution(tmp_path / "other.yaml").name == "other"
    with pytest.raises(CaiError, match="does not exist"):
        new_constitution(tmp_path / "missing" / "x.yaml")


def test_edits_are_atomic_renames(small, monkeypatch):
    """The file is replaced in one rename, so a crash can never leave it half written."""
    replaced = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (replaced.append((src, dst)), real_replace(src, dst)))
    edit_principle(small, "alpha", weight=3)
    [(src, dst)] = replaced
    assert Path(src).parent == small.parent and Path(dst) == small
