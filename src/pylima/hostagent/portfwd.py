"""Port forwarding: Lima's `portForwards` rules applied to the listening sockets the
guest agent reports.

The rules are Lima's (first match wins; guest port 22 and the SSH port are never
forwarded; an implicit last rule forwards guest loopback/any-address ports to the
same port on the host's 127.0.0.1). pylima adds one safety rule: the implicit rule
never makes the host listen on a privileged port (below 1024); that takes an
explicit rule.

The data path is the driver's own host port forwarding (`drivers.HostPortForwarding`;
QEMU's user-mode `hostfwd_add`, on the instance's QEMU or, when a user-v2 network
replaces its user-mode network, on that network's router), which moves several times
the bytes an SSH tunnel does under emulation (the guest's sshd is CPU-bound there):
guest sockets bound to the driver's guest address or to any address are reached
directly; sockets bound to a guest loopback address are reached through a relay the
guest agent opens on the guest address (splice(2) copies, in the guest kernel). The
driver binds the host side itself, so the host listens exactly on the rule's address
and port, and nothing else.
Unix-socket rules (`guestSocket`/`hostSocket`, `reverse`), TCP to an IPv6 host address
and `static` rules go over the SSH master connection, as in Lima. UDP to an IPv6 host
address (which neither QEMU's user network nor SSH carries) goes through QEMU's
forwarding on an IPv4 loopback port that a `UDPRelay` of the host agent feeds.

The rule matching (`match_rule`, `effective_rules`, `data_path`) is pure.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pylima.drivers import HostPortForwarding

log = logging.getLogger("pylima.hostagent")

SSH_GUEST_PORT = 22
FIRST_UNPRIVILEGED_PORT = 1024


# ---- the pure part ----


@dataclass(frozen=True, order=True)
class GuestPort:
    """A listening socket in the guest, as the guest agent reports it."""

    protocol: str  # tcp | udp
    ip: str
    port: int

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> GuestPort:
        return cls(str(d["protocol"]), str(d["ip"]), int(d["port"]))

    @property
    def addr(self) -> str:
        return host_string(self.ip, self.port)


def host_string(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


@dataclass(frozen=True)
class Match:
    rule: dict[str, Any]
    host_ip: str
    host_port: int
    host_socket: str = ""  # `guestPort` + `hostSocket`: a unix socket on the host

    @property
    def host_addr(self) -> str:
        return self.host_socket or host_string(self.host_ip, self.host_port)


def _ip(value: Any) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(str(value))
    except ValueError:
        return None


def effective_rules(rules: Sequence[dict[str, Any]], ssh_local_port: int) -> list[dict[str, Any]]:
    """The instance's (filled) rules between Lima's two implicit parts: first the SSH
    ports, ignored on every guest address, last the catch-all forward."""
    def block(port: int) -> dict[str, Any]:
        return {"guestIP": "0.0.0.0", "guestIPMustBeZero": False, "guestPortRange": [port, port],
                "hostIP": "127.0.0.1", "hostPortRange": [port, port], "proto": "any",
                "ignore": True}

    out = [block(SSH_GUEST_PORT)]
    if ssh_local_port and ssh_local_port != SSH_GUEST_PORT:
        out.append(block(ssh_local_port))
    out += [dict(r) for r in rules]
    out.append({"guestIP": "127.0.0.1", "guestIPMustBeZero": False,
                "guestPortRange": [1, 65535], "hostIP": "127.0.0.1",
                "hostPortRange": [1, 65535], "proto": "any", "implicit": True})
    return out


def match_rule(rules: Sequence[dict[str, Any]], guest: GuestPort) -> Match | None:
    """The forward for `guest` (Lima's first-match semantics), or None."""
    gip = _ip(guest.ip)
    if gip is None:
        return None
    for rule in rules:
        if rule.get("guestSocket"):
            continue
        proto = rule.get("proto") or "any"
        if proto != "any" and proto != guest.protocol:
            continue
        lo, hi = (int(x) for x in rule.get("guestPortRange") or [0, 0])
        if not lo <= guest.port <= hi:
            continue
        rip = _ip(rule.get("guestIP") or "127.0.0.1")
        must_be_zero = bool(rule.get("guestIPMustBeZero"))
        if gip.is_unspecified or gip == rip:
            pass
        elif gip == ipaddress.IPv6Address("::1") and rip == ipaddress.IPv4Address("127.0.0.1"):
            pass
        elif rip is not None and rip.is_unspecified and not must_be_zero:
            pass
        else:
            continue
        if rule.get("ignore"):
            if gip.is_unspecified and rip is not None and not rip.is_unspecified:
                continue
            return None
        if rule.get("hostSocket"):
            return Match(rule, "", 0, str(rule["hostSocket"]))
        hlo = int((rule.get("hostPortRange") or [lo, hi])[0])
        host_port = guest.port + hlo - lo
        return Match(rule, str(rule.get("hostIP") or "127.0.0.1"), host_port)
    return None


# sun_path of struct sockaddr_un, less the terminating NUL
UNIX_PATH_MAX = 108


def refusal(m: Match, protocol: str = "tcp") -> str | None:
    """Why pylima does not set up a forward that the rules allow (None: it does)."""
    if m.host_socket:
        if protocol != "tcp":
            return f"{protocol.upper()} cannot be forwarded to a unix socket"
        if len(os.fsencode(m.host_socket)) >= UNIX_PATH_MAX:
            return (f"socket path `{m.host_socket}` is too long: >= "
                    f"UNIX_PATH_MAX={UNIX_PATH_MAX}")
        return None
    if m.rule.get("implicit") and m.host_port < FIRST_UNPRIVILEGED_PORT:
        return (f"host port {m.host_port} is privileged; add a `portForwards` rule for it "
                "to forward it")
    if not 0 < m.host_port < 65536:
        return f"host port {m.host_port} is out of range"
    return None


def _is_ipv6(ip: str) -> bool:
    addr = _ip(ip)
    return addr is not None and addr.version == 6


def over_ssh(m: Match, protocol: str = "tcp") -> bool:
    """Forwards QEMU's user network cannot make (it binds IPv4 host addresses, TCP or
    UDP ports, nothing else) go over the SSH master, as in Lima: a unix socket on the
    host, TCP to an IPv6 host address."""
    return bool(m.host_socket) or (protocol == "tcp" and _is_ipv6(m.host_ip))


def needs_udp_relay(m: Match, protocol: str) -> bool:
    """UDP to an IPv6 host address: through a host-side `UDPRelay` (SSH has no UDP)."""
    return protocol == "udp" and _is_ipv6(m.host_ip)


def ssh_local_forward(m: Match, guest: GuestPort) -> list[str]:
    """`ssh -O forward` arguments for `guest` per `m`: sshd in the guest connects to
    the guest socket (to its loopback address for one bound to any address)."""
    gip = guest.ip
    addr = _ip(gip)
    if addr is not None and addr.is_unspecified:
        gip = "::1" if addr.version == 6 else "127.0.0.1"
    host = m.host_socket or f"{_bracket(m.host_ip)}:{m.host_port}"
    return ["-L", f"{host}:{_bracket(gip)}:{guest.port}"]


def data_path(guest: GuestPort, guest_address: str) -> str:
    """"direct" when the driver's forwarding reaches the socket (bound to the guest's
    network address or to any address), else "relay" (through the guest agent)."""
    ip = _ip(guest.ip)
    if ip is not None and (ip.is_unspecified or str(ip) == guest_address):
        return "direct"
    return "relay"


def socket_rules(rules: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rules if r.get("guestSocket") and not r.get("ignore")]


def static_rules(rules: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rules if r.get("static") and not r.get("guestSocket")
            and not r.get("ignore")]


def is_static(rules: Iterable[dict[str, Any]], guest: GuestPort) -> bool:
    for r in static_rules(rules):
        lo, hi = (int(x) for x in r.get("guestPortRange") or [0, 0])
        if lo <= guest.port <= hi:
            return True
    return False


# ---- the forwarder ----


@dataclass
class Active:
    guest: GuestPort
    host_ip: str
    host_port: int
    via: str  # direct | relay | ssh
    relay_port: int = 0
    host_socket: str = ""
    ssh_spec: tuple[str, ...] = ()  # via ssh: the `ssh -O forward` arguments
    # UDP to an IPv6 host address: the driver forwards this IPv4 loopback port, and
    # `udp_relay` carries the datagrams between it and the rule's address
    driver_port: int = 0
    udp_relay: UDPRelay | None = None

    @property
    def host_addr(self) -> str:
        return self.host_socket or host_string(self.host_ip, self.host_port)

    def to_json(self) -> dict[str, Any]:
        return {"protocol": self.guest.protocol,
                "guestAddr": self.guest.addr, "hostAddr": self.host_addr, "via": self.via}


Request = Callable[..., Awaitable[dict[str, Any]]]
EmitEvent = Callable[[dict[str, Any]], None]
# `ssh -O forward|cancel ARGS...` over the instance's master; "" or ssh's error.
SSHControl = Callable[[str, Sequence[str]], Awaitable[str]]


async def _no_ssh(verb: str, args: Sequence[str]) -> str:
    return "no SSH master connection to forward over"


class PortForwarder:
    """Applies the guest agent's reports: one driver forward per forwarded guest socket.

    `forwarding` is the driver's `HostPortForwarding` (None: every forward goes over the
    SSH master, for drivers that cannot forward host ports), reaching the guest at
    `guest_address`; `request` asks the guest agent for something; `on_event` gets Lima's
    `portForward` event objects; `on_change` is called when the set of active
    forwards changes.
    """

    def __init__(self, rules: Sequence[dict[str, Any]], ssh_local_port: int,
                 forwarding: HostPortForwarding | None, guest_address: str,
                 request: Request,
                 on_event: EmitEvent, on_change: Callable[[], None] = lambda: None,
                 ssh_control: SSHControl = _no_ssh) -> None:
        self.rules = effective_rules(rules, ssh_local_port)
        self.ssh_control = ssh_control
        self.forwarding = forwarding
        self.guest_address = guest_address
        self.request = request
        self.on_event = on_event
        self.on_change = on_change
        self.known: set[GuestPort] = set()
        self.active: dict[GuestPort, Active] = {}
        self.session = ""
        self.lock = asyncio.Lock()
        self.failed: set[tuple[str, str]] = set()  # (protocol, host address) warned about

    def host_sockets(self) -> list[str]:
        """The unix sockets on the host that active forwards listen on."""
        return [a.host_socket for a in self.active.values() if a.host_socket]

    def forwards(self) -> list[dict[str, Any]]:
        return [a.to_json() for a in sorted(self.active.values(), key=lambda a: a.guest)]

    async def snapshot(self, ports: Iterable[GuestPort], session: str) -> None:
        async with self.lock:
            now = set(ports)
            if session != self.session:
                # A new guest agent: its relays (if any) are gone; set everything up again.
                self.session = session
                await self._remove(set(self.known))
                self.known = set()
            await self._remove(self.known - now)
            await self._add(now - self.known)

    async def update(self, added: Iterable[GuestPort], removed: Iterable[GuestPort]) -> None:
        async with self.lock:
            await self._remove(set(removed) & self.known)
            await self._add(set(added) - self.known)

    async def close(self) -> None:
        async with self.lock:
            await self._remove(set(self.known))

    async def _add(self, ports: set[GuestPort]) -> None:
        for guest in sorted(ports):
            self.known.add(guest)
            await self._forward(guest)
        if ports:
            self.on_change()

    async def _remove(self, ports: set[GuestPort]) -> None:
        for guest in sorted(ports):
            self.known.discard(guest)
            active = self.active.pop(guest, None)
            if active is None:
                continue
            host = active.host_addr
            log.info("Stopping forwarding %s from %s to %s", guest.protocol.upper(),
                     guest.addr, host)
            self.on_event({"type": "stopping", "protocol": guest.protocol,
                           "guestAddr": guest.addr, "hostAddr": host})
            if active.via == "ssh":
                err = await self.ssh_control("cancel", active.ssh_spec)
                if err:
                    log.debug("ssh -O cancel %s: %s", " ".join(active.ssh_spec), err)
                if active.host_socket:
                    with contextlib.suppress(OSError):
                        os.unlink(active.host_socket)
            elif active.udp_relay is not None and self.forwarding is not None:
                active.udp_relay.close()
                await self.forwarding.remove_host_forward(guest.protocol, LOOPBACK_V4,
                                                          active.driver_port)
            elif self.forwarding is not None:
                await self.forwarding.remove_host_forward(guest.protocol, active.host_ip,
                                                          active.host_port)
            if active.relay_port:
                with contextlib.suppress(Exception):
                    await self.request("unrelay", protocol=guest.protocol,
                                       port=active.relay_port)
        # A freed host address may now serve another guest socket waiting for it (not
        # one that is going away too).
        freed = {g.port for g in ports}
        for other in sorted(self.known):
            if other not in self.active and other.port in freed:
                await self._forward(other, quiet=True)
        if ports:
            self.on_change()

    async def _forward(self, guest: GuestPort, quiet: bool = False) -> None:
        if is_static(self.rules, guest):
            return  # forwarded over SSH since the start
        m = match_rule(self.rules, guest)
        if m is None:
            if not quiet:
                log.info("Not forwarding %s %s", guest.protocol.upper(), guest.addr)
                self.on_event({"type": "not-forwarding", "protocol": guest.protocol,
                               "guestAddr": guest.addr})
            return
        why = refusal(m, guest.protocol)
        if why:
            if not quiet:
                log.info("Not forwarding %s %s: %s", guest.protocol.upper(), guest.addr, why)
                self.on_event({"type": "not-forwarding", "protocol": guest.protocol,
                               "guestAddr": guest.addr, "error": why})
            return
        host = m.host_addr
        for a in self.active.values():
            if (a.guest.protocol, a.host_addr) == (guest.protocol, host):
                # e.g. the same server on 0.0.0.0 and ::, or 127.0.0.1 and ::1
                log.debug("%s %s: %s is already forwarded from %s", guest.protocol,
                          guest.addr, host, a.guest.addr)
                return
        if self.forwarding is None and guest.protocol != "tcp":
            # a driver without host port forwarding has only SSH, which carries no UDP
            if not quiet:
                log.info("Not forwarding %s %s: no UDP forwarding with this driver",
                         guest.protocol.upper(), guest.addr)
            return
        if over_ssh(m, guest.protocol) or self.forwarding is None:
            await self._forward_over_ssh(guest, m)
            return
        via = data_path(guest, self.guest_address)
        target_port, relay_port = guest.port, 0
        if via == "relay":
            try:
                reply = await self.request("relay", protocol=guest.protocol,
                                           bind=self.guest_address, target=guest.ip,
                                           port=guest.port)
            except (OSError, TimeoutError, ConnectionError) as e:
                reply = {"error": str(e) or type(e).__name__}
            if reply.get("error") or not reply.get("port"):
                self._failed(guest, host, f"the guest agent could not relay: "
                             f"{reply.get('error') or 'no port'}")
                return
            target_port = relay_port = int(reply["port"])
        assert self.forwarding is not None
        udp_relay = None
        if needs_udp_relay(m, guest.protocol):
            driver_ip, driver_port = LOOPBACK_V4, free_udp_port()
        else:
            driver_ip, driver_port = m.host_ip, m.host_port
        error = await self.forwarding.add_host_forward(guest.protocol, driver_ip, driver_port,
                                                       target_port)
        if not error and driver_ip != m.host_ip:
            udp_relay = UDPRelay((LOOPBACK_V4, driver_port))
            error = await udp_relay.listen(m.host_ip, m.host_port)
            if error:
                await self.forwarding.remove_host_forward(guest.protocol, driver_ip,
                                                          driver_port)
        if error:
            if relay_port:
                with contextlib.suppress(Exception):
                    await self.request("unrelay", protocol=guest.protocol, port=relay_port)
            self._failed(guest, host, error)
            return
        log.info("Forwarding %s from %s to %s", guest.protocol.upper(), guest.addr, host)
        self.on_event({"type": "forwarding", "protocol": guest.protocol,
                       "guestAddr": guest.addr, "hostAddr": host})
        self.active[guest] = Active(guest, m.host_ip, m.host_port, via, relay_port,
                                    driver_port=driver_port if udp_relay else 0,
                                    udp_relay=udp_relay)

    async def _forward_over_ssh(self, guest: GuestPort, m: Match) -> None:
        host = m.host_addr
        spec = tuple(ssh_local_forward(m, guest))
        if m.host_socket:
            try:
                Path(m.host_socket).parent.mkdir(parents=True, exist_ok=True)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(m.host_socket)  # a stale socket of an earlier run
            except OSError as e:
                self._failed(guest, host, f"cannot create the socket `{m.host_socket}`: "
                             f"{e.strerror or e}")
                return
        error = await self.ssh_control("forward", spec)
        if error:
            self._failed(guest, host, error)
            return
        log.info("Forwarding %s from %s to %s", guest.protocol.upper(), guest.addr, host)
        self.on_event({"type": "forwarding", "protocol": guest.protocol,
                       "guestAddr": guest.addr, "hostAddr": host})
        self.active[guest] = Active(guest, m.host_ip, m.host_port, "ssh",
                                    host_socket=m.host_socket, ssh_spec=spec)

    async def reforward_ssh(self) -> None:
        """A new SSH master: the forwards that rode on the old one, once more."""
        async with self.lock:
            for a in list(self.active.values()):
                if a.via != "ssh":
                    continue
                if a.host_socket:
                    with contextlib.suppress(OSError):
                        os.unlink(a.host_socket)
                error = await self.ssh_control("forward", a.ssh_spec)
                if error:
                    self.active.pop(a.guest, None)
                    self._failed(a.guest, a.host_addr, error)
            self.on_change()

    def _failed(self, guest: GuestPort, host: str, why: str) -> None:
        if (guest.protocol, host) in self.failed:
            # e.g. the same server on 0.0.0.0 and ::: one warning is enough
            log.debug("not forwarding %s %s either: %s", guest.protocol, guest.addr, why)
            return
        self.failed.add((guest.protocol, host))
        log.warning("failed to set up forwarding %s from %s to %s: %s",
                    guest.protocol.upper(), guest.addr, host, why)
        self.on_event({"type": "failed", "protocol": guest.protocol,
                       "guestAddr": guest.addr, "hostAddr": host, "error": why})


LOOPBACK_V4 = "127.0.0.1"


def free_udp_port() -> int:
    """A UDP port of 127.0.0.1 that nothing holds now."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((LOOPBACK_V4, 0))
        return int(s.getsockname()[1])


class UDPRelay:
    """Datagrams between a host address (IPv6) and `target` (an IPv4 address and port):
    each client gets its own socket towards `target`, so that replies find their way
    back to it, and a client quiet for `idle` seconds is forgotten (as a NAT does)."""

    def __init__(self, target: tuple[str, int], idle: float = 120.0) -> None:
        self.target = target
        self.idle = idle
        self.transport: asyncio.DatagramTransport | None = None
        self.clients: dict[Any, tuple[Any, float]] = {}  # address -> (socket, last use)
        self._sweep: asyncio.TimerHandle | None = None

    async def listen(self, host_ip: str, host_port: int) -> str:
        """Listen on host_ip:host_port; "" or why not."""
        import socket

        loop = asyncio.get_running_loop()
        relay = self

        class Listener(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: Any) -> None:
                relay._from_client(data, addr)

        try:
            transport, _ = await loop.create_datagram_endpoint(
                Listener, local_addr=(host_ip, host_port), family=socket.AF_INET6)
        except OSError as e:
            return f"cannot listen on {host_string(host_ip, host_port)}: {e.strerror or e}"
        self.transport = transport
        self._sweep = loop.call_later(self.idle, self._forget_idle)
        return ""

    def _from_client(self, data: bytes, addr: Any) -> None:
        import socket
        import time

        entry = self.clients.get(addr)
        if entry is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setblocking(False)
            try:
                sock.connect(self.target)
            except OSError:
                sock.close()
                return
            asyncio.get_running_loop().add_reader(sock.fileno(), self._from_target, addr)
            entry = (sock, 0.0)
        self.clients[addr] = (entry[0], time.monotonic())
        with contextlib.suppress(OSError):  # a full buffer drops it, as UDP may
            entry[0].send(data)

    def _from_target(self, addr: Any) -> None:
        entry = self.clients.get(addr)
        if entry is None or self.transport is None:
            return
        try:
            data = entry[0].recv(65535)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # e.g. ECONNREFUSED from an ICMP error: nothing to pass on
            return
        self.transport.sendto(data, addr)

    def _drop(self, addr: Any) -> None:
        sock, _ = self.clients.pop(addr)
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(sock.fileno())
        sock.close()

    def _forget_idle(self) -> None:
        import time

        now = time.monotonic()
        for addr in [a for a, (_, last) in self.clients.items() if now - last > self.idle]:
            self._drop(addr)
        self._sweep = asyncio.get_running_loop().call_later(self.idle, self._forget_idle)

    def close(self) -> None:
        if self._sweep is not None:
            self._sweep.cancel()
        for addr in list(self.clients):
            self._drop(addr)
        if self.transport is not None:
            self.transport.close()
            self.transport = None


def _bracket(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip


# ---- the guest agent link ----


class GuestAgentLink:
    """JSON lines with the guest agent over a byte stream (ga.sock, or SSH stdio)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 on_message: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        self.reader, self.writer = reader, writer
        self.on_message = on_message
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.next_id = 1
        self.snapshot_seen = asyncio.Event()

    async def send(self, msg: dict[str, Any]) -> None:
        self.writer.write((json.dumps(msg, separators=(",", ":")) + "\n").encode())
        await self.writer.drain()

    async def request(self, op: str, timeout: float = 30.0, **args: Any) -> dict[str, Any]:
        rid = self.next_id
        self.next_id += 1
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[rid] = fut
        try:
            await self.send({"op": op, "id": rid, **args})
            return await asyncio.wait_for(fut, timeout)
        finally:
            self.pending.pop(rid, None)

    async def run(self) -> None:
        """Read messages until EOF. Reports are handled in order by a worker task, so
        that a handler can await a reply (which this loop reads) without deadlock."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

        async def worker() -> None:
            while True:
                msg = await queue.get()
                try:
                    await self.on_message(msg)
                except Exception:  # one bad report must not stop forwarding
                    log.exception("guest agent report %s", msg.get("op"))

        task = asyncio.create_task(worker())
        try:
            await self._read(queue)
        finally:
            task.cancel()

    async def _read(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        while True:
            line = await self.reader.readline()
            if not line:
                return
            try:
                msg = json.loads(line)
            except ValueError:
                log.debug("guest agent: %s", line.decode(errors="replace").rstrip())
                continue
            if not isinstance(msg, dict):
                continue
            if msg.get("op") == "reply":
                fut = self.pending.get(msg.get("id") or 0)
                if fut is not None and not fut.done():
                    fut.set_result(msg)
                continue
            if msg.get("op") == "snapshot":
                self.snapshot_seen.set()
            queue.put_nowait(msg)

    async def hello_until_answered(self, interval: float = 2.0) -> None:
        while not self.snapshot_seen.is_set():
            with contextlib.suppress(ConnectionError, OSError):
                await self.send({"op": "hello"})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.snapshot_seen.wait(), interval)


def write_state(path: Path, forwards: list[dict[str, Any]]) -> None:
    """The active forwards, for `limactl list` (written atomically)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(forwards) + "\n")
    os.replace(tmp, path)


def ssh_forward_args(rule: dict[str, Any]) -> list[tuple[list[str], dict[str, Any]]]:
    """The `ssh -O forward` arguments of a unix-socket or static rule, each with the
    record `limactl list` shows for it."""
    if rule.get("guestSocket"):
        guest, host = str(rule["guestSocket"]), str(rule.get("hostSocket") or "")
        if not host:
            return []
        record = {"protocol": "unix", "guestAddr": guest, "hostAddr": host, "via": "ssh"}
        if rule.get("reverse"):
            return [(["-R", f"{guest}:{host}"], {**record, "reverse": True})]
        return [(["-L", f"{host}:{guest}"], record)]
    lo, hi = (int(x) for x in rule.get("guestPortRange") or [0, 0])
    hlo = int((rule.get("hostPortRange") or [lo, hi])[0])
    gip = str(rule.get("guestIP") or "127.0.0.1")
    if (_ip(gip) or ipaddress.IPv4Address("0.0.0.0")).is_unspecified:
        gip = "127.0.0.1"  # sshd connects from inside the guest
    hip = str(rule.get("hostIP") or "127.0.0.1")
    out = []
    for port in range(lo, hi + 1):
        hp = port + hlo - lo
        out.append((["-L", f"{_bracket(hip)}:{hp}:{_bracket(gip)}:{port}"],
                    {"protocol": "tcp", "guestAddr": host_string(gip, port),
                     "hostAddr": host_string(hip, hp), "via": "ssh", "static": True}))
    return out
