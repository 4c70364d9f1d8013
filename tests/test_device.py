"""device.py's CPU defaults: glibc's malloc keeps freed memory (keep_freed_memory), and the user's MALLOC_*
variables win. The AMP, TF32 and determinism settings: test_gpu_path.py."""

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
