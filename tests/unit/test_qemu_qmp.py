"""The QMP client against a real, paused QEMU (no guest runs; it takes a second)."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pylima.drivers.qemu.qmp import QMPClient, QMPError

QEMU = shutil.which("qemu-system-x86_64")
pytestmark = pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 is not installed")


@pytest.fixture
def paused_qemu() -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    # A short directory: unix socket paths are limited to 108 bytes.
    tmp = tempfile.mkdtemp(prefix="pylima-qmp-", dir="/tmp")
    sock = str(Path(tmp) / "qmp.sock")
    assert QEMU
    proc = subprocess.Popen(
        [QEMU, "-machine", "q35", "-accel", "tcg", "-nodefaults", "-display", "none",
         "-qmp", f"unix:{sock},server=on,wait=off", "-S"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield proc, sock
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
        shutil.rmtree(tmp, ignore_errors=True)


def test_query_status_then_quit(paused_qemu: tuple[subprocess.Popen[bytes], str]) -> None:
    proc, sock = paused_qemu

    async def session() -> dict[str, dict[str, object]]:
        async with QMPClient(sock) as qmp:
            assert qmp.greeting["version"]["qemu"]["major"] >= 4
            status = await qmp.query_status()
            with pytest.raises(QMPError, match="no-such-command") as e:
                await qmp.execute("no-such-command")
            assert e.value.error_class == "CommandNotFound"
            await qmp.execute("cont")
            running = await qmp.query_status()
            await qmp.quit()
            return {"before": status, "after": running}

    result = asyncio.run(session())
    assert result["before"]["running"] is False
    assert result["before"]["status"] in ("prelaunch", "paused")
    assert result["after"]["running"] is True
    assert proc.wait(timeout=10) == 0


def test_connect_to_missing_socket_fails_clearly(tmp_path: Path) -> None:
    async def session() -> None:
        await QMPClient(str(tmp_path / "nothing.sock")).connect(timeout=0.2)

    with pytest.raises(QMPError, match="cannot connect to QMP socket"):
        asyncio.run(session())


@pytest.mark.parametrize("nic", [True, False])
def test_guest_link_wait_reads_the_nics_receive_filter(nic: bool) -> None:
    """No guest runs, so no driver programs the NIC's multicast filter: with a
    virtio-net NIC the wait lasts its timeout; with no NIC that reports a filter the
    driver cannot tell, and says so at once."""
    from pylima.drivers.qemu import QemuDriver

    tmp = Path(tempfile.mkdtemp(prefix="pylima-rx-", dir="/tmp"))
    assert QEMU
    extra = ["-netdev", "user,id=net0", "-device", "virtio-net-pci,netdev=net0"] if nic else []
    proc = subprocess.Popen(
        [QEMU, "-machine", "q35", "-accel", "tcg", "-nodefaults", "-display", "none",
         *extra, "-qmp", f"unix:{tmp / 'qmp.sock'},server=on,wait=off", "-S"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        drv = QemuDriver("rx", tmp, {})

        timeout = 1.5 if nic else 60.0

        async def go() -> tuple[bool, float]:
            t0 = asyncio.get_running_loop().time()
            up = await drv.wait_guest_link(timeout=timeout)
            return up, asyncio.get_running_loop().time() - t0

        up, waited = asyncio.run(go())
        assert up is False
        assert (waited >= timeout) if nic else (waited < timeout), waited
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.communicate()
        shutil.rmtree(tmp, ignore_errors=True)



def test_output_left_for_an_earlier_client_is_skipped(tmp_path: Path) -> None:
    """QEMU 7.2 writes the output meant for a client that went away (the reply to its
    last command, the event that command caused) to the next client, before that
    client's greeting (seen here 2 times in 200 quick connections to a real QEMU).
    With a stand-in monitor, to make it certain: an event and a stale reply before the
    greeting are skipped; anything else there is refused."""
    sock = str(tmp_path / "q.sock")
    stale = b'{"event": "RESUME", "timestamp": {"seconds": 1, "microseconds": 2}}\n' \
        b'{"return": {}, "id": "pylima-2"}\n'
    greeting = b'{"QMP": {"version": {"qemu": {"major": 7}}, "capabilities": []}}\n'

    async def monitor(first: bytes) -> Any:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(first)
            while line := await reader.readline():
                req = json.loads(line)
                writer.write(json.dumps({"return": {"running": True, "status": "running"}
                                         if req["execute"] == "query-status" else {},
                                         "id": req["id"]}).encode() + b"\n")
            writer.close()

        server = await asyncio.start_unix_server(serve, path=sock)
        try:
            async with QMPClient(sock) as qmp:
                return qmp.greeting, await qmp.query_status()
        finally:
            server.close()
            Path(sock).unlink()

    greeted, status = asyncio.run(monitor(stale + greeting))
    assert greeted["version"]["qemu"]["major"] == 7 and status["running"] is True
    with pytest.raises(QMPError, match="unexpected QMP greeting"):
        asyncio.run(monitor(b'{"hello": 1}\n' + greeting))
