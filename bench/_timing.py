"""Timing helper shared by the benchmarks (they run as scripts from this folder)."""

from __future__ import annotations

import statistics
import subprocess
import time


def median_seconds(argv: list[str], env: dict[str, str], runs: int) -> float:
    """Median wall time of `runs` runs of argv (output discarded, failures raise)."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)
