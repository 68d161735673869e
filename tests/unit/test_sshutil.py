"""ssh.config and the ssh command lines: Lima's `ssh` options (forwardAgent,
forwardX11, forwardX11Trusted, loadDotSSHPubKeys), checked with the real ssh's own
reading of the file (`ssh -G`)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from pylima.sshutil import (
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
