"""The median wall time the benchmark scripts report."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time in seconds of `repeats` calls of `fn` (which must itself wait for
    its result: `jax.block_until_ready`, or a copy back to the host)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
