"""The router of a user-v2 network, from the QEMU side: the member's host forwards.

The router (`usernet_plan.router_argv`, run by the network's daemon
`drivers.qemu.usernet`) is a QEMU whose user-mode stack is the network's host at .2.
An instance whose first user-v2 network replaces its user-mode network has no
`hostfwd` of its own: its SSH port and its port forwards are rules on the router, to
the member's address. Each
rule is recorded in `forwards/INSTANCE.json` (`store.usernet`) under the network's
lock, so that the member removes exactly its own, and whoever finds it gone (the
network's daemon, when its member lock is free; its next start) removes the rest.
The router's monitor takes one client at a time; the lock serialises them too.
"""

from __future__ import annotations

import asyncio
import logging
import platform
from typing import Any

from pylima.drivers.qemu.probe import GUEST_ARCHES, find_qemu_binary
from pylima.drivers.qemu.qmp import QMPClient
from pylima.errors import LimaError
from pylima.store.usernet import (
    ROUTER_NETDEV,
    hostfwd_rule,
    network_lock,
    read_forwards,
    router_qmp,
    write_forwards,
)

log = logging.getLogger("pylima")


def router_qemu() -> str:
    """A qemu-system binary for the router (any architecture: it runs no machine),
    the host's own first."""
    host = platform.machine().replace("arm64", "aarch64")
    first: LimaError | None = None
    for arch in (host, *[a for a in GUEST_ARCHES if a != host]):
        try:
            return find_qemu_binary(arch)
        except LimaError as e:
            first = first or e
    assert first is not None
    raise LimaError(f"{first.message} (the user-v2 network's router)", hint=first.hint)


def router_hmp(name: str, command_line: str) -> str:
    """One human-monitor command on the router (its output: empty on success)."""

    async def run() -> str:
        async with QMPClient(str(router_qmp(name))) as qmp:
            out = await qmp.execute("human-monitor-command", {"command-line": command_line})
        return str(out or "")

    try:
        return asyncio.run(run())
    except (OSError, LimaError) as e:
        msg = e.message if isinstance(e, LimaError) else str(e)
        return f"the router of network `{name}` did not answer: {msg}"


def add_forward(name: str, instance: str, protocol: str, host_ip: str, host_port: int,
                guest_ip: str, guest_port: int) -> str:
    """A `hostfwd` rule on the router for the member `instance`: "" or what failed.
    A rule of its own on the same host address goes first; another member's is not
    touched (the add fails: the port is in use)."""
    key = [protocol, host_ip, host_port]
    with network_lock(name):
        rules = read_forwards(name, instance)
        _take_rule(name, rules, key)
        out = router_hmp(name, f"hostfwd_add {ROUTER_NETDEV} "
                         + hostfwd_rule(protocol, host_ip, host_port, guest_ip, guest_port))
        if not out.strip():
            rules.append(key)
        write_forwards(name, instance, rules)
    return out


def remove_forward(name: str, instance: str, protocol: str, host_ip: str,
                   host_port: int) -> None:
    key = [protocol, host_ip, host_port]
    with network_lock(name):
        rules = read_forwards(name, instance)
        if _take_rule(name, rules, key):
            write_forwards(name, instance, rules)


def _take_rule(name: str, rules: list[list[Any]], key: list[Any]) -> bool:
    """Remove the member's own rule `key` from the router and from `rules`, if it is
    one of them; whether it was."""
    if key not in rules:
        return False
    _remove_rule(name, key)
    rules.remove(key)
    return True


def drop_forwards(name: str, instance: str) -> None:
    """Every rule the member added goes (it stops, or starts again after a death)."""
    with network_lock(name):
        drop_forwards_locked(name, instance)


def drop_forwards_locked(name: str, instance: str) -> None:
    """`drop_forwards`, for a caller that holds the network lock (the daemon)."""
    for key in read_forwards(name, instance):
        _remove_rule(name, key)
    write_forwards(name, instance, [])


def _remove_rule(name: str, key: list[Any]) -> None:
    protocol, host_ip, port = key
    host = f"[{host_ip}]" if ":" in str(host_ip) else host_ip
    out = router_hmp(name, f"hostfwd_remove {ROUTER_NETDEV} {protocol}:{host}:{port}")
    if out.strip():
        log.debug("hostfwd_remove on `%s`: %s", name, out.strip())
