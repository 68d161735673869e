"""`limactl usernet`: the daemon of one user-v2 network (hidden, as in Lima).

The first member's host agent starts it (`store.usernet.join`); it runs

- `vde_switch -s NAME_qemu.vde`: the Ethernet switch every member's second NIC plugs
  into (QEMU's `-netdev vde`). Its stdin is a pipe this process holds: when the
  daemon dies, kill -9 included, the switch reads EOF and exits too.
- `slirpvde -s ... -n SUBNET`: the host at .2 and a DNS forwarder at .3 on the
  network, as Lima's user-v2 has them (user-mode NAT, no root).

and exits, taking both down, once no member's host agent holds its member lock.
Lima's daemon is gvisor-tap-vsock's; this one is made of Debian's vde2 instead, so
its `--endpoint` API and `--listen` fd socket (used by vz/krunkit) are refused.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from pylima.errors import LimaError

log = logging.getLogger("pylima")

POLL = 1.0  # seconds between member checks


def run_daemon(*, pidfile: str, endpoint: str, listen_qemu: str, listen: str, subnet: str,
               mtu: int, leases: dict[str, str]) -> int:
    from pylima.process import die_with_parent
    from pylima.store import usernet

    if endpoint:
        raise LimaError("`--endpoint` is not supported: pylima's user-v2 network has no "
                        "usernet API")
    if listen:
        raise LimaError("`--listen` is not supported: pylima's user-v2 network serves "
                        "QEMU only (`--listen-qemu`)")
    if mtu != 1500:
        raise LimaError(f"`--mtu {mtu}` is not supported: the switch carries 1500-byte frames")
    if not listen_qemu:
        raise LimaError("`--listen-qemu` is required (the switch's socket directory)")
    try:
        net = ipaddress.IPv4Network(subnet, strict=False)
    except ValueError as e:
        raise LimaError(f"invalid `--subnet` {subnet!r}: {e}") from e
    usernet.check_switch()
    switch = Path(listen_qemu)
    name = switch.parent.name
    if leases:
        with usernet.network_lock(name):
            cur = usernet.read_leases(name)
            for ip, mac in leases.items():
                cur.setdefault(ip, {"mac": mac.lower(), "instance": ""})
            usernet.write_leases(name, cur)
    if pidfile and os.path.exists(pidfile):
        raise LimaError(f"pidfile `{pidfile}` already exists")
    stop = False

    def on_signal(_sig: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    shutil.rmtree(switch, ignore_errors=True)
    children: list[subprocess.Popen[bytes]] = []
    try:
        # The pipe is the switch's life line (its console reads stdin; EOF ends it).
        sw = subprocess.Popen(["vde_switch", "-s", str(switch), "--dirmode", "0700",
                               "-m", "0600"], stdin=subprocess.PIPE,
                              stdout=subprocess.DEVNULL, preexec_fn=die_with_parent())
        children.append(sw)
        deadline = time.monotonic() + 10
        while not (switch / "ctl").exists():
            if sw.poll() is not None or time.monotonic() > deadline:
                raise LimaError(f"vde_switch did not start (status {sw.poll()})")
            time.sleep(0.02)
        children.append(subprocess.Popen(
            ["slirpvde", "-s", str(switch), "-n", str(net)], stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, preexec_fn=die_with_parent()))
        if pidfile:  # written once the network is up: the members wait for it
            Path(pidfile).write_text(f"{os.getpid()}\n")
        log.info("user-v2 network `%s` up: switch %s, host %s, DNS %s", name, switch,
                 net.network_address + 2, net.network_address + 3)
        while not stop:
            time.sleep(POLL)
            for prog, c in zip(("vde_switch", "slirpvde"), children, strict=False):
                if c.poll() is not None:
                    raise LimaError(f"`{prog}` exited with status {c.returncode}")
            with usernet.network_lock(name):
                if not usernet.member_locks_held(name):
                    log.info("user-v2 network `%s`: no member runs; stopping", name)
                    _teardown(children, switch, pidfile)
                    return 0
        return 0
    finally:
        _teardown(children, switch, pidfile)


def _teardown(children: list[subprocess.Popen[bytes]], switch: Path, pidfile: str) -> None:
    for c in reversed(children):
        if c.poll() is None:
            c.terminate()
            try:
                c.wait(5)
            except subprocess.TimeoutExpired:
                c.kill()
                c.wait()
    children.clear()
    shutil.rmtree(switch, ignore_errors=True)
    if pidfile:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(pidfile)
