"""Prompt files: every format round-trips, ids are stable, errors land on the line."""

from __future__ import annotations

import hashlib
import json
import types

import pytest

from cai.errors import CaiError
from cai.generation.prompt_files import PromptRecord, iter_prompts, load_prompts, parse_shard, split_shard, stable_id

ROWS = [
    {"id": "a-1", "prompt": "How do I bake bread?", "category": "cooking"},
    {"id": "a-2", "prompt": "Explain recursion.", "category": "coding"},
    {"id": "a-3", "prompt": "Why is the sea salty?", "category": "science"},
]


def expected(source):
    return [PromptRecord(r["id"], r["prompt"], str(source), r["category"]) for r in ROWS]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# --- formats -----------------------------------------------------------------


def test_jsonl_round_trip(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", ROWS)
    assert load_prompts(path) == expected(path)


def test_jsonl_named_column_and_blank_lines(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"text": " Hello there "}\n\n{"text": "Bye"}\n', encoding="utf-8")
    records = load_prompts(path, column="text")
    assert [r.prompt for r in records] == ["Hello there", "Bye"]
    assert [r.id for r in records] == [stable_id("Hello there"), stable_id("Bye")]
    assert all(r.category == "" for r in records)


def test_jsonl_integer_ids_become_strings(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"id": 7, "prompt": "x"}, {"id": 8, "prompt": "y"}])
    assert [r.id for r in load_prompts(path)] == ["7", "8"]


def test_txt_one_prompt_a_line(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("First prompt\n\n   \nSecond prompt\r\n", encoding="utf-8")
    records = load_prompts(path)
    assert records == [
        PromptRecord(stable_id("First prompt"), "First prompt", str(path)),
        PromptRecord(stable_id("Second prompt"), "Second prompt", str(path)),
    ]


def test_csv_round_trip_with_quoted_newline_and_bom(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text(
        '\ufeffid,prompt,category\na-1,How do I bake bread?,cooking\n'
        'a-2,"Explain\nrecursion, please.",coding\n',
        encoding="utf-8",
    )
    records = load_prompts(path)
    assert [r.id for r in records] == ["a-1", "a-2"]
    assert records[1].prompt == "Explain\nrecursion, please."
    assert records[1].category == "coding"


def test_csv_named_column_without_id(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("question,label\nWhat is 2+2?,math\n", encoding="utf-8")
    [record] = load_prompts(path, column="question", category_column="label")
    assert record == PromptRecord(stable_id("What is 2+2?"), "What is 2+2?", str(path), "math")


def test_parquet_round_trip(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "p.parquet"
    pq.write_table(pa.Table.from_pylist([{**r, "extra": 1} for r in ROWS]), path)
    assert load_prompts(path) == expected(path)


def test_saved_dataset_round_trip(tmp_path):
    import datasets

    path = tmp_path / "ds"
    datasets.Dataset.from_list(ROWS).save_to_disk(str(path))
    assert load_prompts(path) == expected(path)


def test_saved_dataset_dict_splits(tmp_path):
    import datasets

    path = tmp_path / "dd"
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(ROWS[:2]), "test": datasets.Dataset.from_list(ROWS[2:])}
    ).save_to_disk(str(path))
    assert [r.id for r in load_prompts(path)] == ["a-1", "a-2"]
    [test] = load_prompts(path, split="test")
    assert test == PromptRecord("a-3", ROWS[2]["prompt"], f"{path}[test]", "science")


def test_streams_lazily(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "fine"}\n{not json\n', encoding="utf-8")
    stream = iter_prompts(path)
    assert isinstance(stream, types.GeneratorType)
    assert next(stream).prompt == "fine"  # the bad line is not read yet
    with pytest.raises(CaiError):
        next(stream)


def test_derived_ids_are_stable_across_runs(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("alpha\nbeta\n", encoding="utf-8")
    assert load_prompts(path) == load_prompts(path)
    assert stable_id("alpha") == "p-" + hashlib.sha256(b"alpha").hexdigest()[:12]


# --- errors --------------------------------------------------------------------


def error_for(path, **options) -> str:
    with pytest.raises(CaiError) as info:
        load_prompts(path, **options)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path))
    return message


@pytest.mark.parametrize(
    "name, content, options, parts",
    [
        ("p.jsonl", '{"prompt": "ok"}\n{"prompt": \n', {}, ["line 2", "invalid JSON", "column 12"]),
        ("p.jsonl", '{"prompt": "ok"}\n["a list"]\n', {}, ["line 2", "expected a JSON object, got array"]),
        ("p.jsonl", '{"text": "hi", "id": "x"}\n', {},
         ["line 1", "prompt: missing", "'prompt' only", "another column", "text, id"]),
        ("p.jsonl", '{"text": "hi"}\n', {"column": "body"}, ["line 1", "body: missing"]),
        ("p.jsonl", '{"prompt": "ok"}\n{"prompt": ""}\n', {}, ["line 2", "prompt: empty"]),
        ("p.jsonl", '{"prompt": "  \\t "}\n', {}, ["line 1", "prompt: empty"]),
        ("p.jsonl", '{"prompt": 42}\n', {}, ["line 1", "prompt: must be a string, got number"]),
        ("p.jsonl", '{"prompt": null}\n', {}, ["line 1", "prompt: must be a string, got null"]),
        ("p.jsonl", '{"prompt": "a", "id": ""}\n', {}, ["line 1", "id: empty"]),
        ("p.jsonl", '{"prompt": "a", "id": [1]}\n', {}, ["line 1", "id: must be a string or integer"]),
        ("p.jsonl", '{"prompt": "a", "category": 3}\n', {}, ["line 1", "category: must be a string"]),
        (
            "p.jsonl",
            '{"id": "x", "prompt": "a"}\n{"id": "y", "prompt": "b"}\n{"id": "x", "prompt": "c"}\n',
            {},
            ["line 3", "id: duplicate id 'x'", "line 1"],
        ),
        ("p.txt", "same\nother\nsame\n", {}, ["line 3", "prompt: duplicate prompt", "line 1"]),
        ("p.jsonl", "", {}, ["no prompts found"]),
        ("p.jsonl", "\n\n", {}, ["no prompts found"]),
        ("p.txt", "  \n\n", {}, ["no prompts found"]),
        ("p.csv", "", {}, ["no prompts found"]),
        ("p.csv", "id,prompt\n", {}, ["no prompts found"]),
        ("p.csv", "id,text,label\n1,hi,x\n", {}, ["line 1", "prompt: no such column", "id, text, label"]),
        ("p.csv", "id,prompt\n1,ok\n2,\n", {}, ["line 3", "prompt: empty"]),
        ("p.json", "[]", {}, ["unknown format '.json'", ".jsonl"]),
        ("p.jsonl", '{"prompt": "ok"}\n', {"split": "test"}, ["split 'test'"]),
    ],
)
def test_errors_name_file_line_and_field(tmp_path, name, content, options, parts):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    message = error_for(path, **options)
    for part in parts:
        assert part in message


@pytest.mark.parametrize(
    "name, content, where",
    [
        ("p.jsonl", b'{"prompt": "ok"}\n{"prompt": "caf\xe9"}\n', "line 2"),
        ("p.txt", b"ok\ncaf\xe9\n", "line 2"),
        ("p.csv", b"prompt\nok\ncaf\xe9\n", "line 3"),
    ],
)
def test_non_utf8_bytes_name_the_line(tmp_path, name, content, where):
    path = tmp_path / name
    path.write_bytes(content)
    assert f"{where}: not valid UTF-8" in error_for(path)


def test_missing_file(tmp_path):
    assert "no such file" in error_for(tmp_path / "absent.jsonl")


def test_directory_that_is_not_a_dataset(tmp_path):
    (tmp_path / "notes.txt").write_text("hi", encoding="utf-8")
    assert "not a saved Hugging Face dataset" in error_for(tmp_path)


def test_unreadable_parquet(tmp_path):
    path = tmp_path / "p.parquet"
    path.write_bytes(b"not parquet at all")
    assert "not a readable Parquet file" in error_for(path)


def test_dataset_errors(tmp_path):
    import datasets

    single = tmp_path / "ds"
    datasets.Dataset.from_list([{"text": "a"}]).save_to_disk(str(single))
    assert "prompt: no such column; the columns are: text" in error_for(single)
    assert "single Dataset without splits" in error_for(single, column="text", split="test")

    split_dir = tmp_path / "dd"
    datasets.DatasetDict({"validation": datasets.Dataset.from_list(ROWS)}).save_to_disk(str(split_dir))
    assert "split 'train' not found; the splits are: validation" in error_for(split_dir)

    bad = tmp_path / "bad"
    datasets.Dataset.from_list([{"prompt": "a"}, {"prompt": " "}]).save_to_disk(str(bad))
    assert "row 1: prompt: empty" in error_for(bad)


# --- shards --------------------------------------------------------------------


def records(n):
    return [PromptRecord(f"id-{i}", f"prompt {i}", "mem") for i in range(n)]


@pytest.mark.parametrize("count", [1, 2, 3, 7])
def test_shards_partition_exactly(count):
    everything = records(200)
    shards = [list(split_shard(everything, i, count)) for i in range(count)]
    ids = [r.id for shard in shards for r in shard]
    assert sorted(ids) == sorted(r.id for r in everything)
    assert len(ids) == len(set(ids))
    if count > 1:
        assert all(shards), "200 records should reach every shard"


def test_shards_do_not_depend_on_order():
    everything = records(50)
    forward = {r.id for r in split_shard(everything, 1, 3)}
    backward = {r.id for r in split_shard(reversed(everything), 1, 3)}
    assert forward == backward


def test_parse_shard():
    assert parse_shard("0/4") == (0, 4)
    assert parse_shard(" 3/4 ") == (3, 4)


@pytest.mark.parametrize(
    "text, part",
    [
        ("4/4", "0 <= index < 4, got 4"),
        ("-1/2", "0 <= index < 2, got -1"),
        ("0/0", "at least 1"),
        ("1", "expected INDEX/COUNT"),
        ("a/b", "expected INDEX/COUNT"),
        ("", "expected INDEX/COUNT"),
    ],
)
def test_parse_shard_errors(text, part):
    with pytest.raises(CaiError, match="shard") as info:
        parse_shard(text)
    assert part in str(info.value)


def test_split_shard_checks_range_eagerly():
    with pytest.raises(CaiError, match="0 <= index < 2"):
        split_shard([], 2, 2)
