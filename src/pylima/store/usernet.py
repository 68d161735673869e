"""The files of a user-v2 network, `$LIMA_HOME/_networks/NAME/`, and joining it.

A user-v2 network is a `vde_switch` (Debian's vde2) that the instances naming the
network plug a NIC into, and a router on it (QEMU's user-mode stack); `limactl
usernet` runs both (see `pylima.drivers.qemu.usernet`). Everything here is user
space: no tap, no bridge, no root.

- `leases.json`: address -> {"mac": MAC, "instance": NAME}. An instance keeps its
  address for as long as it exists (its MAC is stable, Lima's hash of its lima.yaml
  path); `limactl delete` gives it back. The guest gets the address statically,
  through the cidata network-config, so there is no DHCP on the switch.
- `hosts`: the members' names (`lima-NAME.internal`), /etc/hosts lines, rewritten with
  the leases; each host agent pushes it to its guest agent when it changes.
- `usernet_NAME.pid`, `NAME_qemu.vde/` (the switch's socket directory, QEMU's
  `-netdev vde,sock=`), `NAME_router.qmp` (the router's QMP socket),
  `usernet.NAME.std{out,err}.log`: the daemon's.
- `forwards/INSTANCE.json`: the router's `hostfwd` rules a member's host agent added
  (its SSH port, its port forwards: `drivers.qemu.router`), so that whoever finds the
  member gone (the daemon, or the member's next start) removes them.
- `members/INSTANCE.lock`: an flock each member's host agent holds for its whole life.
  The daemon exits when none is held; `lock` serialises that with a member joining.

The address plan (pure, `usernet_plan`) is Lima's: the networks.yaml entry's gateway
and netmask give the subnet; the host answers at .2 and DNS at .3 (the router); members
get .15 and up.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pylima import dirs
from pylima.errors import LimaError
from pylima.usernet_plan import (  # noqa: F401 - the plan's names, for the callers
    FIRST_MEMBER,
    PRIMARY_INTERFACE,
    ROUTER_NETDEV,
    SLIRP_SUBNET,
    UserNet,
    UserNic,
    allocate,
    hostfwd_rule,
    release,
    render_hosts,
    router_argv,
    user_net,
    user_v2_entries,
)

LEASES = "leases.json"
HOSTS = "hosts"
MEMBERS = "members"
FORWARDS = "forwards"
LOCK = "lock"
SWITCH_PACKAGE = "vde2"
DAEMON_WAIT = 10.0  # seconds for a new daemon's switch to appear


# ---------------------------------------------------------------- files


def network_dir(name: str) -> Path:
    return dirs.lima_home() / dirs.NETWORKS_DIR / name


def switch_dir(name: str) -> Path:
    return network_dir(name) / f"{name}_qemu.vde"


def pid_file(name: str) -> Path:
    return network_dir(name) / f"usernet_{name}.pid"


def router_qmp(name: str) -> Path:
    return network_dir(name) / f"{name}_router.qmp"


def log_file(name: str, stream: str) -> Path:
    return network_dir(name) / f"usernet.{name}.{stream}.log"


def hosts_file(name: str) -> Path:
    return network_dir(name) / HOSTS


@contextlib.contextmanager
def network_lock(name: str, timeout: float = 10.0) -> Iterator[None]:
    d = network_dir(name)
    d.mkdir(parents=True, exist_ok=True)
    fd = os.open(d / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LimaError(f"network `{name}` is locked by another process",
                                    hint=f"see {d / LOCK}") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)


def read_leases(name: str) -> dict[str, dict[str, str]]:
    try:
        data = json.loads((network_dir(name) / LEASES).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(ip): {str(k): str(x) for k, x in v.items()} for ip, v in data.items()
            if isinstance(v, dict)}


def write_leases(name: str, leases: Mapping[str, Mapping[str, str]]) -> None:
    d = network_dir(name)
    for fname, text in ((LEASES, json.dumps(leases, indent=1, sort_keys=True) + "\n"),
                        (HOSTS, render_hosts(leases))):
        tmp = d / f".{fname}.{os.getpid()}"
        tmp.write_text(text)
        os.replace(tmp, d / fname)


def lease(net: UserNet, mac: str, instance: str) -> str:
    """The instance's address on `net` (allocated on its first start, kept after)."""
    with network_lock(net.name):
        leases, addr = allocate(read_leases(net.name), net, mac, instance)
        write_leases(net.name, leases)
    return addr


def release_instance(instance: str) -> None:
    """`limactl delete`: the instance's addresses go back to every user-v2 network."""
    base = dirs.lima_home() / dirs.NETWORKS_DIR
    if not base.is_dir():
        return
    for d in sorted(base.iterdir()):
        if not (d / LEASES).exists():
            continue
        with network_lock(d.name):
            leases = read_leases(d.name)
            kept = release(leases, instance)
            if kept != leases:
                write_leases(d.name, kept)


def daemon_pid(name: str) -> int:
    """The running daemon's pid, 0 when none runs."""
    try:
        pid = int(pid_file(name).read_text().split()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return 0
    return pid


def member_locks_held(name: str) -> list[str]:
    """The members whose host agent holds its member lock (i.e. runs)."""
    d = network_dir(name) / MEMBERS
    held = []
    for p in sorted(d.glob("*.lock")) if d.is_dir() else []:
        fd = os.open(p, os.O_RDWR | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            held.append(p.stem)
        finally:
            os.close(fd)
    return held


def join(net: UserNet, instance: str) -> int:
    """Become a member of `net`: take the member lock (returned; the caller keeps it
    open for its life) and start the daemon when none runs."""
    import subprocess
    import sys

    check_switch()
    check_switch_path(net.name)
    with network_lock(net.name):
        mdir = network_dir(net.name) / MEMBERS
        mdir.mkdir(parents=True, exist_ok=True)
        fd = os.open(mdir / f"{instance}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LimaError(f"instance `{instance}` is already a member of network "
                            f"`{net.name}`") from None
        if daemon_pid(net.name):
            return fd
        with contextlib.suppress(FileNotFoundError):
            pid_file(net.name).unlink()
        for member in forwarding_members(net.name):  # a new router has no rules
            forwards_file(net.name, member).unlink()
        argv = [sys.executable, "-m", "pylima", "usernet", "-p", str(pid_file(net.name)),
                "--listen-qemu", str(switch_dir(net.name)), "--subnet", str(net.subnet)]
        with open(log_file(net.name, "stdout"), "wb") as out, \
                open(log_file(net.name, "stderr"), "wb") as err:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                    start_new_session=True, close_fds=True)
        deadline = time.monotonic() + DAEMON_WAIT
        ctl = switch_dir(net.name) / "ctl"
        while not (ctl.exists() and daemon_pid(net.name)):
            if proc.poll() is not None or time.monotonic() > deadline:
                os.close(fd)
                tail = log_file(net.name, "stderr").read_text(errors="replace").strip()
                raise LimaError(f"the user-v2 network `{net.name}` did not start"
                                + (f": {tail.splitlines()[-1]}" if tail else ""),
                                hint=f"see {network_dir(net.name)}/usernet.*.log")
            time.sleep(0.05)
        return fd


UNIX_PATH_MAX = 108
SWITCH_SOCKET_ROOM = 24  # the switch's sockets in its directory: ctl, .NNNNN-NNNNN, ...


def check_switch_path(name: str) -> None:
    """The switch's Unix sockets must fit sun_path (as Lima checks its usernet sockets)."""
    sw = str(switch_dir(name))
    if len(sw) + SWITCH_SOCKET_ROOM >= UNIX_PATH_MAX:
        raise LimaError(f"usernet socket path `{sw}` too long: must be less than "
                        f"{UNIX_PATH_MAX - SWITCH_SOCKET_ROOM} characters, but is {len(sw)}",
                        hint="use a shorter LIMA_HOME")


def check_switch() -> None:
    """One clear line when the switch is not installed (the router is a QEMU, which
    the QEMU driver checks for)."""
    import shutil

    if shutil.which("vde_switch") is None:
        raise LimaError("`vde_switch` not found: user-v2 networks need it",
                        hint=f"install the Debian package `{SWITCH_PACKAGE}`")


# ---------------------------------------------------------------- the router's forwards


def forwards_file(name: str, instance: str) -> Path:
    return network_dir(name) / FORWARDS / f"{instance}.json"


def forwarding_members(name: str) -> list[str]:
    d = network_dir(name) / FORWARDS
    return sorted(p.stem for p in d.glob("*.json")) if d.is_dir() else []


def read_forwards(name: str, instance: str) -> list[list[Any]]:
    try:
        data = json.loads(forwards_file(name, instance).read_text())
    except (OSError, ValueError):
        return []
    return [r for r in data if isinstance(r, list) and len(r) == 3] \
        if isinstance(data, list) else []


def write_forwards(name: str, instance: str, rules: list[list[Any]]) -> None:
    f = forwards_file(name, instance)
    if not rules:
        with contextlib.suppress(FileNotFoundError):
            f.unlink()
        return
    f.parent.mkdir(parents=True, exist_ok=True)
    tmp = f.with_name(f".{f.name}.{os.getpid()}")
    tmp.write_text(json.dumps(rules) + "\n")
    os.replace(tmp, f)


def check_networks(cfg: Mapping[str, Any]) -> None:
    """Before a start: the switch is installed, and each user-v2 network the config
    names is defined and free (not the guests' slirp subnet, no host interface in it);
    one clear line when not."""
    entries = user_v2_entries(cfg)
    if not entries:
        return
    check_switch()
    from pylima.store.networks import host_ipv4_addresses, load_networks, subnet_collision

    nets = load_networks()["networks"]
    host_addrs = host_ipv4_addresses()
    for nw in entries:
        name = str(nw["lima"])
        entry = nets.get(name)
        if not isinstance(entry, dict):
            raise LimaError(f"network `{name}` is not defined in networks.yaml",
                            hint="see `limactl network list`")
        if entry.get("mode") != "user-v2":
            raise LimaError(f"network `{name}` (mode `{entry.get('mode')}`) is only "
                            "supported on macOS right now")
        net = user_net(name, entry)
        if net.subnet.overlaps(SLIRP_SUBNET):
            raise LimaError(f"network `{name}`: subnet {net.subnet} overlaps the guests' "
                            f"user-mode network {SLIRP_SUBNET}",
                            hint="re-create it with another `--gateway`")
        why = subnet_collision(name, entry, {}, host_addrs)
        if why:
            raise LimaError(why, hint="re-create it with another `--gateway`")
        check_switch_path(name)


def instance_nics(cfg: Mapping[str, Any], instance: str,
                  entries: Mapping[str, Mapping[str, Any]]) -> list[UserNic]:
    """Lease an address on each user-v2 network the config names (`entries`: the
    networks.yaml entries by name)."""
    nics = []
    for i, nw in enumerate(user_v2_entries(cfg)):
        name = str(nw["lima"])
        entry = entries.get(name)
        if entry is None or entry.get("mode") != "user-v2":
            raise LimaError(f"network `{name}` is not a user-v2 network in networks.yaml")
        net = user_net(name, entry)
        mac = str(nw.get("macAddress"))
        addr = lease(net, mac, instance)
        # As Lima: the first one replaces the default user-mode network (eth0).
        interface = PRIMARY_INTERFACE if i == 0 else str(nw.get("interface") or "lima0")
        nics.append(UserNic(name, interface, mac, addr, net.prefixlen, str(switch_dir(name)),
                            primary=i == 0, host=net.host, dns=net.dns))
    return nics


def primary_member(cfg: Mapping[str, Any], instance: str) -> tuple[str, str] | None:
    """(network, address) of the instance's first user-v2 network, the one that
    replaces its default user-mode network; None when it names none. The address is
    its lease (`instance_nics` made it before the boot)."""
    entries = user_v2_entries(cfg)
    if not entries:
        return None
    name, mac = str(entries[0]["lima"]), str(entries[0].get("macAddress")).lower()
    for ip, v in read_leases(name).items():
        if v.get("mac", "").lower() == mac and v.get("instance") == instance:
            return name, ip
    raise LimaError(f"instance `{instance}` has no address on network `{name}`",
                    hint=f"see {network_dir(name) / LEASES}")
