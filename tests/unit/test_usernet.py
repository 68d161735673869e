"""user-v2 networks: the address plan, leases and router argv (pure), the members'
hosts table, the guest agent's /etc/hosts block, and the daemon's life and the router's
forwards (real vde_switch and QEMU router processes, no VM)."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pylima.errors import LimaError
from pylima.guestagent import agent as guest_agent
from pylima.store import usernet
from pylima.store.instance import pid_alive

NET = usernet.user_net("user-v2", {"gateway": "192.168.104.1", "netmask": "255.255.255.0"})


def test_address_plan_is_limas() -> None:
    assert str(NET.subnet) == "192.168.104.0/24"
    assert (NET.host, NET.dns, NET.prefixlen) == ("192.168.104.2", "192.168.104.3", 24)
    assert usernet.user_net("x", {"gateway": "10.9.0.1"}).subnet == \
        ipaddress.IPv4Network("10.9.0.0/24")
    with pytest.raises(LimaError, match="invalid gateway or netmask"):
        usernet.user_net("x", {"gateway": "nope"})
    with pytest.raises(LimaError, match="too small"):
        usernet.user_net("x", {"gateway": "10.9.0.1", "netmask": "255.255.255.248"})


def test_leases_are_stable_and_released() -> None:
    leases, a = usernet.allocate({}, NET, "52:55:55:00:00:0A", "a")
    leases, b = usernet.allocate(leases, NET, "52:55:55:00:00:0b", "b")
    assert (a, b) == ("192.168.104.15", "192.168.104.16")
    # the same MAC (the same instance, restarted) gets the same address
    again, a2 = usernet.allocate(leases, NET, "52:55:55:00:00:0a", "a")
    assert a2 == a and again == leases
    # a freed address is reused; the others keep theirs
    freed = usernet.release(leases, "a")
    assert freed == {"192.168.104.16": {"mac": "52:55:55:00:00:0b", "instance": "b"}}
    _, c = usernet.allocate(freed, NET, "52:55:55:00:00:0c", "c")
    assert c == "192.168.104.15"
    # leases of another subnet (the network was re-created) are dropped
    moved = usernet.user_net("user-v2", {"gateway": "10.1.0.1"})
    out, d = usernet.allocate(leases, moved, "52:55:55:00:00:0a", "a")
    assert d == "10.1.0.15" and list(out) == ["10.1.0.15"]


def test_one_lease_per_instance_below_the_dhcp_pool() -> None:
    # the router's DHCP pool (nobody asks: members are static) is never leased
    assert NET.dhcp_start == "192.168.104.239"
    small = usernet.user_net("s", {"gateway": "10.2.0.1", "netmask": "255.255.255.224"})
    assert small.dhcp_start == "10.2.0.30"
    # an instance whose NIC got another MAC keeps one lease, not two
    leases, a = usernet.allocate({}, NET, "52:55:55:00:00:0a", "a")
    leases, b = usernet.allocate(leases, NET, "52:55:55:00:00:0b", "b")
    leases, a2 = usernet.allocate(leases, NET, "52:55:55:00:00:ff", "a")
    assert a2 == a and sorted(v["instance"] for v in leases.values()) == ["a", "b"]


def test_router_argv() -> None:
    argv = usernet.router_argv("/usr/bin/qemu-system-x86_64", NET, "/h/_networks/user-v2/sw",
                               "/h/_networks/user-v2/user-v2_router.qmp")
    assert argv == [
        "/usr/bin/qemu-system-x86_64", "-machine", "none", "-nodefaults", "-display", "none",
        "-no-user-config",
        "-netdev", "user,id=usernet,net=192.168.104.0/24,host=192.168.104.2,"
                   "dns=192.168.104.3,dhcpstart=192.168.104.239",
        "-netdev", "vde,id=switch,sock=/h/_networks/user-v2/sw",
        "-netdev", "hubport,id=hub-usernet,hubid=0,netdev=usernet",
        "-netdev", "hubport,id=hub-switch,hubid=0,netdev=switch",
        "-chardev", "socket,id=qmp,path=/h/_networks/user-v2/user-v2_router.qmp,"
                    "server=on,wait=off",
        "-mon", "chardev=qmp,mode=control"]
    with pytest.raises(LimaError, match="contains a comma"):
        usernet.router_argv("q", NET, "/a,b", "/c")
    assert usernet.hostfwd_rule("tcp", "127.0.0.1", 60022, "192.168.104.15", 22) == \
        "tcp:127.0.0.1:60022-192.168.104.15:22"
    assert usernet.hostfwd_rule("udp", "::1", 53, "", 53) == "udp:[::1]:53-:53"


def test_a_full_network_is_one_clear_error() -> None:
    small = usernet.user_net("s", {"gateway": "10.2.0.1", "netmask": "255.255.255.224"})
    leases: dict[str, dict[str, str]] = {}
    for i in range(29 - 14):  # .15 ... .29 (.30 is the router's DHCP pool)
        leases, _ = usernet.allocate(leases, small, f"52:55:55:00:01:{i:02x}", f"i{i}")
    with pytest.raises(LimaError, match="no free address left in 10.2.0.0/27"):
        usernet.allocate(leases, small, "52:55:55:00:02:00", "late")


def test_hosts_table() -> None:
    leases = {"192.168.104.16": {"mac": "m2", "instance": "b_2"},
              "192.168.104.15": {"mac": "m1", "instance": "a"},
              "192.168.104.17": {"mac": "m3", "instance": ""}}  # a `--leases` one
    assert usernet.render_hosts(leases) == ("192.168.104.15\tlima-a.internal\n"
                                            "192.168.104.16\tlima-b-2.internal\n")


def test_guest_hosts_block_is_replaced_in_place(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1\tlocalhost\n#LIMA-START\n192.168.5.2\thost.lima.internal\n"
                     "#LIMA-END\n")
    os.chmod(hosts, 0o644)
    guest_agent.replace_hosts_block("10.0.0.15\tlima-a.internal\n", str(hosts))
    guest_agent.replace_hosts_block("10.0.0.15\tlima-a.internal\n10.0.0.16\tlima-b.internal\n",
                                    str(hosts))
    assert hosts.read_text() == (
        "127.0.0.1\tlocalhost\n#LIMA-START\n192.168.5.2\thost.lima.internal\n#LIMA-END\n"
        "#PYLIMA-NETWORKS-START\n10.0.0.15\tlima-a.internal\n10.0.0.16\tlima-b.internal\n"
        "#PYLIMA-NETWORKS-END\n")
    assert hosts.stat().st_mode & 0o777 == 0o644
    guest_agent.replace_hosts_block("", str(hosts))
    assert "PYLIMA-NETWORKS" not in hosts.read_text()


def test_files_lease_and_release(lima_home: Path) -> None:
    assert usernet.lease(NET, "52:55:55:00:00:01", "a") == "192.168.104.15"
    assert usernet.lease(NET, "52:55:55:00:00:02", "b") == "192.168.104.16"
    assert usernet.lease(NET, "52:55:55:00:00:01", "a") == "192.168.104.15"
    d = lima_home / "_networks" / "user-v2"
    assert (d / "hosts").read_text() == ("192.168.104.15\tlima-a.internal\n"
                                         "192.168.104.16\tlima-b.internal\n")
    usernet.release_instance("a")
    assert usernet.read_leases("user-v2") == {
        "192.168.104.16": {"instance": "b", "mac": "52:55:55:00:00:02"}}
    assert (d / "hosts").read_text() == "192.168.104.16\tlima-b.internal\n"


def limactl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pylima", *args], capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize(("flags", "message"), [
    (["--endpoint", "/tmp/x.sock"], "`--endpoint` is not supported"),
    (["--listen", "/tmp/x.sock"], "`--listen` is not supported"),
    (["--mtu", "9000"], "`--mtu 9000` is not supported"),
    ([], "`--listen-qemu` is required"),
    (["--listen-qemu", "/tmp/x", "--subnet", "nope"], "invalid `--subnet`"),
])
def test_usernet_refuses_what_it_cannot_do(lima_home: Path, flags: list[str],
                                           message: str) -> None:
    r = limactl("usernet", *flags)
    assert r.returncode == 1 and message in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


needs_vde = pytest.mark.skipif(shutil.which("vde_switch") is None
                               or shutil.which("qemu-system-x86_64") is None,
                               reason="vde2 or QEMU is not installed (scripts/setup "
                                      "installs them)")


@pytest.fixture
def short_lima_home(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A LIMA_HOME short enough for the switch's Unix sockets (pytest's are not)."""
    home = Path(tempfile.mkdtemp(prefix="pylima-un-"))
    monkeypatch.setenv("LIMA_HOME", str(home))
    yield home
    shutil.rmtree(home, ignore_errors=True)


def test_too_long_a_switch_path_is_refused(lima_home: Path) -> None:
    deep = usernet.user_net("n" * 60, {"gateway": "10.3.0.1"})
    with pytest.raises(LimaError, match="usernet socket path .* too long"):
        usernet.join(deep, "a")


@needs_vde
def test_daemon_lives_while_a_member_runs(short_lima_home: Path) -> None:
    a = usernet.join(NET, "a")
    pid = usernet.daemon_pid("user-v2")
    assert pid and (usernet.switch_dir("user-v2") / "ctl").exists()
    with pytest.raises(LimaError, match="already a member"):
        usernet.join(NET, "a")
    b = usernet.join(NET, "b")  # the running daemon is reused
    assert usernet.daemon_pid("user-v2") == pid
    assert usernet.member_locks_held("user-v2") == ["a", "b"]
    kids = subprocess.run(["ps", "-ww", "--ppid", str(pid), "-o", "args="], capture_output=True,
                          text=True).stdout
    assert "vde_switch -s" in kids and "-machine none" in kids
    assert "user,id=usernet,net=192.168.104.0/24,host=192.168.104.2,dns=192.168.104.3" in kids
    os.close(a)
    time.sleep(usernet_poll() * 2.5)
    assert usernet.daemon_pid("user-v2") == pid  # b still runs
    os.close(b)
    deadline = time.monotonic() + 10
    while usernet.daemon_pid("user-v2") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert usernet.daemon_pid("user-v2") == 0
    assert not usernet.switch_dir("user-v2").exists()
    assert not usernet.pid_file("user-v2").exists()
    # its children went before it said so (the pidfile goes last); the daemon's own
    # process may still be on its way out
    for pattern in (f"vde_switch -s {usernet.switch_dir('user-v2')}",
                    f"sock={usernet.switch_dir('user-v2')}"):
        gone = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
        assert gone.stdout == "", pattern
    assert not usernet.router_qmp("user-v2").exists()
    deadline = time.monotonic() + 10
    while pid_alive(pid) and time.monotonic() < deadline:  # a zombie (our child) is gone
        time.sleep(0.1)
    assert not pid_alive(pid)


def usernet_poll() -> float:
    from pylima.drivers.qemu.usernet import POLL

    return POLL


def test_missing_switch_is_one_line_naming_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(LimaError) as e:
        usernet.check_switch()
    assert e.value.message == "`vde_switch` not found: user-v2 networks need it"
    assert e.value.hint == "install the Debian package `vde2`"


def write_networks(home: Path, body: str) -> None:
    (home / "_config").mkdir(parents=True, exist_ok=True)
    (home / "_config" / "networks.yaml").write_text("networks:\n" + body)


@needs_vde
def test_start_checks_are_one_clear_line(short_lima_home: Path) -> None:
    from pylima.store.networks import host_ipv4_addresses

    lima_home = short_lima_home
    write_networks(lima_home, "  user-v2: {mode: user-v2, gateway: 192.168.104.1}\n"
                              "  slirpish: {mode: user-v2, gateway: 192.168.5.1}\n"
                              "  sh: {mode: shared, gateway: 192.168.105.1}\n")
    usernet.check_networks({"networks": [{"lima": "user-v2"}]})
    usernet.check_networks({"networks": []})
    cases = [("nope", "network `nope` is not defined in networks.yaml"),
             ("sh", "network `sh` (mode `shared`) is only supported on macOS right now"),
             ("slirpish", "network `slirpish`: subnet 192.168.5.0/24 overlaps the guests' "
                          "user-mode network 192.168.5.0/24")]
    real = [(i, c) for i, c in host_ipv4_addresses() if not c.startswith("127.")]
    if real:  # a network inside a subnet of this host's own interfaces
        ifname, cidr = real[0]
        gw = str(ipaddress.IPv4Interface(cidr).network.network_address + 1)
        write_networks(lima_home, (lima_home / "_config" / "networks.yaml").read_text()
                       .removeprefix("networks:\n") + f"  clash: {{mode: user-v2, gateway: {gw}, "
                       f"netmask: {ipaddress.IPv4Interface(cidr).netmask}}}\n")
        cases.append(("clash", f"collides with the host's interface `{ifname}` ({cidr})"))
    for name, message in cases:
        with pytest.raises(LimaError) as e:
            usernet.check_networks({"networks": [{"lima": name}]})
        assert message in e.value.message


def listening(port: int) -> bool:
    import socket

    with socket.socket() as c:
        c.settimeout(2)
        return c.connect_ex(("127.0.0.1", port)) == 0


def eventually(pred, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.1)
    return bool(pred())


@needs_vde
def test_router_forwards_belong_to_their_member(short_lima_home: Path) -> None:
    """The members' forwards are rules on the network's router (a real QEMU): added,
    removed, refused on a port in use, dropped all at once (a member's start), and
    removed by the daemon once the member's host agent is gone."""
    import socket

    from pylima.drivers.qemu import router
    from pylima.sshutil import free_port

    a = usernet.join(NET, "a")
    b = usernet.join(NET, "b")
    pa, pb = free_port(), free_port()
    assert router.add_forward("user-v2", "a", "tcp", "127.0.0.1", pa, "192.168.104.15",
                              22) == ""
    assert router.add_forward("user-v2", "b", "tcp", "127.0.0.1", pb, "192.168.104.16",
                              22) == ""
    assert listening(pa) and listening(pb)
    assert usernet.forwarding_members("user-v2") == ["a", "b"]
    # a port another program holds: QEMU's one-line failure, nothing recorded
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        out = router.add_forward("user-v2", "a", "tcp", "127.0.0.1", busy.getsockname()[1],
                                 "192.168.104.15", 80)
    assert "Could not set up host forwarding rule" in out
    assert json.loads(usernet.forwards_file("user-v2", "a").read_text()) == \
        [["tcp", "127.0.0.1", pa]]
    # the same rule again: replaced, not refused as a port in use
    assert router.add_forward("user-v2", "a", "tcp", "127.0.0.1", pa, "192.168.104.15",
                              22) == ""
    router.remove_forward("user-v2", "a", "tcp", "127.0.0.1", pa)
    assert eventually(lambda: not listening(pa))
    assert usernet.forwarding_members("user-v2") == ["b"]
    # what a member's start does first: its rules of an earlier life go
    assert router.add_forward("user-v2", "a", "udp", "127.0.0.1", pa, "192.168.104.15",
                              53) == ""
    router.drop_forwards("user-v2", "a")
    assert usernet.forwarding_members("user-v2") == ["b"]
    # b's host agent dies without a word: the daemon removes its rule, a runs on
    os.close(b)
    assert eventually(lambda: not listening(pb), usernet_poll() * 5)
    assert usernet.forwarding_members("user-v2") == []
    assert usernet.daemon_pid("user-v2")
    os.close(a)
    assert eventually(lambda: usernet.daemon_pid("user-v2") == 0)
