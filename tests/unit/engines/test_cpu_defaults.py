"""vLLM's CPU defaults as pure functions: dtype from the CPU's flags, all cores, quiet logs unless asked.

These need no vllm: the engine decides them before it imports vLLM. The real engine's use of them is
tested in tests/test_engine_vllm.py and tests/test_generate_vllm.py.
"""

from __future__ import annotations

import pytest

from cai.engines.vllm import VLLMEngine, cpu_dtype, cpu_env_defaults, cpu_flags, log_env
from cai.errors import CaiError

# Trimmed /proc/cpuinfo of three machines: AVX2 only, AVX512 with BF16 (AMD Zen 4), and an Arm server.
AVX2 = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) CPU E5-2686 v4 @ 2.30GHz
flags\t\t: fpu vme de pse tsc msr pae sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 bmi2

processor\t: 1
flags\t\t: fpu vme de pse tsc msr pae sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 bmi2
"""
ZEN4 = """processor\t: 0
model name\t: AMD EPYC
flags\t\t: fpu sse sse2 avx avx2 avx512f avx512dq avx512bw avx512vl avx512_bf16 avx512_vnni
"""
ARM = """processor\t: 0
BogoMIPS\t: 2100.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid bf16 i8mm
"""


@pytest.mark.parametrize("cpuinfo,dtype", [(AVX2, "float32"), (ZEN4, "auto"), (ARM, "auto"), ("", "float32")])
def test_dtype_follows_native_bf16(cpuinfo, dtype):
    assert cpu_dtype(cpu_flags(cpuinfo)) == dtype


def test_flags_are_read_from_the_first_cpu():
    assert {"avx2", "fma"} <= cpu_flags(AVX2) and "avx512_bf16" not in cpu_flags(AVX2)
    assert cpu_dtype({"avx2", "amx_bf16", "amx_tile"}) == "auto"          # AMX alone counts too


def test_all_cores_unless_the_user_chose():
    assert cpu_env_defaults({}) == {"VLLM_CPU_NUM_OF_RESERVED_CPU": "0", "VLLM_CPU_OMP_THREADS_BIND": "auto"}
    mine = {"VLLM_CPU_NUM_OF_RESERVED_CPU": "1", "VLLM_CPU_OMP_THREADS_BIND": "0-3"}
    assert cpu_env_defaults(mine) == {}


def test_logs_are_quiet_unless_verbose_and_never_on_stdout():
    quiet = log_env({}, verbose=False)
    assert quiet["VLLM_LOGGING_LEVEL"] == "ERROR" and quiet["VLLM_LOGGING_STREAM"] == "ext://sys.stderr"
    assert log_env({}, verbose=True) == {"VLLM_LOGGING_STREAM": "ext://sys.stderr"}
    assert "VLLM_LOGGING_LEVEL" not in log_env({"VLLM_LOGGING_LEVEL": "DEBUG"}, verbose=False)


def test_unknown_dtype_is_refused_before_startup():
    with pytest.raises(CaiError, match="unknown dtype 'fp8'"):
        VLLMEngine("/m", dtype="fp8")
