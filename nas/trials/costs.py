"""Params and FLOPs of architectures, counted once per architecture hash.

Counting builds the model and runs `FlopCounterMode`. It runs on the meta device, where
tensors have shapes but no data: the same counts (tests/test_driver_scale.py checks every
kind of block) for a fifth of the time (0.06-0.13 s against 0.14-0.67 s per width-1
architecture, measured here), since a 10,000-trial search meets thousands of architectures.
The driver counts in a process of its own as soon as a plan exists, so the count overlaps the
trial's start and never holds the driver's GIL (FlopCounterMode dispatches every op in
Python), and it starts from the counts the store already has (`CostCounter(known)`).
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future, ProcessPoolExecutor

from nas.models.arch import ArchConfig


def count_costs(arch: ArchConfig) -> tuple[int, int]:
    """(params, forward FLOPs per image) of `arch`."""
    import torch

    from nas.models import build_model, count_flops, count_params

    with torch.device("meta"):  # shapes only: nothing is allocated or computed
        model = build_model(arch)
    return count_params(model), count_flops(model)


def known_costs(store) -> dict[str, tuple[int, int]]:
    """(params, FLOPs) of every architecture the store has, by hash."""
    return {a.hash: (a.params, a.flops) for a in store.architectures()}


class CostCounter:
    """Counts each architecture's costs in one background process (started on first use);
    cached by hash. `close` ends the process.

    Args:
        known: costs already counted, by architecture hash (e.g. the store's architectures).
    """

    def __init__(self, known: Mapping[str, tuple[int, int]] | None = None) -> None:
        self._pool: ProcessPoolExecutor | None = None
        self._costs: dict[str, Future[tuple[int, int]]] = {}
        for arch_hash, costs in (known or {}).items():
            done: Future[tuple[int, int]] = Future()
            done.set_result(costs)
            self._costs[arch_hash] = done

    def soon(self, arch: ArchConfig) -> None:
        """Start counting `arch` (once per architecture)."""
        if arch.hash not in self._costs:
            if self._pool is None:  # spawn: a fork of a driver that runs Ray and threads is unsafe
                self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                                 initializer=_exit_with, initargs=(os.getpid(),))
            self._costs[arch.hash] = self._pool.submit(count_costs, arch)

    def __call__(self, arch: ArchConfig) -> tuple[int, int]:
        """(params, FLOPs) of `arch`, waiting for the count if it is still running."""
        self.soon(arch)
        return self._costs[arch.hash].result()

    def close(self) -> None:
        """End the counting process (counts already made stay available)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


ORPHAN_POLL_S = 1.0  # how often the counting process looks whether its driver is still there


def _exit_with(driver: int) -> None:
    """The counting process's initializer: it ends when the driver that started it is gone. A
    SIGKILLed driver runs no shutdown, and the pool's queue pipe, whose ends the spawned process
    holds too, never closes: without this it would wait for work forever (issue 26: a killed
    driver leaves no process behind)."""
    def watch() -> None:
        while True:
            time.sleep(ORPHAN_POLL_S)
            if os.getppid() != driver:
                os._exit(0)

    threading.Thread(target=watch, name="nas-costs-watch", daemon=True).start()
