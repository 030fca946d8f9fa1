"""Params and FLOPs of architectures, counted once per architecture hash.

Counting builds the model and runs `FlopCounterMode` (its first use takes ~2 s), so the
driver counts in a thread as soon as a plan exists: the count overlaps the trial's start
instead of holding up its first result.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

from nas.models.arch import ArchConfig


def count_costs(arch: ArchConfig) -> tuple[int, int]:
    """(params, forward FLOPs per image) of `arch`."""
    from nas.models import build_model, count_flops, count_params

    model = build_model(arch)
    return count_params(model), count_flops(model)


class CostCounter:
    """Counts each architecture's costs in one background thread; cached by hash."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nas-costs")
        self._costs: dict[str, Future[tuple[int, int]]] = {}

    def soon(self, arch: ArchConfig) -> None:
        """Start counting `arch` (once per architecture)."""
        if arch.hash not in self._costs:
            self._costs[arch.hash] = self._pool.submit(count_costs, arch)

    def __call__(self, arch: ArchConfig) -> tuple[int, int]:
        """(params, FLOPs) of `arch`, waiting for the count if it is still running."""
        self.soon(arch)
        return self._costs[arch.hash].result()
