"""Helpers shared by the vLLM and OpenAI-server engine tests: the environment, free ports, a real server.

The tiny model itself comes from `tests/conftest.py` (`tiny_vllm_model_dir`:
a random Llama with head_dim 32, which vLLM's CPU attention accepts).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path


def vllm_env(cache: Path) -> dict[str, str]:
    """Variables for running vLLM in tests: offline, caches under `cache`, no usage reporting."""
    return {
        "HF_HUB_OFFLINE": "1",
        "VLLM_CACHE_ROOT": str(cache / "vllm"),
        "TORCHINDUCTOR_CACHE_DIR": str(cache / "torchinductor"),
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
    }


def free_port() -> int:
    """A port that is free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def openai_server(model_dir, cache: Path, *args: str, name: str = "tiny", timeout: float = 300):
    """vLLM's OpenAI-compatible server on `model_dir` (served as `name`, eager, prefix caching), on a free port;
    yields its base URL (ending in /v1) and stops the whole process group afterwards."""
    port = free_port()
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
           "--served-model-name", name, "--host", "127.0.0.1", "--port", str(port),
           "--enforce-eager", "--enable-prefix-caching", *args]
    env = {**os.environ, **vllm_env(cache), "VLLM_CPU_KVCACHE_SPACE": "1"}
    base = f"http://127.0.0.1:{port}"
    log_file = cache / "server.log"
    with open(log_file, "w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            problem = _wait_healthy(proc, f"{base}/health", log_file, timeout)
            if problem:
                raise RuntimeError(problem)
            yield f"{base}/v1"
        finally:
            _kill_group(proc)


def _wait_healthy(proc, url, log_file, timeout) -> str | None:
    import httpx2 as httpx

    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            return f"vLLM server exited with {proc.returncode}:\n" + log_file.read_text()[-3000:]
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return None
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            return f"vLLM server not healthy after {timeout} s:\n" + log_file.read_text()[-3000:]
        time.sleep(1)


def _kill_group(proc):
    """SIGTERM the server's process group (API server, engine core, worker); SIGKILL whatever outlives 20 s."""
    group = proc.pid                     # start_new_session: the group id is the leader's pid
    for sig in (signal.SIGTERM, signal.SIGKILL):
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
