"""Boot a real guest under QEMU (TCG here) and use it like a Lima user would.

One guest, started once, serves the tests in this module in order; a second one
checks that pylima also works as root.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.vm.conftest import Host

NAME = "vmtest"


def images_set(entry: dict) -> str:
    return f".images = [{json.dumps(entry)}] | .mounts = []"


@pytest.fixture(scope="module")
def guest(unprivileged_host: Host, shared_image: dict) -> Iterator[Host]:
    h = unprivileged_host
    r = h.limactl("start", f"--name={NAME}", "--tty=false", "--cpus=2", "--memory=2",
                  "--set", images_set(shared_image), "template:debian-12", timeout=1500)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "READY" in r.stderr
    yield h
    h.limactl("stop", "-f", NAME)
    h.limactl("delete", "-f", NAME)


def lima_env() -> dict[str, str]:
    return {"LIMA_INSTANCE": NAME}


def test_lima_runs_a_command(guest: Host) -> None:
    r = guest.lima("uname", "-a", env=lima_env())
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Linux lima-vmtest ")


def test_guest_user_matches_host_user(guest: Host) -> None:
    r = guest.limactl("shell", NAME, "id", "-un")
    assert r.stdout.strip() == guest.user
    uid = guest.run("id", "-u").stdout.strip()
    assert guest.limactl("shell", NAME, "id", "-u").stdout.strip() == uid
    assert guest.limactl("shell", NAME, "sudo", "-n", "true").returncode == 0


def test_exit_code_and_pipes(guest: Host) -> None:
    assert guest.lima("sh", "-c", "exit 7", env=lima_env()).returncode == 7
    r = guest.lima("cat", input="hi\n", env=lima_env())
    assert r.stdout == "hi\n"
    r = guest.limactl("shell", NAME, "sh", "-c", "echo out; echo err >&2")
    assert r.stdout == "out\n" and "err" in r.stderr


def test_copy_both_ways(guest: Host, tmp_path: Path) -> None:
    src = guest.home / "pylima-copy-src.txt"
    guest.run("sh", "-c", f"echo payload > {src}")
    assert guest.limactl("copy", str(src), f"{NAME}:/tmp/copied.txt").returncode == 0
    assert guest.limactl("shell", NAME, "cat", "/tmp/copied.txt").stdout == "payload\n"
    back = guest.home / "pylima-copy-back.txt"
    r = guest.limactl("cp", f"{NAME}:/tmp/copied.txt", str(back))
    assert r.returncode == 0, r.stderr
    assert guest.run("cat", str(back)).stdout == "payload\n"


def test_list_shows_running_instance(guest: Host) -> None:
    r = guest.limactl("list", "--json", NAME)
    info = json.loads(r.stdout)
    assert info["status"] == "Running"
    assert info["sshLocalPort"] > 0 and info["hostAgentPID"] > 0 and info["driverPID"] > 0
    ssh_cfg = Path(info["sshConfigFile"])
    text = guest.run("cat", str(ssh_cfg)).stdout
    assert "StrictHostKeyChecking yes" in text and f"Port {info['sshLocalPort']}" in text
    # plain `ssh -F` works, with the pinned host key
    r = guest.run("ssh", "-F", str(ssh_cfg), f"lima-{NAME}", "echo", "via-ssh")
    assert r.stdout.strip() == "via-ssh", r.stderr


def test_host_agent_api(guest: Host) -> None:
    info = json.loads(guest.limactl("list", "--json", NAME).stdout)
    sock = Path(info["dir"]) / "ha.sock"
    r = guest.run("python3", "-c", (
        "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); "
        "s.sendall(b'GET /v1/info HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n'); "
        "print(s.recv(4096).decode())"), str(sock))
    body = r.stdout.split("\n\n", 1)[1]  # text mode has turned \r\n into \n
    assert json.loads(body)["sshLocalPort"] == info["sshLocalPort"]


def test_start_running_instance_says_so(guest: Host) -> None:
    r = guest.limactl("start", NAME)
    assert r.returncode == 0 and "is already running" in r.stderr


def test_stop_start_keeps_guest_files(guest: Host) -> None:
    assert guest.limactl("shell", NAME, "sh", "-c", "echo kept > ~/marker").returncode == 0
    r = guest.limactl("stop", NAME, timeout=300)
    assert r.returncode == 0, r.stderr
    assert guest.limactl("list", "--format", "{{.Status}}", NAME).stdout == "Stopped\n"
    r = guest.lima("true", env=lima_env())
    assert r.returncode == 1 and f"instance `{NAME}` is stopped" in r.stderr
    r = guest.limactl("start", NAME, timeout=1200)
    assert r.returncode == 0, r.stderr
    assert guest.limactl("shell", NAME, "cat", "marker").stdout == "kept\n"


def test_kill_9_leaves_a_correct_list_and_a_working_start(guest: Host) -> None:
    info = json.loads(guest.limactl("list", "--json", NAME).stdout)
    os.kill(info["hostAgentPID"], signal.SIGKILL)
    os.kill(info["driverPID"], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        st = guest.limactl("list", "--format", "{{.Status}}", NAME).stdout.strip()
        if st == "Stopped":
            break
        time.sleep(0.5)
    assert st == "Stopped"
    r = guest.limactl("start", NAME, timeout=1200)
    assert r.returncode == 0, r.stderr
    assert guest.lima("true", env=lima_env()).returncode == 0


def test_stop_force(guest: Host) -> None:
    r = guest.limactl("stop", "-f", NAME)
    assert r.returncode == 0
    info = json.loads(guest.limactl("list", "--json", NAME).stdout)
    assert info["status"] == "Stopped"
    assert not Path(info["dir"], "ha.sock").exists()


@pytest.mark.skipif(os.getuid() != 0, reason="the root case runs where the tests run as root")
def test_runs_as_root(tmp_path: Path, built_image: dict) -> None:
    root = Host("root", Path("/root"), {"LIMA_HOME": str(tmp_path / "lima")})
    r = root.limactl("start", "--name=rootvm", "--tty=false", "--cpus=2", "--memory=2",
                     "--set", images_set(built_image), "template:debian-12", timeout=1500)
    try:
        assert r.returncode == 0, r.stderr
        r = root.limactl("shell", "rootvm", "id", "-un")
        assert r.stdout.strip() == "lima"
        assert root.limactl("shell", "rootvm", "id", "-u").stdout.strip() == "1000"
    finally:
        root.limactl("delete", "-f", "rootvm")
