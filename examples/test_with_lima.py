"""Tests that run in a Linux VM, with the pylima pytest plugin (installed with pylima).

    pytest examples/                                   # boots a VM, deletes it at the end
    limactl start --name=ci template:debian-12
    PYLIMA_TEST_INSTANCE=ci pytest examples/           # reuses the running instance `ci`

The VM configuration is in examples/pytest.ini (lima_template, lima_cpus, ...); a
`lima` marker overrides it per test. Tests asking for the same configuration share
one VM.
"""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest

import pylima


def test_runs_linux(lima_vm: pylima.Instance) -> None:
    assert lima_vm.run(["uname", "-s"]).stdout == "Linux\n"


def test_exit_code(lima_vm: pylima.Instance) -> None:
    with pytest.raises(pylima.GuestCommandError) as e:
        lima_vm.run("exit 3")
    assert e.value.returncode == 3


def test_copy_round_trip(lima_vm: pylima.Instance, tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("hello\n")
    lima_vm.copy_to(tmp_path / "in.txt", "/tmp/in.txt")
    lima_vm.run("tr a-z A-Z < /tmp/in.txt > /tmp/out.txt")
    lima_vm.copy_from("/tmp/out.txt", tmp_path / "out.txt")
    assert (tmp_path / "out.txt").read_text() == "HELLO\n"


def test_http_from_the_host(lima_vm: pylima.Instance) -> None:
    lima_vm.run("echo hi > /tmp/index.html; setsid nohup python3 -m http.server 8000 "
                "--bind 127.0.0.1 --directory /tmp </dev/null >/dev/null 2>&1 &")
    lima_vm.run("for i in $(seq 50); do python3 -c 'import socket; "
                "socket.create_connection((\"127.0.0.1\", 8000))' 2>/dev/null && exit; "
                "sleep 0.2; done; exit 1")
    host, port = lima_vm.forward(8000)
    with urllib.request.urlopen(f"http://{host}:{port}/index.html", timeout=10) as r:
        assert r.read() == b"hi\n"


@pytest.mark.lima(template="template:debian-12", cpus=1, memory=1)
def test_small_debian_vm(lima_vm: pylima.Instance) -> None:
    """A different configuration: a second VM (unless PYLIMA_TEST_INSTANCE is set)."""
    assert "ID=debian" in lima_vm.run(["cat", "/etc/os-release"]).stdout
