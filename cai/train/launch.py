"""Many processes through `accelerate launch`, with named presets in recipes/accelerate/.

`cai train dpo ... --num-processes N [--accelerate-config ddp|zero2|zero3|fsdp|FILE]` validates
everything first, writes OUT/.launch-plan.json, then runs

    python -m accelerate.commands.launch [--config_file PRESET] --num_processes N ... -m cai.train.entry PLAN

Without a GPU the processes train on the CPU and talk over gloo (TrainingArguments.use_cpu),
which is how the 2-process test runs here.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from cai.errors import CaiError

PRESETS = ("ddp", "zero2", "zero3", "fsdp")


@dataclass(frozen=True)
class Preset:
    path: Path
    distributed_type: str            # accelerate's DistributedType value
    num_processes: int


def preset_path(spec: str) -> Path:
    from cai.paths import shipped_dir

    path = Path(spec).expanduser()
    if path.is_file():
        return path
    shipped = shipped_dir("recipes") / "accelerate" / f"{spec}.yaml"
    if shipped.is_file():
        return shipped
    raise CaiError(f"--accelerate-config {spec}: no such file and not a preset ({', '.join(PRESETS)})")


def load_preset(spec: str) -> Preset:
    """Parse with accelerate's own loader (the one `accelerate launch` uses)."""
    from accelerate.commands.config.config_args import load_config_from_file

    path = preset_path(spec)
    try:
        config = load_config_from_file(str(path))
    except Exception as err:                    # yaml, unknown keys, bad enum values: all one line
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise CaiError(f"{path}: not a valid accelerate config: {first}") from None
    kind = getattr(config.distributed_type, "value", str(config.distributed_type))
    return Preset(path=path, distributed_type=str(kind), num_processes=int(getattr(config, "num_processes", 1) or 1))


def check_preset(spec: str) -> Preset:
    """A preset that can run on this machine, else one line saying why."""
    preset = load_preset(spec)
    if preset.distributed_type == "DEEPSPEED" and importlib.util.find_spec("deepspeed") is None:
        raise CaiError(f"{preset.path}: DeepSpeed presets need the deepspeed package, which is not installed "
                       "(pip install deepspeed, on a machine with CUDA)")
    if preset.distributed_type == "FSDP":
        import torch

        if not torch.cuda.is_available():
            raise CaiError(f"{preset.path}: FSDP needs CUDA GPUs and none is visible; "
                           "on a CPU use --accelerate-config ddp")
    return preset


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_command(plan_file: Path, *, num_processes: int, preset: Preset | None) -> list[str]:
    import torch

    n = num_processes if num_processes > 1 or preset is None else preset.num_processes
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    if preset is not None:
        cmd += ["--config_file", str(preset.path)]
    elif n > 1:
        # torchrun-style launcher; on a CPU-only machine each process then trains on the CPU over gloo.
        cmd += ["--multi_gpu", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    cmd += ["--num_processes", str(n), "--main_process_port", str(_free_port())]
    if not torch.cuda.is_available():
        cmd += ["--num_cpu_threads_per_process", str(max(1, (os.cpu_count() or 1) // n))]
    return cmd + ["-m", "cai.train.entry", str(plan_file)]


def run_launched(plan_file: Path, *, num_processes: int, preset: Preset | None) -> None:
    """Run the launcher, echoing its output; a failure becomes one CaiError line."""
    cmd = launch_command(plan_file, num_processes=num_processes, preset=preset)
    env = dict(os.environ, CAI_LAUNCHED="1", PYTHONUNBUFFERED="1")
    try:
        proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, env=env, text=True, errors="replace")
    except OSError as err:
        raise CaiError(f"cannot start accelerate launch: {err.strerror or err}") from None
    errors: list[str] = []
    tail: list[str] = []

    def pump():
        for line in proc.stderr:
            sys.stderr.write(line)
            text = line.strip()
            if text.startswith("error: "):
                errors.append(text[len("error: "):])
            elif text:
                tail.append(text)
                del tail[:-20]

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait()
        raise
    reader.join(timeout=5)
    if code != 0:
        if errors:
            raise CaiError(errors[0])
        last = next((t for t in reversed(tail) if "Error" in t or "error" in t), tail[-1] if tail else "")
        raise CaiError(f"accelerate launch failed with exit code {code}" + (f": {last}" if last else ""))
