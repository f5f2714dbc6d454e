"""Prompt templates: sandboxed, strict, and every failure is one line naming the template."""

import subprocess
import sys
from pathlib import Path

import pytest

from cai.errors import CaiError
from cai.generation.templates import TEMPLATE_NAMES, Templates

CAI = [sys.executable, "-m", "cai.cli.main"]


def test_shipped_templates_render_every_stage():
    t = Templates()
    assert t.render("answer", prompt="How do I bake bread?", category="cooking") == "How do I bake bread?"
    feedback = t.render("feedback", prompt="Q", principle=type("P", (), {"critique": "Is it harmful?"})(),
                        response_a="one", response_b="two", labels=["A", "B"])
    assert "Option (A): one" in feedback and "Option (B): two" in feedback


def test_user_dir_overrides_one_template_and_falls_back_for_the_rest(tmp_path):
    (tmp_path / "answer.j2").write_text("Question: {{ prompt }}")
    t = Templates(tmp_path)
    assert t.render("answer", prompt="hi", category="") == "Question: hi"
    assert t.path("answer") == str(tmp_path / "answer.j2")
    assert t.path("critique").endswith("prompts/critique.j2")
    assert t.sha256() != Templates().sha256()


BAD_TEMPLATES = [
    ("syntax error", "answer.j2", "{{ prompt ", "answer.j2: line 1: template syntax error"),
    ("unclosed block", "critique.j2", "{% if principle %}{{ principle.critique }}",
     "critique.j2: line 1: template syntax error"),
    ("undefined variable", "answer.j2", "{{ promt }}", "answer.j2: undefined variable: 'promt' is undefined"),
    ("undefined attribute", "revision.j2", "{{ principle.revison }}", "revision.j2: undefined variable"),
    ("python internals", "answer.j2", "{{ ''.__class__.__mro__[1].__subclasses__() }}", "answer.j2: unsafe template"),
    ("globals payload", "system.j2", "{{ cycler.__init__.__globals__.os }}", "system.j2: unsafe template"),
    ("mutation in sandbox", "feedback.j2", "{{ labels.append('C') }}", "feedback.j2: unsafe template"),
    ("unknown filter", "answer.j2", "{{ prompt | shout }}",
     "answer.j2: line 1: template syntax error: No filter named 'shout'"),
]


@pytest.mark.parametrize("case,name,source,expected", BAD_TEMPLATES, ids=[c[0] for c in BAD_TEMPLATES])
def test_bad_template_fails_with_one_line_naming_it(tmp_path, case, name, source, expected):
    (tmp_path / name).write_text(source)
    with pytest.raises(CaiError) as err:
        Templates(tmp_path)
    message = str(err.value)
    assert expected in message
    assert "\n" not in message


def test_missing_prompts_dir_is_one_line(tmp_path):
    with pytest.raises(CaiError, match="--prompts-dir is not a directory"):
        Templates(tmp_path / "nope")


@pytest.mark.parametrize("name", TEMPLATE_NAMES)
def test_each_template_is_shipped(name):
    assert Path(Templates().path(name)).is_file()


def test_render_cli_reports_bad_template_without_traceback(tmp_path):
    (tmp_path / "critique.j2").write_text("{{ ''.__class__.__base__ }}")
    proc = subprocess.run(CAI + ["constitution", "render", "constitution/hhh.yaml", "--prompt", "hi",
                                 "--prompts-dir", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "critique.j2: unsafe template" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
