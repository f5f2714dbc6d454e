"""Start and stop real vLLM OpenAI-compatible servers for tests (127.0.0.1, free ports, the tiny model)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from support.vllm_env import free_port, vllm_env


def start_server(model_dir: str, cache: Path, *args: str, name: str = "tiny", max_model_len: int = 512,
                 cores: str | None = None) -> tuple:
    """Popen a vLLM server in its own process group (eager, prefix caching, `args` added; `cores`: pinned to them
    with taskset); returns (process, base URL ending in /v1, log file)."""
    port = free_port()
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
           "--served-model-name", name, "--host", "127.0.0.1", "--port", str(port),
           "--enforce-eager", "--max-model-len", str(max_model_len), "--enable-prefix-caching", *args]
    if cores is not None:
        cmd = ["taskset", "-c", cores, *cmd]
    env = {**os.environ, **vllm_env(cache), "VLLM_CPU_KVCACHE_SPACE": "1"}
    log_file = cache / "server.log"
    with open(log_file, "w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return proc, f"http://127.0.0.1:{port}/v1", log_file


@contextmanager
def openai_server(model_dir, cache: Path, *args: str, name: str = "tiny", max_model_len: int = 512,
                  timeout: float = 300):
    """A vLLM server on `model_dir` served as `name`, on a free port: yields its base URL (ending in /v1) and
    stops its whole process group afterwards."""
    proc, url, log_file = start_server(model_dir, cache, *args, name=name, max_model_len=max_model_len)
    try:
        wait_healthy(proc, url.removesuffix("/v1") + "/health", log_file, timeout)
        yield url
    finally:
        kill_group(proc)


def wait_healthy(proc, url: str, log_file: Path, timeout: float) -> None:
    """Wait for `url` to answer 200; fail the test with the server's log if it exits or takes too long."""
    import httpx2 as httpx

    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            pytest.fail(f"vLLM server exited with {proc.returncode}:\n" + log_file.read_text()[-3000:])
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"vLLM server not healthy after {timeout} s:\n" + log_file.read_text()[-3000:])
        time.sleep(1)


def kill_group(proc, first: int = signal.SIGTERM) -> None:
    """Signal the server's process group (API server, engine core, worker); SIGKILL whatever outlives 20 s."""
    group = proc.pid                     # start_new_session: the group id is the leader's pid
    for sig in (first, signal.SIGKILL):
        try:
            os.killpg(group, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and _group_alive(group, proc):
            time.sleep(0.2)
        if not _group_alive(group, proc):
            break
    proc.wait(10)


def _group_alive(group, proc) -> bool:
    proc.poll()                          # reap the leader so it does not count as alive
    try:
        os.killpg(group, 0)
        return True
    except ProcessLookupError:
        return False
