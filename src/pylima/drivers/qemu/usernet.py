"""`limactl usernet`: the daemon of one user-v2 network (hidden, as in Lima).

The first member's host agent starts it (`store.usernet.join`); it runs

- `vde_switch -s NAME_qemu.vde`: the Ethernet switch every member's NIC plugs into
  (QEMU's `-netdev vde`). Its stdin is a pipe this process holds: when the daemon
  dies, kill -9 included, the switch reads EOF and exits too.
- the router, `qemu-system-* -machine none` with a user-mode netdev (libslirp) and a
  port on the switch joined by QEMU's hub (`usernet_plan.router_argv`): the host at
  .2 and a DNS forwarder at .3 on the network, outbound NAT, and the members' SSH and
  port forwards (`hostfwd_add` over its QMP socket `NAME_router.qmp`), as Lima's
  user-v2 has them (user mode, no root). It dies with the daemon (PDEATHSIG).

and exits, taking both down, once no member's host agent holds its member lock. A
member whose host agent died without removing its forwards has them removed here.
Lima's daemon is gvisor-tap-vsock's; this one is made of Debian's vde2 and QEMU
instead, so its `--endpoint` API and `--listen` fd socket (used by vz/krunkit) are
refused.
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
from pylima.usernet_plan import UserNet, router_argv

log = logging.getLogger("pylima")

POLL = 1.0  # seconds between member checks


def run_daemon(*, pidfile: str, endpoint: str, listen_qemu: str, listen: str, subnet: str,
               mtu: int, leases: dict[str, str]) -> int:
    from pylima.drivers.qemu import router as qemu_router
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
    plan = UserNet(name, net)
    qmp = usernet.router_qmp(name)
    router = router_argv(qemu_router.router_qemu(), plan, str(switch), str(qmp))
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
        with contextlib.suppress(FileNotFoundError):
            qmp.unlink()
        children.append(subprocess.Popen(router, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL,
                                         preexec_fn=die_with_parent()))
        while not qmp.exists():
            if children[1].poll() is not None or time.monotonic() > deadline:
                raise LimaError(f"the router did not start (status {children[1].poll()})")
            time.sleep(0.02)
        os.chmod(qmp, 0o600)
        if pidfile:  # written once the network is up: the members wait for it
            Path(pidfile).write_text(f"{os.getpid()}\n")
        log.info("user-v2 network `%s` up: switch %s, host %s, DNS %s", name, switch,
                 net.network_address + 2, net.network_address + 3)
        while not stop:
            time.sleep(POLL)
            for prog, c in zip(("vde_switch", "the router"), children, strict=False):
                if c.poll() is not None:
                    raise LimaError(f"{prog} exited with status {c.returncode}")
            with usernet.network_lock(name):
                held = usernet.member_locks_held(name)
                if not held:
                    log.info("user-v2 network `%s`: no member runs; stopping", name)
                    _teardown(children, switch, pidfile, qmp)
                    return 0
                for member in usernet.forwarding_members(name):
                    if member not in held:
                        log.info("user-v2 network `%s`: `%s` is gone; removing its "
                                 "forwards", name, member)
                        qemu_router.drop_forwards_locked(name, member)
        return 0
    finally:
        _teardown(children, switch, pidfile, qmp)


def _teardown(children: list[subprocess.Popen[bytes]], switch: Path, pidfile: str,
              qmp: Path) -> None:
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
    with contextlib.suppress(FileNotFoundError):
        qmp.unlink()
    if pidfile:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(pidfile)
