"""`nas.malloc`: freed memory kept for reuse, so large blocks stop faulting in every step.

Each case runs in a fresh Python process (malloc settings are process-wide) and counts the
minor page faults of allocating, touching and freeing the same 80 MB block 20 times, which
is what a CPU training step does with its activations, after 10 such rounds to let the heap
settle (torch's 64-byte-aligned blocks do not fit exactly into the hole the last one left
until a few holes have merged; in training that is the first steps). Faults are counted,
not timed.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="mallopt settings are glibc's; elsewhere keep_freed_memory() is a documented no-op",
)

BLOCK_MB, WARMUP, ROUNDS = 80, 10, 20
PAGES_PER_BLOCK = BLOCK_MB * 1024 * 1024 // 4096

PROBE = f"""
import json, resource, sys, threading
import torch
from nas.malloc import keep_freed_memory

def rounds(n):
    for _ in range(n):
        x = torch.empty({BLOCK_MB} * 1024 * 1024, dtype=torch.uint8)
        x.fill_(1)  # touch every page
        del x

def churn():
    rounds({WARMUP})
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    rounds({ROUNDS})
    out["faults"] = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

out = {{"applied": keep_freed_memory()}}
if sys.argv[1] == "thread":
    side = threading.Thread(target=churn); side.start(); side.join()
else:
    churn()
print(json.dumps(out))
"""


def probe(where: str, keep: bool) -> dict:
    env = {**os.environ, "NAS_KEEP_FREED_MEMORY": "1" if keep else "0"}
    done = subprocess.run([sys.executable, "-c", PROBE, where], env=env, capture_output=True, text=True,
                          check=True, timeout=120)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_by_default_glibc_faults_a_large_block_in_again_every_time():
    default = probe("main", keep=False)
    assert default["applied"] is False  # NAS_KEEP_FREED_MEMORY=0 leaves glibc alone
    assert default["faults"] > ROUNDS * PAGES_PER_BLOCK // 2


def test_with_freed_memory_kept_the_main_thread_reuses_the_block():
    kept = probe("main", keep=True)
    assert kept["applied"] is True
    assert kept["faults"] < PAGES_PER_BLOCK // 10  # far less than one block's pages over 20 rounds


def test_a_side_thread_faults_the_block_in_again_even_with_freed_memory_kept():
    # Why trials train on their Ray worker's main thread (nas.trials.runner.TrialRun): other
    # threads' heaps hold at most 64 MB, so larger blocks are mapped whatever the settings.
    side = probe("thread", keep=True)
    assert side["applied"] is True
    assert side["faults"] > ROUNDS * PAGES_PER_BLOCK // 2
