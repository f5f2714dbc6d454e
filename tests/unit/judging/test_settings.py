"""Which judge a job uses: the flags given, the job's own judge for the rest, one line for what cannot work."""

from __future__ import annotations

import pytest

from cai.errors import SettingError
from cai.judging.settings import JudgeSettings, JudgeSpec

URL = "http://127.0.0.1:8000/v1"
LOCAL_RUN = JudgeSpec("vllm", None, "/models/writer")
SERVER_RUN = JudgeSpec("openai", URL, "writer")


@pytest.mark.parametrize("given,default,expected", [
    (JudgeSpec(), LOCAL_RUN, LOCAL_RUN),                                      # nothing given: the job's judge
    (JudgeSpec(), SERVER_RUN, SERVER_RUN),                                    # a server run judges on its server
    (JudgeSpec(model="/models/big"), LOCAL_RUN, JudgeSpec("vllm", None, "/models/big")),
    (JudgeSpec(model="/models/big"), SERVER_RUN, JudgeSpec("transformers", None, "/models/big")),
    (JudgeSpec(model="big"), SERVER_RUN, JudgeSpec("transformers", None, "big")),
    (JudgeSpec(base_url="http://judge:9000/v1", model="big"), LOCAL_RUN,
     JudgeSpec("openai", "http://judge:9000/v1", "big")),                     # a base URL means a server
    (JudgeSpec(engine="openai"), SERVER_RUN, SERVER_RUN),
    (JudgeSpec(engine="openai", model="judge"), SERVER_RUN, JudgeSpec("openai", URL, "judge")),
    (JudgeSpec(engine="transformers", model="/m"), SERVER_RUN, JudgeSpec("transformers", None, "/m")),
])
def test_the_given_settings_win_and_the_jobs_judge_fills_the_rest(given, default, expected):
    assert given.resolve(default) == expected


@pytest.mark.parametrize("given,default,field,words", [
    (JudgeSpec(engine="openai"), LOCAL_RUN, "base_url", "needed with a judge server"),
    (JudgeSpec(base_url="http://judge:9000/v1"), SERVER_RUN, "model", "the name http://judge:9000/v1 serves"),
    (JudgeSpec(base_url="http://judge:9000/v1"), LOCAL_RUN, "model", "needed with a judge server"),
    (JudgeSpec(engine="transformers"), SERVER_RUN, "model", "the default judge is a server's model (writer)"),
    (JudgeSpec(engine="vllm", base_url=URL), LOCAL_RUN, "base_url", "applies only to the openai engine, not vllm"),
    (JudgeSpec(engine="tgi"), LOCAL_RUN, "engine", "unknown engine 'tgi'"),
    (JudgeSpec(base_url="127.0.0.1:8000"), LOCAL_RUN, "base_url", "needs http:// or https:// in front"),
    (JudgeSpec(base_url=f"{URL},{URL}"), LOCAL_RUN, "base_url", "given twice"),
])
def test_a_judge_that_cannot_work_is_one_line_naming_the_setting(given, default, field, words):
    with pytest.raises(SettingError) as err:
        given.resolve(default)
    assert err.value.field == field and words in err.value.message


def test_the_flags_are_named_as_the_user_typed_them(cli):
    line = cli(["data", "pairs", "no-such-run", "--judge-base-url", "judge:8000"], code=2).output
    assert line.strip() == ("error: --judge-base-url: 'judge:8000': needs http:// or https:// in front, "
                            "e.g. http://127.0.0.1:8000/v1")
    with pytest.raises(SettingError, match="judge_engine: unknown engine"):
        JudgeSettings(judge_engine="tgi")


@pytest.mark.parametrize("old,new", [("--feedback-model", "--judge-model"), ("--feedback-engine", "--judge-engine")])
def test_the_old_feedback_flags_are_refused_with_their_new_name(cli, old, new):
    line = cli(["data", "pairs", "some-run", old, "x"], code=2).output
    assert line.strip() == f"error: {old}: renamed: use {new}"
