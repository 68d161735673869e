"""virtiofsd, the host side of QEMU's virtiofs mounts: found, checked, started one per
mount before QEMU (which connects to its vhost-user socket) and stopped with it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from pylima.drivers.qemu.argv import VHOST_SOCK
from pylima.process import die_with_parent

log = logging.getLogger("pylima.hostagent")

# Where Debian/Ubuntu (QEMU's C virtiofsd, qemu-system-common), Fedora and Arch put it.
VIRTIOFSD_CANDIDATES = ("/usr/libexec/virtiofsd", "/usr/lib/qemu/virtiofsd",
                        "/usr/libexec/qemu/virtiofsd", "/usr/lib/virtiofsd")
VIRTIOFSD_SOCKET_TIMEOUT = 10.0


def find_virtiofsd() -> tuple[str | None, bool]:
    """(path, is QEMU's C virtiofsd) of the virtiofsd to use; PYLIMA_VIRTIOFSD wins."""
    override = os.environ.get("PYLIMA_VIRTIOFSD")
    candidates = [override] if override else [*VIRTIOFSD_CANDIDATES,
                                              shutil.which("virtiofsd") or ""]
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            try:
                out = subprocess.run([c, "--version"], capture_output=True, text=True,
                                     timeout=10).stdout
            except (OSError, subprocess.SubprocessError):
                continue
            # QEMU's C virtiofsd says "virtiofsd version 7.2.x"; the Rust one
            # "virtiofsd 1.x.y".
            return c, out.startswith("virtiofsd version") or "QEMU" in out
    return None, False


def virtiofsd_problem() -> tuple[str, str] | None:
    """(cause, hint) when virtiofs mounts cannot be served on this host, else None."""
    path, is_c = find_virtiofsd()
    if path is None:
        return ("virtiofsd was not found",
                "install QEMU's virtiofsd (Debian/Ubuntu: qemu-system-common; elsewhere "
                "the `virtiofsd` package), set PYLIMA_VIRTIOFSD, or use `--mount-type=9p`")
    if is_c and os.geteuid() != 0:
        return (f"{path} is QEMU's C virtiofsd, which needs root",
                "run pylima as root, install the Rust virtiofsd, or use `--mount-type=9p`")
    return None


class Virtiofsd:
    """The virtiofsd processes of one instance."""

    def __init__(self, inst_dir: Path) -> None:
        self.dir = inst_dir
        self.procs: list[subprocess.Popen[bytes]] = []
        self.sockets: list[str] = []

    def start(self, mounts: list[dict[str, Any]]) -> list[str | None]:
        """One virtiofsd per mount; per mount None when it runs, else why not. The
        sockets of the running ones are in `sockets`, in mount order."""
        problem = virtiofsd_problem()
        if problem:
            return [f"{problem[0]} (Hint: {problem[1]})"] * len(mounts)
        path, is_c = find_virtiofsd()
        assert path is not None
        out: list[str | None] = []
        for m in mounts:
            i = len(self.sockets)
            sock = self.dir / VHOST_SOCK.format(i)
            with contextlib.suppress(FileNotFoundError):
                sock.unlink()
            if is_c:
                argv = [path, f"--socket-path={sock}", "-o", f"source={m['location']}",
                        "-o", "cache=auto"]
            else:
                argv = [path, "--socket-path", str(sock), "--shared-dir", str(m["location"])]
            log.debug("virtiofsd argv: %s", argv)
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, start_new_session=True,
                                    preexec_fn=die_with_parent())
            deadline = time.monotonic() + VIRTIOFSD_SOCKET_TIMEOUT
            while not sock.exists() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            if not sock.exists():
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                lines = proc.communicate()[0].decode(errors="replace").strip().splitlines()
                out.append("virtiofsd did not start" + (f": {lines[-1]}" if lines else ""))
                continue
            os.chmod(sock, 0o600)  # made with the user's umask, as the shared files are
            _relay(proc, f"virtiofsd-{i}")
            self.procs.append(proc)
            self.sockets.append(str(sock))
            out.append(None)
        return out

    async def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    await asyncio.to_thread(proc.wait, 5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    await asyncio.to_thread(proc.wait)
        for sock in self.sockets:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(sock)
        self.procs.clear()
        self.sockets.clear()


def _relay(proc: subprocess.Popen[bytes], prefix: str) -> None:
    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            log.info("[%s] %s", prefix, line.decode(errors="replace").rstrip())

    threading.Thread(target=pump, daemon=True).start()
