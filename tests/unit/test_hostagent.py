"""The host agent's state machine against a fake driver (tests/fakedriver.py): a real
sshd as the "VM", pylima's real guest agent, real signals. No QEMU."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fakedriver import SSHD, FakeDriver  # noqa: E402
from pylima.errors import LimaError  # noqa: E402
from pylima.hostagent.agent import HostAgent  # noqa: E402
from pylima.hostagent.events import parse_event  # noqa: E402

pytestmark = pytest.mark.skipif(not os.access(SSHD, os.X_OK),
                                reason="the OpenSSH server (sshd) is not installed; "
                                "scripts/setup installs it")

NAME = "fake"


class Run:
    """One host agent run: its exit status, the events it emitted, its driver."""

    def __init__(self) -> None:
        self.rc: int | None = None
        self.events: list[dict[str, Any]] = []
        self.driver: FakeDriver | None = None


@pytest.fixture
def inst_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from pylima.store.sshkey import ensure_user_key

    monkeypatch.setenv("LIMA_HOME", str(tmp_path / "lima"))
    ensure_user_key()
    d = tmp_path / "lima" / NAME
    d.mkdir(mode=0o700)
    me = pwd.getpwuid(os.getuid()).pw_name
    (d / "lima.yaml").write_text(
        "images: [{location: /nonexistent.img, arch: x86_64}]\n"
        f"user: {{name: {me}}}\nmounts: []\n"
        "containerd: {system: false, user: false}\n")
    (d / "disk").write_bytes(b"")
    return d


def run_agent(inst_dir: Path, capsys: pytest.CaptureFixture[str],
              scenario: Callable[[HostAgent, Run, Callable[[str], Awaitable[dict[str, Any]]]],
                                 Awaitable[None]],
              *, timeout: float = 90, **knobs: Any) -> Run:
    run = Run()
    run_dir = inst_dir.parent.parent / "guest-run"

    def factory(name: str, d: Path, cfg: dict[str, Any]) -> FakeDriver:
        run.driver = FakeDriver(name, d, cfg, run_dir=run_dir)
        for k, v in knobs.items():
            setattr(run.driver, k, v)
        return run.driver

    agent = HostAgent(NAME, inst_dir / "ha.pid", inst_dir / "ha.sock",
                      driver_factory=factory, guest_run_dir=str(run_dir))
    agent.powerdown_timeout = 5

    def collect() -> None:
        for line in capsys.readouterr().out.splitlines():
            ev = parse_event(line)
            if ev is not None:
                run.events.append(ev)

    async def until(key: str) -> dict[str, Any]:
        """The first event whose status has `key` (e.g. "running", "phase")."""
        while True:
            collect()
            for ev in run.events:
                if ev["status"].get(key):
                    return ev
            await asyncio.sleep(0.05)

    async def main() -> int:
        task = asyncio.create_task(agent.run())
        await asyncio.wait_for(scenario(agent, run, until), timeout)
        return await asyncio.wait_for(task, timeout)

    run.rc = asyncio.run(main())
    collect()
    return run


def assert_owned_files_gone(inst_dir: Path) -> None:
    for f in ("ha.pid", "ha.sock", "ha.portforwards.json"):
        assert not (inst_dir / f).exists(), f


def test_start_ready_forwards_then_stop_on_sigterm(inst_dir: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    seen: dict[str, Any] = {}

    async def scenario(agent: HostAgent, run: Run, until: Any) -> None:
        await until("phase")
        assert (inst_dir / "ha.pid").read_text().strip() == str(os.getpid())
        ready = await until("running")
        seen["ready"] = ready["status"]
        assert run.driver is not None and run.driver.pid
        # pylima's guest agent reports the listener; the host agent asks the driver.
        while ("tcp", "127.0.0.1", port) not in run.driver.forwards:
            await asyncio.sleep(0.1)
        seen["forwards"] = json.loads((inst_dir / "ha.portforwards.json").read_text())
        reader, writer = await asyncio.open_unix_connection(str(inst_dir / "ha.sock"))
        writer.write(b"GET /v1/info HTTP/1.1\r\nHost: x\r\n\r\n")
        seen["info"] = (await reader.read()).split(b"\r\n\r\n", 1)[1]
        writer.close()
        os.kill(os.getpid(), signal.SIGTERM)  # as `limactl stop` does

    try:
        run = run_agent(inst_dir, capsys, scenario)
    finally:
        listener.close()
    assert run.rc == 0
    assert seen["ready"]["running"] and not seen["ready"].get("degraded")
    assert {"protocol": "tcp", "guestAddr": f"127.0.0.1:{port}",
            "hostAddr": f"127.0.0.1:{port}", "via": "direct"} in seen["forwards"]
    info = json.loads(seen["info"])
    assert info["sshLocalPort"] == seen["ready"]["sshLocalPort"]
    assert run.events[-1]["status"].get("exiting") and not run.events[-1]["status"].get("errors")
    assert run.driver is not None
    assert run.driver.calls == ["start", "stop", "close"]
    assert run.driver.process is not None and run.driver.process.returncode is not None
    assert_owned_files_gone(inst_dir)


def test_a_vm_that_dies_is_reported(inst_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async def scenario(agent: HostAgent, run: Run, until: Any) -> None:
        await until("running")
        assert run.driver is not None
        os.kill(run.driver.pid, signal.SIGKILL)

    run = run_agent(inst_dir, capsys, scenario)
    assert run.rc == 1
    last = run.events[-1]["status"]
    assert last.get("exiting")
    assert last["errors"] and "the VM (fake) exited unexpectedly with status -9" in \
        last["errors"][0]
    assert run.driver is not None and run.driver.calls[-1] == "close"
    assert "stop" not in run.driver.calls
    assert_owned_files_gone(inst_dir)


def test_stop_escalates_when_the_guest_ignores_the_power_button(
        inst_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async def scenario(agent: HostAgent, run: Run, until: Any) -> None:
        await until("running")
        agent.powerdown_timeout = 1
        agent.stop_requested.set()

    run = run_agent(inst_dir, capsys, scenario, honour_power_off=False)
    assert run.rc == 0
    assert run.driver is not None
    assert run.driver.calls == ["start", "stop", "stop: forced", "close"]
    assert run.driver.process is not None and run.driver.process.returncode == -9


def test_stop_while_booting(inst_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async def scenario(agent: HostAgent, run: Run, until: Any) -> None:
        await until("phase")
        agent.stop_requested.set()

    run = run_agent(inst_dir, capsys, scenario, boot_delay=60)
    assert run.rc == 0
    assert not any(ev["status"].get("running") for ev in run.events)
    assert run.driver is not None and run.driver.calls[-2:] == ["stop", "close"]
    assert_owned_files_gone(inst_dir)


def test_a_slow_boot_says_what_it_waits_for(inst_dir: Path, capsys: pytest.CaptureFixture[str],
                                           caplog: pytest.LogCaptureFixture,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Until READY, a line every SLOW_BOOT_REPORT_S names what the boot waits for. A
    stop in the boot scripts' phase is prompt: the killed SSH client whose session the
    master still holds is not waited for (it was, for the remote wait's 50 s)."""
    from pylima.hostagent import agent as agent_mod

    monkeypatch.setattr(agent_mod, "SLOW_BOOT_REPORT_S", 0.2)

    async def scenario(agent: HostAgent, run: Run, until: Any) -> None:
        await until("phase")
        await asyncio.sleep(1.0)
        agent.stop_requested.set()

    with caplog.at_level("INFO"):
        run = run_agent(inst_dir, capsys, scenario, timeout=20, boot_delay=60)
    assert run.rc == 0
    waits = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Still")]
    assert len(waits) >= 3, waits
    assert waits[0].startswith("Still waiting for the guest's SSH server (0 s after the VM")


def test_a_driver_that_cannot_start(inst_dir: Path, capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    async def refuse(self: FakeDriver, cfg: dict[str, Any], **kw: Any) -> None:
        self.calls.append("start")
        raise LimaError("the fake VM cannot start", hint="it never can")

    monkeypatch.setattr(FakeDriver, "start", refuse)

    async def scenario(agent: HostAgent, run: Run, until: Any) -> None:
        await until("exiting")

    run = run_agent(inst_dir, capsys, scenario)
    assert run.rc == 1
    assert run.events[-1]["status"]["errors"] == [
        "the fake VM cannot start (Hint: it never can)"]
    assert run.driver is not None and run.driver.calls == ["start", "close"]
    assert_owned_files_gone(inst_dir)


def test_a_second_host_agent_touches_nothing(inst_dir: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    """The instance is owned (its lock taken, as a running host agent holds it): a
    second host agent exits at once and neither writes nor removes a file."""
    from pylima.hostagent.agent import main
    from pylima.store.lock import try_lock

    owner = try_lock(NAME)
    assert owner is not None
    (inst_dir / "ha.pid").write_text("12345\n")  # the owner's files
    (inst_dir / "ha.sock").write_text("")
    before = sorted((p.name, p.stat().st_mtime_ns) for p in inst_dir.iterdir())
    umask = os.umask(0o022)
    os.umask(umask)
    try:
        assert main(NAME, str(inst_dir / "ha.pid"), str(inst_dir / "ha.sock")) == 1
    finally:
        os.close(owner)
    # main() narrows the umask for the agent's own files, and gives it back: it may run
    # inside another process (the mount tests once inherited 077 from this test)
    assert os.umask(umask) == umask
    assert sorted((p.name, p.stat().st_mtime_ns) for p in inst_dir.iterdir()) == before
    assert f"instance `{NAME}` is owned by another process" in caplog.text


def test_the_lock_handed_over_by_limactl_start(inst_dir: Path) -> None:
    """`limactl start` takes the lock and passes the descriptor: the host agent adopts
    it; a descriptor of another open file description is refused."""
    from pylima.hostagent.agent import adopt_lock
    from pylima.store.lock import is_locked, lock_path, try_lock

    fd = try_lock(NAME)
    assert fd is not None
    assert adopt_lock(NAME, fd) == fd and is_locked(NAME)
    other = os.open(lock_path(NAME), os.O_RDWR)
    try:
        assert adopt_lock(NAME, other) is None  # not the locked description
    finally:
        os.close(other)
        os.close(fd)
    assert not is_locked(NAME)


async def _post(inst_dir: Path, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    reader, writer = await asyncio.open_unix_connection(str(inst_dir / "ha.sock"))
    data = json.dumps(body).encode()
    writer.write(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data)}\r\n\r\n"
                 .encode() + data)
    raw = await reader.read()
    writer.close()
    head, _, content = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(content)


async def _socks5_get(port: int, host: str, target_port: int) -> bytes:
    """A SOCKS5 CONNECT by name (as socks5h:// does: the far end resolves it)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"\x05\x01\x00")
    assert await reader.readexactly(2) == b"\x05\x00"
    name = host.encode()
    writer.write(b"\x05\x01\x00\x03" + bytes([len(name)]) + name
                 + target_port.to_bytes(2, "big"))
    reply = await reader.readexactly(10)
    assert reply[1] == 0, reply
    data = await reader.read(100)
    writer.close()
    return data


def test_socks_tunnel_on_the_master_ends_with_the_host_agent(
        inst_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`limactl tunnel`'s proxy: opened by the host agent on its SSH master (a real
    sshd), reaching a service by name through it; gone once the agent has stopped.
    The fake driver takes no snapshots: the API says so in one line."""
    from pylima.sshutil import free_port

    service = socket.socket()
    service.bind(("127.0.0.1", 0))
    service.listen()
    service_port = service.getsockname()[1]
    tunnel_port = free_port()
    seen: dict[str, Any] = {}

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        service.setblocking(False)
        for _ in range(2):
            conn, _ = await loop.sock_accept(service)
            await loop.sock_sendall(conn, b"through the tunnel")
            conn.close()

    async def scenario(agent: HostAgent, run: Run, until: Any) -> None:
        await until("running")
        server = asyncio.create_task(serve())
        seen["open"] = await _post(inst_dir, "/v1/tunnel", {"port": tunnel_port})
        seen["got"] = await _socks5_get(tunnel_port, "localhost", service_port)
        # a renewed master (as after `shell --reconnect`) gets the tunnel again
        old = agent.ssh_master
        assert old is not None
        old.terminate()
        while agent.ssh_master is old or agent.ssh_master is None \
                or tunnel_port not in agent.socks_tunnels:
            await asyncio.sleep(0.1)
        for _ in range(100):
            try:
                seen["renewed"] = await _socks5_get(tunnel_port, "localhost", service_port)
                break
            except (OSError, asyncio.IncompleteReadError):
                await asyncio.sleep(0.1)
        await server
        seen["again"] = await _post(inst_dir, "/v1/tunnel", {"port": tunnel_port})
        seen["bad"] = await _post(inst_dir, "/v1/tunnel", {"port": 0})
        seen["snapshot"] = await _post(inst_dir, "/v1/snapshot",
                                       {"action": "create", "tag": "s1"})
        os.kill(os.getpid(), signal.SIGTERM)

    try:
        run = run_agent(inst_dir, capsys, scenario)
    finally:
        service.close()
    assert run.rc == 0
    assert seen["open"] == (200, {"port": tunnel_port})
    assert seen["got"] == seen["renewed"] == b"through the tunnel"
    assert seen["again"][0] == 200
    assert seen["bad"] == (500, {"message": "invalid socks port 0", "hint": None})
    assert seen["snapshot"] == (500, {"message": "driver `fake` does not support snapshots",
                                      "hint": None})
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", tunnel_port), 2):
        pass
