"""swtpm, the software TPM behind `tpm: true`: found, started before QEMU (which
connects to its control socket) with Lima's options, and stopped with it. It dies
with the host agent that spawned it, like virtiofsd and QEMU."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from pathlib import Path

from pylima.drivers.qemu.argv import SWTPM_DIR, SWTPM_SOCK
from pylima.errors import LimaError
from pylima.process import kill_and_reap, spawn_owned

log = logging.getLogger("pylima.hostagent")

SWTPM_SOCKET_TIMEOUT = 10.0
SWTPM_STOP_TIMEOUT = 5.0


def find_swtpm() -> str:
    """The swtpm binary on PATH; Lima's error (with a package hint) when there is none."""
    exe = shutil.which("swtpm")
    if exe is None:
        raise LimaError('swtpm not found in PATH: exec: "swtpm": executable file not found '
                        "in $PATH",
                        hint="install swtpm (Debian/Ubuntu: `apt-get install swtpm "
                        "swtpm-tools`), or set `tpm: false`")
    return exe


def swtpm_argv(exe: str, inst_dir: Path) -> list[str]:
    """Lima's swtpm command line: a TPM 2.0 whose state lives in the instance's own
    `swtpm/` directory, ending when QEMU closes the control socket."""
    return [exe, "socket",
            "--tpmstate", f"dir={inst_dir / SWTPM_DIR}",
            "--ctrl", f"type=unixio,path={inst_dir / SWTPM_SOCK}",
            "--tpm2", "--terminate", "--log", "level=1"]


class Swtpm:
    """The swtpm process of one instance."""

    def __init__(self, inst_dir: Path) -> None:
        self.dir = inst_dir
        self.process: asyncio.subprocess.Process | None = None
        self._relay: asyncio.Task[None] | None = None

    async def start(self) -> None:
        exe = find_swtpm()
        state = self.dir / SWTPM_DIR
        state.mkdir(mode=0o700, exist_ok=True)
        sock = self.dir / SWTPM_SOCK
        for stale in (sock, state / ".lock"):
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
        argv = swtpm_argv(exe, self.dir)
        log.info("Starting swtpm for TPM emulation")
        log.debug("swtpm argv: %s", argv)
        proc = await spawn_owned(*argv, stdin=asyncio.subprocess.DEVNULL,
                                 stdout=asyncio.subprocess.PIPE,
                                 stderr=asyncio.subprocess.STDOUT, start_new_session=True)
        self.process = proc
        self._relay = asyncio.create_task(_relay(proc))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SWTPM_SOCKET_TIMEOUT
        while not sock.exists():
            if proc.returncode is not None:
                await self.stop()
                raise LimaError(f"swtpm exited before creating socket: exit status "
                                f"{proc.returncode}")
            if loop.time() >= deadline:
                await self.stop()
                raise LimaError(f"swtpm socket {sock} never appeared")
            await asyncio.sleep(0.05)
        os.chmod(sock, 0o600)

    async def stop(self) -> None:
        proc = self.process
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), SWTPM_STOP_TIMEOUT)
            except TimeoutError:
                await kill_and_reap(proc)
        if self._relay is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._relay, 2)
            self._relay = None
        self.process = None
        with contextlib.suppress(FileNotFoundError):
            (self.dir / SWTPM_SOCK).unlink()


async def _relay(proc: asyncio.subprocess.Process) -> None:
    assert proc.stdout is not None
    while line := await proc.stdout.readline():
        log.info("[swtpm] %s", line.decode(errors="replace").rstrip())
