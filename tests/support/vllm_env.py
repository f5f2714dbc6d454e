"""Helpers shared by the vLLM and OpenAI-server engine tests: the environment and free ports (a real server:
`support.vllm_server`).

The tiny model itself comes from `tests/conftest.py` (`tiny_vllm_model_dir`:
a random Llama with head_dim 32, which vLLM's CPU attention accepts).
"""

from __future__ import annotations

import socket
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
