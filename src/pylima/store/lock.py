"""A per-instance lock so that two limactl commands cannot corrupt one instance."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator

from pylima import dirs
from pylima.errors import LockError


@contextlib.contextmanager
def instance_lock(name: str, timeout: float = 5.0) -> Iterator[None]:
    """Hold an exclusive lock on instance NAME (a file under $LIMA_HOME/_locks)."""
    lock_dir = dirs.lima_home() / "_locks"
    lock_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(lock_dir / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockError(f"instance `{name}` is busy: another limactl command is "
                                    "working on it", hint="retry when it has finished") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)
