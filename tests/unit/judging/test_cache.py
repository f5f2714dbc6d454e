"""The judge's cache: a question asked once, answers kept as they arrive, failures asked again."""

from __future__ import annotations

import json
import math

from support.engines import FakeEngine

from cai.engines.base import LabelRead
from cai.generation.templates import Templates
from cai.judging.cache import JudgeCache
from cai.judging.judge import Judge
from cai.judging.labels import harmless_probabilities

LABELS = ["A", "B"]


def chats(*texts):
    return [[{"role": "user", "content": t}] for t in texts]


def by_length(chat, labels):
    return [math.log(len(chat[-1]["content"])), math.log(10.0)]


def test_a_question_is_asked_once_across_jobs_and_the_answers_match(tmp_path):
    path = tmp_path / "judge-cache.jsonl"
    first_engine = FakeEngine(judge=by_length)
    first = Judge(first_engine, model_key="m", cache=JudgeCache(path))
    asked = first.label_logprobs(chats("one", "two", "one"), LABELS)
    assert sum(len(c) for c in first_engine.calls) == 2                       # the repeat was not asked twice
    assert (first.stats.requests, first.stats.cache_hits) == (2, 0)
    again_engine = FakeEngine(judge=by_length)
    again = Judge(again_engine, model_key="m", cache=JudgeCache(path))         # a new job reads the file
    assert again.label_logprobs(chats("two", "one", "three"), LABELS) == [asked[1], asked[0],
                                                                          by_length(chats("three")[0], LABELS)]
    assert again_engine.calls == [chats("three")]
    assert (again.stats.requests, again.stats.cache_hits) == (1, 2)
    other = Judge(FakeEngine(judge=by_length), model_key="another-model", cache=JudgeCache(path))
    other.label_logprobs(chats("one"), LABELS)
    assert other.stats.requests == 1                                           # another judge asks again


def test_the_labels_and_the_rendered_text_are_part_of_the_question(tmp_path):
    judge = Judge(FakeEngine(judge=lambda c, labels: [-1.0] * len(labels)), model_key="m",
                  cache=JudgeCache(tmp_path / "c.jsonl"))
    judge.label_logprobs(chats("q"), ["A", "B"])
    judge.label_logprobs(chats("q"), ["B", "A"])
    judge.label_logprobs(chats("q "), ["A", "B"])
    assert judge.stats.requests == 3 and judge.stats.cache_hits == 0


class Flaky(FakeEngine):
    """Fails the conversations that say "broken", reporting each other read as it completes."""

    def label_reads(self, conversations, labels, on_result=None):
        self.calls.append(conversations)
        reads = []
        for i, chat in enumerate(conversations):
            if "broken" in chat[-1]["content"]:
                reads.append(LabelRead(error="HTTP 500: boom"))
                continue
            reads.append(LabelRead((-0.1, -3.0)))
            on_result(i, reads[-1])
        return reads


def test_a_failed_question_is_not_kept_and_is_asked_again(tmp_path):
    path = tmp_path / "c.jsonl"
    judge = Judge(Flaky(), model_key="m", cache=JudgeCache(path))
    reads = judge.label_reads(chats("fine", "broken"), LABELS)
    assert reads[1].error == "HTTP 500: boom" and judge.stats.failed == 1
    assert len(path.read_text().splitlines()) == 1
    judge.label_reads(chats("fine", "broken"), LABELS)
    assert judge.engine.calls[-1] == chats("broken") and judge.stats.cache_hits == 1


def test_a_torn_last_line_from_a_kill_is_cut_and_the_rest_kept(tmp_path):
    path = tmp_path / "c.jsonl"
    judge = Judge(FakeEngine(judge=by_length), model_key="m", cache=JudgeCache(path))
    judge.label_logprobs(chats("one", "two"), LABELS)
    with open(path, "a") as fh:
        fh.write('{"key": "abc", "logpro')                                    # killed mid-write
    cache = JudgeCache(path)
    assert len(cache.reads) == 2
    Judge(FakeEngine(judge=by_length), model_key="m", cache=cache).label_logprobs(chats("three"), LABELS)
    assert [json.loads(line)["logprobs"] for line in path.read_text().splitlines()][-1] == [
        math.log(5.0), math.log(10.0)]


def test_the_judging_questions_read_through_the_cache(tmp_path):
    engine = FakeEngine(judge=lambda chat, labels: [-0.2, -2.0])
    judge = Judge(engine, model_key="m", cache=JudgeCache(tmp_path / "c.jsonl"))
    first = harmless_probabilities(judge, Templates(), [("Q?", "An answer.")])
    again = harmless_probabilities(judge, Templates(), [("Q?", "An answer.")])
    assert first == again and judge.stats.requests == 2 and judge.stats.cache_hits == 2   # both label orders


def test_a_local_judge_rewritten_in_place_is_another_judge_and_a_server_keeps_its_answers(tmp_path):
    import os
    from types import SimpleNamespace

    from cai.judging.judge import judge_key
    from cai.judging.settings import JudgeSpec

    model = tmp_path / "judge-model"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"old weights")
    spec = JudgeSpec("transformers", None, str(model))
    engine = SimpleNamespace(model_path=str(model))
    first = judge_key(spec, engine)
    assert judge_key(spec, engine) == first
    assert judge_key(JudgeSpec("vllm", None, str(model)), engine) != first       # another engine, other numbers
    (model / "model.safetensors").write_bytes(b"new weights")                      # retrained into the same folder
    os.utime(model / "model.safetensors", ns=(1, 1))
    assert judge_key(spec, engine) != first
    served = [judge_key(JudgeSpec("openai", url, "judge"), None) for url in ("http://a:1/v1", "http://b:2/v1")]
    assert served == ["judge", "judge"]                                            # a restart on another port
