"""The instance lock: one owner per instance.

An exclusive flock on `$LIMA_HOME/_locks/NAME.lock`. The host agent holds it for its
whole life (`limactl start` takes it, then hands its open file description to the host
agent it spawns, so there is no moment without an owner); every command that changes a
stopped instance (create, delete, edit, clone, rename, factory-reset, disk, ...) takes
it for the time of the change. The kernel releases it when its holder dies, kill -9
included.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

from pylima import dirs
from pylima.errors import LockError

log = logging.getLogger("pylima")

LOCKS_DIR = "_locks"


def lock_path(name: str) -> Path:
    return dirs.lima_home() / LOCKS_DIR / f"{name}.lock"


def _open(name: str) -> int:
    path = lock_path(name)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)


def try_lock(name: str) -> int | None:
    """The locked file descriptor, or None when another process holds the lock."""
    fd = _open(name)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def lock(name: str, timeout: float = 5.0, *, waiting: str | None = None) -> int:
    """Take the lock, waiting up to `timeout` seconds (saying so once, `waiting`);
    LockError when it stays taken."""
    deadline = time.monotonic() + timeout
    said = False
    while True:
        fd = try_lock(name)
        if fd is not None:
            return fd
        if time.monotonic() >= deadline:
            holders = lock_holders(name)
            who = f" (process {', '.join(map(str, holders))})" if holders else ""
            raise LockError(f"instance `{name}` is busy: another process is working on "
                            f"it{who}", hint="retry when it has finished, or stop the "
                            "instance first if it is running")
        if not said and timeout >= 1:
            log.info("%s", waiting or f"Waiting for another process working on instance "
                     f"`{name}` to finish")
            said = True
        time.sleep(0.05)


@contextlib.contextmanager
def instance_lock(name: str, timeout: float = 5.0) -> Iterator[None]:
    """Hold instance NAME's lock for the block."""
    fd = lock(name, timeout)
    try:
        yield
    finally:
        os.close(fd)


def is_locked(name: str) -> bool:
    """Whether some process holds instance NAME's lock. Creates nothing: `limactl
    list` asks it for every stopped instance, and an instance never locked has no
    lock file."""
    try:
        fd = os.open(lock_path(name), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def processes_using(paths: list[Path], prefixes: list[Path] = ()) -> list[int]:  # type: ignore[assignment]
    """Pids (other than ours) with one of `paths` open, or a file under one of the
    directories `prefixes` (their open descriptors, from /proc; a holder of the
    instance lock has the lock file open)."""
    wanted = {str(p) for p in paths}
    dirs_ = [str(p).rstrip("/") + "/" for p in prefixes]
    me = os.getpid()
    out = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            fds = os.scandir(f"/proc/{entry.name}/fd")
        except OSError:
            continue
        with fds:
            for fd in fds:
                try:
                    target = os.readlink(fd.path)
                except OSError:
                    continue
                if target in wanted or any(target.startswith(d) for d in dirs_):
                    out.append(int(entry.name))
                    break
    return out


def lock_holders(name: str) -> list[int]:
    """The processes that have instance NAME's lock file open while it is locked."""
    if not is_locked(name):
        return []
    return processes_using([lock_path(name)])
