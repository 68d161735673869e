"""A fake VM driver for testing the host agent without QEMU, the way httpx ships a mock
transport: the host agent under test is the real one, and so is everything it talks to.

The "VM" is a real OpenSSH server (`sshd -D`) on 127.0.0.1 at the instance's SSH port,
with the instance's pinned host key and the user's key authorized, run as the current
user: the host agent reaches it over SSH exactly as it reaches a guest. The "boot
scripts" are the driver's: once sshd accepts connections it writes the guest markers
(lima-ssh-ready, lima-boot-done), holding the instance-id read from the real cidata
ISO the host agent wrote, into a directory standing in for the guest's /run. The guest
agent is pylima's own (`lima-guestagent stdio`), run on the host behind the driver's
`GuestAgentTransport`; the driver's `HostPortForwarding` records the forwards.

Knobs for the state machine's edge cases: `honour_power_off=False` makes the VM ignore
the power button (the stop must escalate); `boot_delay` delays the boot-done marker.
A QEMU-like death is a real SIGKILL of the sshd process (`pid`).
"""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import socket
import sys
from pathlib import Path
from typing import Any, ClassVar

from pylima.drivers import DriverFeatures, DriverInfo
from pylima.process import kill_and_reap

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def instance_id_from_cidata(iso_path: Path) -> str:
    """The instance-id in the NoCloud seed's meta-data (read with pycdlib)."""
    import pycdlib

    iso = pycdlib.PyCdlib()
    iso.open(str(iso_path))
    try:
        buf = io.BytesIO()
        iso.get_file_from_iso_fp(buf, rr_path="/meta-data")
    finally:
        iso.close()
    for line in buf.getvalue().decode().splitlines():
        if line.startswith("instance-id:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError("no instance-id in meta-data")


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class FakeDriver:
    name: ClassVar[str] = "fake"
    honour_power_off = True
    boot_delay = 0.0

    def __init__(self, name: str, inst_dir: Path, cfg: dict[str, Any], *,
                 run_dir: Path) -> None:
        self.instance_name = name
        self.dir = Path(inst_dir)
        self.cfg = cfg
        self.run_dir = run_dir
        self.process: asyncio.subprocess.Process | None = None
        self.agent: asyncio.subprocess.Process | None = None
        self.forwards: dict[tuple[str, str, int], int] = {}
        self.calls: list[str] = []
        self._boot: asyncio.Task[None] | None = None

    @classmethod
    def validate(cls, cfg: dict[str, Any]) -> list[str]:
        return []

    @classmethod
    def host_info(cls) -> dict[str, Any]:
        return {}

    @property
    def info(self) -> DriverInfo:
        return DriverInfo(self.name, instance_dir=str(self.dir), features=DriverFeatures(
            host_port_forwarding=True, guest_address="127.0.0.1"))

    @property
    def pid(self) -> int:
        p = self.process
        return p.pid if p is not None and p.returncode is None else 0

    def create(self) -> None:
        self.calls.append("create")

    def serve_mounts(self, mounts: list[dict[str, Any]]) -> list[str | None]:
        self.calls.append("serve_mounts")
        return [None] * len(mounts)

    async def start(self, cfg: dict[str, Any], *, ssh_local_port: int,
                    mount_tags: list[str]) -> None:
        self.calls.append("start")
        from pylima.store import dirs

        user_pub = (dirs.config_dir() / (dirs.USER_KEY + ".pub")).read_text()
        keys = self.dir / "fake-authorized_keys"
        keys.write_text(user_pub)
        conf = self.dir / "fake-sshd_config"
        conf.write_text("\n".join([
            f"Port {ssh_local_port}", "ListenAddress 127.0.0.1",
            f"HostKey {self.dir / 'ssh_host_ed25519_key'}",
            f"AuthorizedKeysFile {keys}", "PidFile none", "UsePAM no", "StrictModes no",
            "PermitRootLogin yes", "LogLevel ERROR", ""]))
        if os.geteuid() == 0:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation
        self.process = await asyncio.create_subprocess_exec(
            SSHD, "-D", "-e", "-f", str(conf), stdin=asyncio.subprocess.DEVNULL)
        self.instance_id = instance_id_from_cidata(self.dir / "cidata.iso")
        self._boot = asyncio.create_task(self._boot_scripts(ssh_local_port))

    async def _boot_scripts(self, port: int) -> None:
        while not await asyncio.to_thread(_port_open, port):
            await asyncio.sleep(0.05)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "lima-ssh-ready").write_text(self.instance_id + "\n")
        await asyncio.sleep(self.boot_delay)
        (self.run_dir / "lima-boot-done").write_text(self.instance_id + "\n")

    async def wait(self) -> int:
        assert self.process is not None
        return await self.process.wait()

    async def stop(self, timeout: float) -> None:
        self.calls.append("stop")
        assert self.process is not None
        if self.process.returncode is not None:
            return
        if self.honour_power_off:
            self.process.terminate()
        try:
            await asyncio.wait_for(asyncio.shield(self.process.wait()), timeout)
        except TimeoutError:
            self.calls.append("stop: forced")
            await self.kill()

    async def kill(self) -> None:
        await kill_and_reap(self.process)

    async def close(self) -> None:
        self.calls.append("close")
        await self.kill()
        if self._boot is not None:
            self._boot.cancel()
        if self.agent is not None:
            await kill_and_reap(self.agent)
            assert self.agent.stdin is not None
            self.agent.stdin.close()

    async def guest_agent_connect(
            self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        from pylima.guestagent import agent

        self.agent = await asyncio.create_subprocess_exec(
            sys.executable, agent.__file__, "stdio", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
        assert self.agent.stdout is not None and self.agent.stdin is not None
        return self.agent.stdout, self.agent.stdin

    async def add_host_forward(self, protocol: str, host_ip: str, host_port: int,
                               guest_port: int) -> str:
        self.forwards[(protocol, host_ip, host_port)] = guest_port
        return ""

    async def remove_host_forward(self, protocol: str, host_ip: str, host_port: int) -> None:
        self.forwards.pop((protocol, host_ip, host_port), None)
