"""Download/build progress for a person: a bar with bytes, speed and ETA on a terminal,
periodic log lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import Any


class TerminalBar:
    def __init__(self, label: str = "Downloading") -> None:
        self.label = label
        self.start = time.monotonic()
        self.last_draw = 0.0

    def __call__(self, done: int, total: int | None) -> None:
        from pylima.config.units import format_size

        now = time.monotonic()
        finished = total is not None and done >= total
        if not finished and now - self.last_draw < 0.1:
            return
        self.last_draw = now
        elapsed = max(now - self.start, 1e-6)
        speed = done / elapsed
        if total:
            frac = min(done / total, 1.0)
            width = 30
            bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
            eta = (total - done) / speed if speed > 0 else 0
            line = (f"{self.label} [{bar}] {format_size(done)}/{format_size(total)} "
                    f"{format_size(speed)}/s ETA {int(eta)}s")
        else:
            line = f"{self.label} {format_size(done)} {format_size(speed)}/s"
        sys.stderr.write("\r" + line.ljust(78))
        if finished:
            sys.stderr.write("\n")
        sys.stderr.flush()


def download_progress() -> Any:
    if sys.stderr.isatty():
        return TerminalBar()
    from pylima.images.download import ProgressLogger

    return ProgressLogger("the image")
