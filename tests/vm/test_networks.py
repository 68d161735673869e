"""The user-v2 network between instances (`networks: [{lima: user-v2}]`).

Two boots of their own, one after the other: the test needs a peer guest, and no
shared guest is on a user-v2 network (it adds a NIC and the network's daemon to every
boot). Both are small (1 CPU, 512 MiB, no mounts). As in Lima, the network replaces
their user-mode network: eth0 is on it, and SSH and the port forwards are rules on
the network's router. The last test restarts one of them twice (after the network has
stopped): its lease kept over a restart, and its names gone once it is edited off
the network (the user-mode network back), are what no unit test can show.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.vm.conftest import Host, eventually, proc_cmdlines

A, B = "nwa", "nwb"
NET = "user-v2"


def images_set(entry: dict) -> str:
    return f".images = [{json.dumps(entry)}] | .mounts = []"


def lima_home(h: Host) -> Path:
    return Path(h.env.get("LIMA_HOME") or h.home / ".lima")


def sh(h: Host, name: str, script: str, timeout: float = 120):  # type: ignore[no-untyped-def]
    return h.limactl("shell", name, "sh", "-c", script, timeout=timeout)


def network_processes(h: Host) -> list[str]:
    sw = str(lima_home(h) / "_networks" / NET)
    return [c for _, c in proc_cmdlines() if sw in c]


@pytest.fixture(scope="module")
def pair(unprivileged_host: Host, shared_image: dict) -> Iterator[Host]:
    h = unprivileged_host
    for name in (A, B):  # one boot at a time
        r = h.limactl("start", f"--name={name}", "--tty=false", "--cpus=1", "--memory=0.5",
                      f"--network=lima:{NET}", "--set", images_set(shared_image),
                      "template:debian-12", timeout=900)
        assert r.returncode == 0, r.stdout + r.stderr
    yield h
    for name in (A, B):
        h.limactl("stop", "-f", name)
        h.limactl("delete", "-f", name)


def leases(h: Host) -> dict[str, str]:
    """instance -> address, from the network's leases file."""
    data = json.loads((lima_home(h) / "_networks" / NET / "leases.json").read_text())
    return {v["instance"]: ip for ip, v in data.items()}


def test_each_member_has_its_leased_address_in_place_of_the_user_mode_network(
        pair: Host) -> None:
    addrs = leases(pair)
    assert sorted(addrs) == [A, B]
    assert {addrs[A], addrs[B]} == {"192.168.104.15", "192.168.104.16"}
    for name in (A, B):
        r = sh(pair, name, "ip -4 -br addr show eth0; ip route show default; "
               "ip -4 -br addr; getent hosts host.lima.internal")
        assert r.returncode == 0, r.stderr
        eth0, route, *rest = r.stdout.splitlines()
        assert f"{addrs[name]}/24" in eth0, r.stdout
        assert route.startswith("default via 192.168.104.2 dev eth0"), route
        assert "192.168.5." not in r.stdout, r.stdout  # no user-mode NIC
        assert rest[-1].split()[0] == "192.168.104.2", rest
    # SSH to each is a forward of the network's router, not of its own QEMU
    qemus = [c for _, c in proc_cmdlines() if "qemu-system" in c and "hostfwd" in c]
    assert not any(f"/{n}/" in c for c in qemus for n in (A, B)), qemus


def resolved(h: Host, name: str) -> dict[str, str]:
    """instance -> address, as the guest `name` resolves lima-INSTANCE.internal."""
    out = sh(h, name, f"getent hosts lima-{A}.internal lima-{B}.internal").stdout
    return {line.split()[1].removeprefix("lima-").removesuffix(".internal"): line.split()[0]
            for line in out.splitlines() if line.strip()}


def test_members_connect_by_name_and_by_address(pair: Host) -> None:
    addrs = leases(pair)
    # the names come to /etc/hosts through the guest agent (pushed after its start)
    for name in (A, B):
        got = eventually(lambda n=name: resolved(pair, n) == addrs, 60)
        assert got, resolved(pair, name)
    for server, client, target in ((B, A, f"lima-{B}.internal"), (A, B, addrs[A])):
        r = sh(pair, server, "rm -f /tmp/got; setsid -f sh -c 'nc -l -p 7777 > /tmp/got' "
               "</dev/null >/dev/null 2>&1; sleep 1")
        assert r.returncode == 0, r.stderr
        r = sh(pair, client, f"echo hello-from-{client} | nc -N -w 10 {target} 7777")
        assert r.returncode == 0, r.stderr
        got = eventually(lambda s=server: sh(pair, s, "cat /tmp/got").stdout.strip(), 20)
        assert got == f"hello-from-{client}"


def test_host_and_forwards_still_reached(pair: Host) -> None:
    # a host server on 127.0.0.1: reached from each guest as host.lima.internal, the
    # user-v2 network's host address (.2, the router)
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    port = srv.getsockname()[1]

    def serve() -> None:
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            c.sendall(b"host-says-hi\n")
            c.close()

    threading.Thread(target=serve, daemon=True).start()
    try:
        for name in (A, B):
            for target in ("host.lima.internal", "192.168.104.2"):
                r = sh(pair, name, f"nc -w 10 {target} {port} </dev/null")
                assert r.stdout.strip() == "host-says-hi", (name, target, r.stderr)
    finally:
        srv.close()
    # the guest agent's port forwards to the host's 127.0.0.1: the router's rules
    for i, name in enumerate((A, B)):
        gport = 18300 + i
        r = sh(pair, name, f"setsid -f python3 -c \"import socket\ns=socket.socket()\n"
               f"s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
               f"s.bind(('0.0.0.0', {gport})); s.listen(4)\nwhile True:\n"
               f"    c, _ = s.accept(); c.sendall(b'{name}'); c.close()\" "
               ">/dev/null 2>&1")
        assert r.returncode == 0, r.stderr

        def answer(p: int = gport) -> bytes:
            with socket.create_connection(("127.0.0.1", p), timeout=5) as c:
                return c.recv(16)

        assert eventually(answer, 60) == name.encode()
        rules = json.loads((lima_home(pair) / "_networks" / NET / "forwards" /
                            f"{name}.json").read_text())
        assert ["tcp", "127.0.0.1", gport] in rules, rules


def test_the_network_stops_with_its_last_member(pair: Host) -> None:
    assert any(re.search(r"vde_switch -s \S+user-v2_qemu\.vde", c)
               for c in network_processes(pair))
    r = pair.limactl("stop", B)
    assert r.returncode == 0, r.stderr
    time.sleep(3)  # the daemon looks once a second
    assert any("vde_switch" in c for c in network_processes(pair)), "stopped with a member left"
    r = sh(pair, A, "ip -4 -br addr show eth0")
    assert "192.168.104." in r.stdout
    assert not (lima_home(pair) / "_networks" / NET / "forwards" / f"{B}.json").exists()
    r = pair.limactl("stop", A)
    assert r.returncode == 0, r.stderr
    left = eventually(lambda: not network_processes(pair), 20)
    assert left, network_processes(pair)
    assert not (lima_home(pair) / "_networks" / NET / f"usernet_{NET}.pid").exists()
    # the leases outlive the stop: the same addresses at the next start
    assert sorted(leases(pair)) == [A, B]


def test_a_restart_keeps_the_address_and_leaving_the_network_drops_its_names(
        pair: Host) -> None:
    """The member started again (alone) has the address of its lease; once edited off
    the network, its next boot has neither the NIC nor the members' names."""
    addr = leases(pair)[A]
    r = pair.limactl("start", "--tty=false", A, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    r = sh(pair, A, "ip -4 -br addr show eth0")
    assert f"{addr}/24" in r.stdout, r.stdout
    assert eventually(lambda: A in resolved(pair, A), 60), resolved(pair, A)
    assert pair.limactl("stop", A).returncode == 0
    r = pair.limactl("edit", "--tty=false", "--set", ".networks = []", A)
    assert r.returncode == 0, r.stderr
    r = pair.limactl("start", "--tty=false", A, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    r = sh(pair, A, "ip -4 -br addr; getent hosts host.lima.internal")
    assert "192.168.104." not in r.stdout and "192.168.5.15/24" in r.stdout, r.stdout
    assert r.stdout.splitlines()[-1].split()[0] == "192.168.5.2", r.stdout
    # the host agent clears the block once the guest agent answers
    gone = eventually(lambda: "PYLIMA-NETWORKS" not in sh(pair, A, "cat /etc/hosts").stdout,
                      60)
    assert gone, sh(pair, A, "cat /etc/hosts").stdout
    # systemd-resolved, which the guest's lookups reach after /etc/hosts, serves its
    # own copy of that file, re-read at most every 2 s: it may answer a moment longer
    assert eventually(lambda: resolved(pair, A) == {}, 10), resolved(pair, A)
