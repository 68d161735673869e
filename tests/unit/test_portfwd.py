"""Port-forwarding rules (Lima's first-match semantics) and the guest agent's
socket table parsing: the pure parts."""

from __future__ import annotations

import asyncio
import socket
import sys
from typing import Any

import pytest

from pylima.guestagent import agent as ga
from pylima.guestagent import guest_agent_bytes
from pylima.hostagent import portfwd as pf
from pylima.hostagent.portfwd import GuestPort


def filled(**rule: Any) -> dict[str, Any]:
    """A rule as FillDefault leaves it."""
    rule.setdefault("proto", "any")
    if "guestIP" not in rule:
        rule["guestIP"] = "0.0.0.0" if rule.get("guestIPMustBeZero") else "127.0.0.1"
    rule.setdefault("guestIPMustBeZero", rule["guestIP"] == "0.0.0.0")
    rule.setdefault("hostIP", "127.0.0.1")
    gp = rule.get("guestPort", 0)
    rule.setdefault("guestPortRange", [1, 65535] if not gp else [gp, gp])
    hp = rule.get("hostPort", 0)
    rule.setdefault("hostPortRange", list(rule["guestPortRange"]) if not hp else [hp, hp])
    return rule


def host_of(rules: list[dict[str, Any]], proto: str, ip: str, port: int) -> str | None:
    m = pf.match_rule(pf.effective_rules(rules, 60022), GuestPort(proto, ip, port))
    return None if m is None else pf.host_string(m.host_ip, m.host_port)


@pytest.mark.parametrize("ip", ["127.0.0.1", "0.0.0.0", "::", "::1"])
def test_implicit_rule_forwards_loopback_and_any_to_host_loopback(ip: str) -> None:
    assert host_of([], "tcp", ip, 8080) == "127.0.0.1:8080"
    assert host_of([], "udp", ip, 5353) == "127.0.0.1:5353"


def test_other_guest_addresses_are_not_forwarded_by_default() -> None:
    assert host_of([], "tcp", "192.168.5.15", 8080) is None
    assert host_of([], "tcp", "127.0.0.53", 53) is None


@pytest.mark.parametrize("ip", ["0.0.0.0", "127.0.0.1", "::"])
def test_ssh_ports_are_never_forwarded(ip: str) -> None:
    assert host_of([filled(guestPort=22, hostPort=2222)], "tcp", ip, 22) is None
    assert host_of([], "tcp", ip, 60022) is None


def test_first_match_wins_and_host_port_range_shifts() -> None:
    rules = [filled(guestPortRange=[8000, 8009], hostPortRange=[9000, 9009]),
             filled(guestPort=8005, hostPort=7000)]
    assert host_of(rules, "tcp", "127.0.0.1", 8005) == "127.0.0.1:9005"


def test_ignore_rule() -> None:
    rules = [filled(guestPort=8082, ignore=True)]
    assert host_of(rules, "tcp", "127.0.0.1", 8082) is None
    # Lima: an ignore rule for 127.0.0.1 does not hide a socket bound to any address
    assert host_of(rules, "tcp", "0.0.0.0", 8082) == "127.0.0.1:8082"
    rules = [filled(guestIP="0.0.0.0", guestIPMustBeZero=False, guestPort=8082, ignore=True)]
    assert host_of(rules, "tcp", "0.0.0.0", 8082) is None


def test_proto_and_guest_ip_must_be_zero() -> None:
    rules = [filled(guestPort=53, hostPort=5300, proto="udp")]
    assert host_of(rules, "udp", "127.0.0.1", 53) == "127.0.0.1:5300"
    # tcp falls through to the implicit rule (which `refusal` then turns down: port 53)
    assert host_of(rules, "tcp", "127.0.0.1", 53) == "127.0.0.1:53"
    rules = [filled(guestIP="0.0.0.0", guestIPMustBeZero=True, guestPort=80, hostPort=8000)]
    assert host_of(rules, "tcp", "0.0.0.0", 80) == "127.0.0.1:8000"
    assert host_of(rules, "tcp", "127.0.0.1", 80) == "127.0.0.1:80"  # implicit rule


def test_host_ip_from_the_rule() -> None:
    rules = [filled(guestPort=8080, hostIP="0.0.0.0")]
    assert host_of(rules, "tcp", "0.0.0.0", 8080) == "0.0.0.0:8080"


def test_privileged_host_ports_need_an_explicit_rule() -> None:
    rules = pf.effective_rules([filled(guestPort=80, hostPort=80)], 60022)
    implicit = pf.match_rule(rules, GuestPort("tcp", "127.0.0.1", 443))
    assert implicit is not None and "privileged" in (pf.refusal(implicit) or "")
    explicit = pf.match_rule(rules, GuestPort("tcp", "127.0.0.1", 80))
    assert explicit is not None and pf.refusal(explicit) is None


GUEST_ADDRESS = "192.168.5.15"


def test_data_path() -> None:
    assert pf.data_path(GuestPort("tcp", "0.0.0.0", 1), GUEST_ADDRESS) == "direct"
    assert pf.data_path(GuestPort("tcp", "::", 1), GUEST_ADDRESS) == "direct"
    assert pf.data_path(GuestPort("tcp", "192.168.5.15", 1), GUEST_ADDRESS) == "direct"
    assert pf.data_path(GuestPort("tcp", "127.0.0.1", 1), GUEST_ADDRESS) == "relay"
    assert pf.data_path(GuestPort("tcp", "::1", 1), GUEST_ADDRESS) == "relay"
    assert pf.data_path(GuestPort("tcp", "192.168.5.15", 1), "10.0.2.15") == "relay"


def test_ssh_forward_args_for_sockets_and_static_rules() -> None:
    sock = {"guestSocket": "/run/docker.sock", "hostSocket": "/h/sock/docker.sock"}
    assert pf.ssh_forward_args(sock)[0][0] == ["-L", "/h/sock/docker.sock:/run/docker.sock"]
    rev = dict(sock, reverse=True)
    assert pf.ssh_forward_args(rev)[0][0] == ["-R", "/run/docker.sock:/h/sock/docker.sock"]
    static = filled(guestIP="0.0.0.0", guestPort=80, hostPort=8080, static=True)
    [(argv, record)] = pf.ssh_forward_args(static)
    assert argv == ["-L", "127.0.0.1:8080:127.0.0.1:80"] and record["static"]


# ---- the forwarder against a fake driver's host forwarding and guest agent ----


class FakeForwarding:
    """A driver's `HostPortForwarding`: records the forwards, refuses taken ports."""

    def __init__(self, taken: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.rules: set[str] = set()
        self.taken = set(taken)

    async def add_host_forward(self, protocol: str, host_ip: str, host_port: int,
                               guest_port: int) -> str:
        if f"{host_ip}:{host_port}" in self.taken:
            return f"cannot listen on {host_ip}:{host_port} (in use)"
        self.rules.add(f"{protocol}:{host_ip}:{host_port}")
        return ""

    async def remove_host_forward(self, protocol: str, host_ip: str, host_port: int) -> None:
        self.rules.discard(f"{protocol}:{host_ip}:{host_port}")


def run_forwarder(ops: Any, taken: set[str] = frozenset()) -> tuple[Any, FakeForwarding, list]:  # type: ignore[assignment]
    qemu, evs, relays = FakeForwarding(taken), [], iter(range(41000, 42000))

    async def request(op: str, **args: Any) -> dict[str, Any]:
        return {"port": next(relays)} if op == "relay" else {}

    async def main() -> Any:
        f = pf.PortForwarder([], 60022, qemu, GUEST_ADDRESS, request, evs.append)
        await ops(f)
        return f

    return asyncio.run(main()), qemu, evs


def test_forwarder_adds_removes_and_dedupes() -> None:
    async def ops(f: pf.PortForwarder) -> None:
        await f.snapshot([GuestPort("tcp", "0.0.0.0", 8081), GuestPort("tcp", "::", 8081),
                          GuestPort("tcp", "127.0.0.1", 8080)], "s1")
        await f.update([], [GuestPort("tcp", "0.0.0.0", 8081)])

    f, qemu, evs = run_forwarder(ops)
    # the :: socket took over the host address when the 0.0.0.0 one went away
    assert qemu.rules == {"tcp:127.0.0.1:8080", "tcp:127.0.0.1:8081"}
    assert {a["hostAddr"]: a["via"] for a in f.forwards()} == {
        "127.0.0.1:8080": "relay", "127.0.0.1:8081": "direct"}
    assert [e["type"] for e in evs].count("stopping") == 1


def test_forwarder_reports_a_taken_port_and_goes_on() -> None:
    async def ops(f: pf.PortForwarder) -> None:
        await f.snapshot([GuestPort("tcp", "127.0.0.1", 8085),
                          GuestPort("tcp", "127.0.0.1", 8086)], "s1")

    f, qemu, evs = run_forwarder(ops, taken={"127.0.0.1:8085"})
    assert qemu.rules == {"tcp:127.0.0.1:8086"}
    failed = [e for e in evs if e["type"] == "failed"]
    assert failed and "in use" in failed[0]["error"]


def test_a_new_guest_agent_session_sets_forwards_up_again() -> None:
    async def ops(f: pf.PortForwarder) -> None:
        await f.snapshot([GuestPort("tcp", "127.0.0.1", 8080)], "s1")
        await f.snapshot([GuestPort("tcp", "127.0.0.1", 8080)], "s2")

    f, qemu, evs = run_forwarder(ops)
    assert [e["type"] for e in evs] == ["forwarding", "stopping", "forwarding"]
    assert qemu.rules == {"tcp:127.0.0.1:8080"}


def test_guest_port_to_a_host_socket_and_ipv6_host_addresses() -> None:
    """Lima's test-port-forwarding.pl cases that QEMU's user network cannot serve:
    they go over the SSH master (unix socket on the host, IPv6 host address)."""
    sock_rule = {**filled(guestPort=5000), "hostSocket": "/i/sock/port5000.sock"}
    del sock_rule["hostPortRange"]  # Lima's defaults leave it out for hostSocket
    v6 = filled(guestIP="::1", guestPortRange=[4010, 4019], hostIP="::")
    rules = pf.effective_rules([sock_rule, v6], 60022)
    m = pf.match_rule(rules, GuestPort("tcp", "127.0.0.1", 5000))
    assert m is not None and m.host_addr == "/i/sock/port5000.sock" and pf.over_ssh(m)
    assert pf.ssh_local_forward(m, GuestPort("tcp", "127.0.0.1", 5000)) == [
        "-L", "/i/sock/port5000.sock:127.0.0.1:5000"]
    assert pf.refusal(m) is None
    assert "unix socket" in (pf.refusal(m, "udp") or "")
    # guestIPMustBeZero is false for 127.0.0.1: a socket on any address matches too,
    # reached through the guest's loopback
    m0 = pf.match_rule(rules, GuestPort("tcp", "0.0.0.0", 5000))
    assert m0 is not None and pf.ssh_local_forward(m0, GuestPort("tcp", "0.0.0.0", 5000))[1] \
        == "/i/sock/port5000.sock:127.0.0.1:5000"
    assert pf.match_rule(rules, GuestPort("tcp", "192.168.5.15", 5000)) is None
    m6 = pf.match_rule(rules, GuestPort("tcp", "::1", 4010))
    assert m6 is not None and m6.host_addr == "[::]:4010" and pf.over_ssh(m6)
    assert pf.ssh_local_forward(m6, GuestPort("tcp", "::1", 4010)) == [
        "-L", "[::]:4010:[::1]:4010"]
    # UDP to it: neither QEMU nor SSH carries it; a host-side relay does
    assert pf.refusal(m6, "udp") is None and not pf.over_ssh(m6, "udp")
    assert pf.needs_udp_relay(m6, "udp") and not pf.needs_udp_relay(m6, "tcp")
    long = pf.Match(sock_rule, "", 0, "/" + "x" * 120)
    assert "too long: >= UNIX_PATH_MAX=108" in (pf.refusal(long) or "")
    # IPv4 host addresses stay on QEMU's forwarding
    m4 = pf.match_rule(rules, GuestPort("tcp", "::1", 8080))
    assert m4 is not None and not pf.over_ssh(m4)


def test_forwarder_uses_ssh_for_sockets_and_cleans_up(tmp_path: Any) -> None:
    sock = tmp_path / "sock" / "web.sock"
    rules = [{**filled(guestPort=8090), "hostSocket": str(sock)},
             filled(guestPort=8091, hostIP="::1")]
    calls: list[tuple[str, list[str]]] = []
    evs: list[dict[str, Any]] = []

    async def ssh_control(verb: str, args: Any) -> str:
        calls.append((verb, list(args)))
        if verb == "forward" and args[1].startswith(str(sock)):
            sock.touch()  # ssh would bind it
        return ""

    async def request(op: str, **args: Any) -> dict[str, Any]:
        return {}

    async def main() -> pf.PortForwarder:
        f = pf.PortForwarder(rules, 60022, FakeForwarding(), GUEST_ADDRESS, request,
                             evs.append, ssh_control=ssh_control)
        await f.snapshot([GuestPort("tcp", "0.0.0.0", 8090), GuestPort("tcp", "::", 8090),
                          GuestPort("tcp", "127.0.0.1", 8091)], "s1")
        assert {a["hostAddr"]: a["via"] for a in f.forwards()} == {
            str(sock): "ssh", "[::1]:8091": "ssh"}
        await f.close()
        return f

    asyncio.run(main())
    assert calls == [("forward", ["-L", f"{sock}:127.0.0.1:8090"]),
                     ("forward", ["-L", "[::1]:8091:127.0.0.1:8091"]),
                     ("cancel", ["-L", f"{sock}:127.0.0.1:8090"]),
                     ("cancel", ["-L", "[::1]:8091:127.0.0.1:8091"])]
    assert not sock.exists()  # the socket goes with the forward
    assert [e["hostAddr"] for e in evs if e["type"] == "forwarding"] == [str(sock), "[::1]:8091"]


def test_udp_to_an_ipv6_host_address_goes_through_a_relay() -> None:
    """The driver forwards an IPv4 loopback port; a real UDP socket on [::1] relays to
    it (here to a UDP echo server standing in for QEMU's forward), and everything is
    closed with the forward."""
    import socket

    echo = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    echo.bind(("127.0.0.1", 0))
    echo.setblocking(False)
    fwd = FakeForwarding()
    added: list[tuple[str, int]] = []
    real_add = fwd.add_host_forward

    async def add(protocol: str, host_ip: str, host_port: int, guest_port: int) -> str:
        added.append((host_ip, host_port))
        return await real_add(protocol, host_ip, host_port, guest_port)

    fwd.add_host_forward = add  # type: ignore[method-assign]
    port = pf.free_udp_port()
    rules = [filled(guestPort=5353, hostIP="::1", hostPortRange=[port, port])]

    async def request(op: str, **args: Any) -> dict[str, Any]:
        return {}

    async def main() -> list[bytes]:
        loop = asyncio.get_running_loop()
        f = pf.PortForwarder(rules, 60022, fwd, GUEST_ADDRESS, request, lambda e: None)
        await f.snapshot([GuestPort("udp", "0.0.0.0", 5353)], "s1")
        [(driver_ip, driver_port)] = added
        assert driver_ip == "127.0.0.1" and driver_port != port
        relay = f.active[GuestPort("udp", "0.0.0.0", 5353)].udp_relay
        assert relay is not None
        relay.target = echo.getsockname()  # the echo server plays QEMU's forward

        def echo_back() -> None:
            data, addr = echo.recvfrom(100)
            echo.sendto(b"echo:" + data, addr)

        loop.add_reader(echo.fileno(), echo_back)
        got = []
        for text in (b"one", b"two"):
            client = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            client.setblocking(False)
            client.sendto(text, ("::1", port))
            got.append(await asyncio.wait_for(loop.sock_recv(client, 100), 10))
            client.close()
        assert len(relay.clients) == 2  # one upstream socket per client
        await f.close()
        loop.remove_reader(echo.fileno())
        assert not relay.clients and relay.transport is None
        return got

    assert asyncio.run(main()) == [b"echo:one", b"echo:two"]
    assert fwd.rules == set()  # the driver's forward went with it
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
        s.bind(("::1", port))  # and the relay's socket
    echo.close()


# ---- the guest agent ----

PROC_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000
   1: 00000000:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000
   2: 0F05A8C0:0016 0205A8C0:D2F4 01 00000000:00000000 02:0008D8C6 00000000     0
"""
PROC_TCP6 = """\
  sl  local_address                         remote_address                        st
   0: 00000000000000000000000000000000:1F92 00000000000000000000000000000000:0000 0A
   1: 00000000000000000000000001000000:1F93 00000000000000000000000000000000:0000 0A
   2: 0000000000000000FFFF00000100007F:1F94 00000000000000000000000000000000:0000 0A
"""
PROC_UDP = """\
  sl  local_address rem_address   st
  10: 0100007F:2355 00000000:0000 07
  11: 0F05A8C0:0044 0205A8C0:0043 01
"""


@pytest.mark.skipif(sys.byteorder != "little", reason="fixtures are little-endian")
def test_guest_agent_parses_proc_net() -> None:
    assert ga.parse_proc_net(PROC_TCP, "tcp") == {("tcp", "127.0.0.1", 8080),
                                                  ("tcp", "0.0.0.0", 8081)}
    assert ga.parse_proc_net(PROC_TCP6, "tcp") == {("tcp", "::", 8082), ("tcp", "::1", 8083),
                                                   ("tcp", "127.0.0.1", 8084)}
    assert ga.parse_proc_net(PROC_UDP, "udp") == {("udp", "127.0.0.1", 9045)}


def test_guest_agent_sees_a_real_listener_and_relays_to_it() -> None:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    port = srv.getsockname()[1]
    try:
        assert ("tcp", "127.0.0.1", port) in ga.scan()
        relay = ga.TcpRelay("127.0.0.1", "127.0.0.1", port)
        assert ("tcp", relay.port) not in {(p[0], p[2]) for p in ga.scan({("tcp", relay.port)})}
        c = socket.create_connection(("127.0.0.1", relay.port), timeout=5)
        conn, _ = srv.accept()
        c.sendall(b"x" * 100000)
        got = b""
        while len(got) < 100000:
            got += conn.recv(65536)
        conn.sendall(b"back")
        assert c.recv(10) == b"back"
        c.close()
        conn.close()
        relay.close()
    finally:
        srv.close()


def test_guest_agent_is_stdlib_only_and_runs_on_old_pythons() -> None:
    import ast

    tree = ast.parse(guest_agent_bytes(), feature_version=(3, 8))
    mods = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
            for a in n.names}
    mods |= {n.module.split(".")[0] for n in ast.walk(tree)
             if isinstance(n, ast.ImportFrom) and n.module}
    assert mods <= set(sys.stdlib_module_names)


def test_time_sync_adjusts_only_beyond_the_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    called = []
    monkeypatch.setattr(time, "clock_settime", lambda clk, t: called.append(t))
    assert ga.sync_time(time.time())["adjusted"] is False
    r = ga.sync_time(time.time() + 30)
    assert r["adjusted"] is True and r["driftMs"] < -29000 and called
