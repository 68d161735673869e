"""Owned children (`run_owned`, `kill_and_reap`) when another process holds their
pipes, as the SSH master holds a multiplexed client's stdio until the remote command
ends: a killed or timed-out child is reaped at once, not when the holder lets go."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

from pylima.process import kill_and_reap, run_owned, spawn_owned

# The child leaves a holder of its stdio behind (the master's part), then waits.
HOLDER = 'sleep 60 & echo $! >"$1"; exec sleep 100'


def _kill_holder(pidfile: Path) -> None:
    with contextlib.suppress(FileNotFoundError, ProcessLookupError, ValueError):
        os.kill(int(pidfile.read_text()), signal.SIGKILL)


def test_a_timeout_returns_while_the_pipes_are_held(tmp_path: Path) -> None:
    pidfile = tmp_path / "holder.pid"
    try:
        rc, out, err = asyncio.run(asyncio.wait_for(
            run_owned(["sh", "-c", HOLDER, "sh", str(pidfile)], timeout=0.5), 20))
        assert (rc, out, err) == (255, b"", b"timeout")
        os.kill(int(pidfile.read_text()), 0)  # the holder still runs: it was not waited for
    finally:
        _kill_holder(pidfile)


def test_kill_and_reap_does_not_wait_for_the_holder(tmp_path: Path) -> None:
    pidfile = tmp_path / "holder.pid"

    async def main() -> int | None:
        proc = await spawn_owned("sh", "-c", HOLDER, "sh", str(pidfile),
                                 stdin=asyncio.subprocess.PIPE,
                                 stdout=asyncio.subprocess.PIPE,
                                 stderr=asyncio.subprocess.PIPE)
        while not pidfile.exists() or not pidfile.read_text().strip():
            await asyncio.sleep(0.05)
        await asyncio.wait_for(kill_and_reap(proc), 20)
        return proc.returncode

    try:
        assert asyncio.run(main()) == -signal.SIGKILL
    finally:
        _kill_holder(pidfile)
