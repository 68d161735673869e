"""ssh.config and the ssh command lines: Lima's `ssh` options (forwardAgent,
forwardX11, forwardX11Trusted, loadDotSSHPubKeys), checked with the real ssh's own
reading of the file (`ssh -G`), and the probe's connection that the SSH master
takes over."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from pylima.hostagent.agent import _peek_banner
from pylima.sshutil import (
    ConnectedHandover,
    dot_ssh_identities,
    dot_ssh_pubkeys,
    render_ssh_config,
    ssh_argv,
    write_ssh_files,
)

PUB = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample user@host"


@pytest.fixture
def lima_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "lima"
    monkeypatch.setenv("LIMA_HOME", str(home))
    (home / "_config").mkdir(parents=True)
    return home


def test_forwarding_lines_as_lima(lima_home: Path) -> None:
    inst = lima_home / "dev"
    plain = render_ssh_config("dev", inst, "alice", 60022)
    assert "Forward" not in plain
    text = render_ssh_config("dev", inst, "alice", 60022,
                             {"forwardAgent": True, "forwardX11": True,
                              "forwardX11Trusted": True})
    lines = [ln.strip() for ln in text.splitlines()]
    # after the ControlMaster block, as in Lima's ssh.config
    i = lines.index("ControlPersist yes")
    assert lines[i + 1:i + 4] == ["ForwardAgent yes", "ForwardX11 yes", "ForwardX11Trusted yes"]
    only_agent = render_ssh_config("dev", inst, "alice", 60022, {"forwardAgent": True})
    assert "ForwardAgent yes" in only_agent and "X11" not in only_agent


def test_dot_ssh_keys(tmp_path: Path) -> None:
    ssh = tmp_path / ".ssh"
    ssh.mkdir()
    (ssh / "id_ed25519").write_text("private")
    (ssh / "id_ed25519.pub").write_text(PUB + "\n")
    (ssh / "vault-cert.pub").write_text("ssh-ed25519-cert-v01@openssh.com AAAA x\n")
    (ssh / "junk.pub").write_text("not a key\n")
    assert dot_ssh_identities(tmp_path) == [ssh / "id_ed25519"]  # a .pub without a key: no
    keys, warnings = dot_ssh_pubkeys(tmp_path)
    assert keys == [PUB, "ssh-ed25519-cert-v01@openssh.com AAAA x"]
    assert warnings == [f"public key `{ssh / 'junk.pub'}` doesn't seem to be in ssh format"]


@pytest.mark.skipif(shutil.which("ssh") is None, reason="needs the OpenSSH client")
def test_real_ssh_reads_the_options(lima_home: Path, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_rsa").write_text("private")
    (home / ".ssh" / "id_rsa.pub").write_text(PUB)
    monkeypatch.setenv("HOME", str(home))
    inst = lima_home / "dev"
    inst.mkdir()
    write_ssh_files("dev", inst, "alice", 60022, PUB,
                    {"forwardAgent": True, "forwardX11": True, "loadDotSSHPubKeys": True})

    def effective(argv: list[str]) -> dict[str, list[str]]:
        # `ssh -G`: the options ssh would use, without connecting
        out = subprocess.run([argv[0], "-G", *argv[1:]], capture_output=True, text=True,
                             check=True).stdout
        opts: dict[str, list[str]] = {}
        for line in out.splitlines():
            k, _, v = line.partition(" ")
            opts.setdefault(k, []).append(v)
        return opts

    user = effective(ssh_argv(inst, "dev", user_session=True))
    assert user["forwardagent"] == ["yes"] and user["forwardx11"] == ["yes"]
    assert str(home / ".ssh" / "id_rsa") in user["identityfile"]
    assert str(lima_home / "_config" / "user") == user["identityfile"][0]
    # pylima's own sessions never forward the user's agent or X server
    own = effective(ssh_argv(inst, "dev"))
    assert own["forwardagent"] == ["no"] and own["forwardx11"] == ["no"]


class _Greeter:
    """A TCP server that greets as sshd does, then records what the client says."""

    def __init__(self, greeting: bytes, close: bool = False) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.accepted = 0
        self.heard = b""
        self.thread = threading.Thread(target=self._serve, args=(greeting, close),
                                       daemon=True)
        self.thread.start()

    def _serve(self, greeting: bytes, close: bool) -> None:
        self.server.settimeout(20)
        conn, _ = self.server.accept()
        self.accepted += 1
        with conn:
            conn.sendall(greeting)
            if close:
                return
            conn.settimeout(10)
            with contextlib.suppress(OSError):
                while b"\n" not in self.heard and (data := conn.recv(256)):
                    self.heard += data


async def _connect(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return sock


@pytest.mark.skipif(shutil.which("ssh") is None, reason="needs the OpenSSH client")
def test_ssh_takes_over_the_probes_connection() -> None:
    """The host agent's probe sees sshd's banner without reading it, and ssh
    (`ProxyUseFdpass`) continues on that very connection: it reads the banner and
    answers with its own, and the server never sees a second connection."""
    server = _Greeter(b"SSH-2.0-OpenSSH_9.2p1 test\r\n")

    async def main() -> tuple[bool, bytes, bool, int]:
        sock = await _connect(server.port)
        greeted = await _peek_banner(sock)
        unread = sock.recv(64, socket.MSG_PEEK)
        handover = ConnectedHandover(sock)
        proc = await asyncio.create_subprocess_exec(
            "ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "ControlPath=none",
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "ConnectTimeout=5", *handover.proxy_options(), "nowhere.invalid", "true",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL)
        given = await handover.give(10)
        return greeted, unread, given, await asyncio.wait_for(proc.wait(), 30)

    greeted, unread, given, rc = asyncio.run(main())
    server.thread.join(15)
    assert greeted and unread == b"SSH-2.0-OpenSSH_9.2p1 test\r\n"
    assert given
    assert server.heard.startswith(b"SSH-2.0-OpenSSH"), server.heard
    assert server.accepted == 1
    assert rc == 255  # the test server knows no key exchange


@pytest.mark.parametrize("greeting", [b"", b"HTTP/1.1 400\r\n"])
def test_a_probe_that_hears_no_banner(greeting: bytes) -> None:
    server = _Greeter(greeting, close=True)

    async def main() -> bool:
        sock = await _connect(server.port)
        with sock:
            return await asyncio.wait_for(_peek_banner(sock), 10)

    assert asyncio.run(main()) is False


def test_a_handover_nobody_asks_for_closes_the_connection() -> None:
    server = _Greeter(b"SSH-2.0-x\r\n")

    async def main() -> tuple[bool, int]:
        sock = await _connect(server.port)
        return await ConnectedHandover(sock).give(0.2), sock.fileno()

    given, fd = asyncio.run(main())
    assert given is False and fd == -1
