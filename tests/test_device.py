"""device.py's CPU defaults: MKL's AMD code path on AMD processors only, glibc's malloc keeps freed memory
(keep_freed_memory) and the user's MALLOC_* variables win. The AMP, TF32 and determinism settings: test_gpu_path.py."""

import os
import platform
import subprocess
import sys

import pytest

from conftest import ROOT

glibc_only = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="mallopt(3) is glibc's"
)

# 64 blocks of 1 MiB, allocated, touched and freed together, 6 rounds: the minor page faults of rounds 2-6. glibc's
# defaults give the freed heap top back to the kernel after each round (~16,000 faults a round, the pages zeroed
# again); kept, the later rounds reuse it. numpy allocates with malloc.
FAULTS = """
import resource, sys
sys.path.insert(0, {root!r})
import device
import numpy as np
print("kept" if device.keep_freed_memory() else "not kept")
def round_():
    blocks = [np.ones(1 << 18, np.float32) for _ in range(64)]
    del blocks
round_()
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    round_()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) // 5)
"""


def faults_per_round(env: dict) -> tuple[str, int]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    r = subprocess.run(
        [sys.executable, "-c", FAULTS.format(root=str(ROOT))], env={**full, **env}, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    kept, faults = r.stdout.split("\n")[-3:-1]
    return kept, int(faults)


@glibc_only
def test_freed_memory_is_kept_unless_the_user_tunes_malloc():
    kept, faults = faults_per_round({})
    assert kept == "kept"
    mine, faults_mine = faults_per_round({"MALLOC_ARENA_MAX": "2"})  # any MALLOC_* of the user's: glibc's defaults
    assert mine == "not kept"
    tunables, _ = faults_per_round({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
    assert tunables == "not kept"
    assert faults_mine > 10_000  # 64 MiB touched afresh each round
    assert faults < faults_mine / 10


def test_mkl_amd_path_on_amd_only(monkeypatch):
    """MKL_DEBUG_CPU_TYPE=5 lifts MKL off its generic path on AMD; on Intel it would hold MKL to AVX2."""
    import device
    import faces

    for name in ("MKL_DEBUG_CPU_TYPE", "MKL_NUM_THREADS", "GLOG_minloglevel"):  # cpu_defaults sets them: restored
        monkeypatch.setenv(name, "recorded first, so that undo restores the value before the test")
    for vendor, expected in (("AuthenticAMD", "5"), ("GenuineIntel", None), ("", None)):
        monkeypatch.setattr(faces, "processor", lambda v=vendor: faces.Processor(v, "a CPU", frozenset()))
        monkeypatch.delenv("MKL_DEBUG_CPU_TYPE", raising=False)
        device.cpu_defaults()
        assert os.environ.get("MKL_DEBUG_CPU_TYPE") == expected, vendor
    monkeypatch.setattr(faces, "processor", lambda: faces.Processor("AuthenticAMD", "a CPU", frozenset()))
    monkeypatch.setenv("MKL_DEBUG_CPU_TYPE", "0")  # the user's value wins
    device.cpu_defaults()
    assert os.environ["MKL_DEBUG_CPU_TYPE"] == "0"


def test_processor_from_cpuinfo_or_platform():
    from faces import Processor, parse_cpuinfo

    x86 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9R14\nflags\t\t: fpu avx2 avx512f\n\n"
    x86 += "processor\t: 1\nvendor_id\t: GenuineIntel\nmodel name\t: another\n"  # only the first counts
    want = Processor("AuthenticAMD", "AMD EPYC 9R14", frozenset({"fpu", "avx2", "avx512f"}))
    assert parse_cpuinfo(x86.splitlines()) == want
    arm = "processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd\nCPU implementer\t: 0x41\n"
    assert parse_cpuinfo(arm.splitlines(), "") == Processor("", platform.machine(), frozenset())
    windows = "AMD64 Family 25 Model 97 Stepping 2, AuthenticAMD"  # platform.processor() there
    assert parse_cpuinfo([], windows) == Processor("AuthenticAMD", windows, frozenset())
