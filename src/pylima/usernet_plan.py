"""The address plan of a user-v2 network and an instance's NICs on it. PURE.

The networks.yaml entry's gateway and netmask give the subnet (as in Lima); the host
answers at .2 and DNS at .3 (the network's router, QEMU's user-mode stack); members get
.15 and up, one lease per NIC MAC, so that an instance keeps its address. As in Lima,
an instance's first user-v2 network replaces the default user-mode network: its NIC is
the guest's eth0, with the default route, and host.lima.internal is that network's .2.
The files that hold the leases and the daemon that runs the network are
`pylima.store.usernet` and `pylima.drivers.qemu.usernet`; `router_argv` is the
router's command line.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pylima.errors import LimaError

FIRST_MEMBER = 15  # as slirp's guest address, 192.168.5.15
DHCP_POOL = 16  # libslirp's DHCP pool size; put at the top of the subnet, unleased
ROUTER_NETDEV = "usernet"  # the router's user-mode netdev (hostfwd_add's target)
PRIMARY_INTERFACE = "eth0"  # Lima's name for the NIC of the default network
SLIRP_SUBNET = ipaddress.IPv4Network("192.168.5.0/24")  # every guest's first NIC


@dataclass(frozen=True)
class UserNet:
    """The address plan of one user-v2 network."""

    name: str
    subnet: ipaddress.IPv4Network

    @property
    def host(self) -> str:  # the host, through the router (Lima's gateway address)
        return str(self.subnet.network_address + 2)

    @property
    def dns(self) -> str:
        return str(self.subnet.network_address + 3)

    @property
    def dhcp_start(self) -> str:
        """The first address of the router's DHCP pool (nobody on the network asks:
        members have static addresses), kept out of the leases: the top 16 addresses,
        or only the last one in a subnet smaller than /26."""
        room = DHCP_POOL if self.subnet.num_addresses >= 64 else 1
        return str(self.subnet.broadcast_address - room)

    @property
    def prefixlen(self) -> int:
        return self.subnet.prefixlen


@dataclass(frozen=True)
class UserNic:
    """One instance's NIC on a user-v2 network: what the QEMU argv and the cidata
    network-config need."""

    network: str
    interface: str   # the guest's name for it (networks[].interface, lima0 ...)
    mac: str
    address: str     # e.g. 192.168.104.15
    prefixlen: int
    switch: str      # the vde_switch socket directory
    primary: bool = False  # the instance's first user-v2 NIC: eth0, the default route
    host: str = ""   # the network's host address (.2), for the primary NIC's route
    dns: str = ""    # the network's DNS forwarder (.3)


def user_net(name: str, entry: Mapping[str, Any]) -> UserNet:
    """The plan of the networks.yaml entry `entry` (mode user-v2)."""
    gw, mask = entry.get("gateway"), entry.get("netmask") or "255.255.255.0"
    try:
        subnet = ipaddress.IPv4Network(f"{gw}/{mask}", strict=False)
    except ValueError as e:
        raise LimaError(f"network `{name}` has an invalid gateway or netmask: {e}") from e
    if subnet.num_addresses < FIRST_MEMBER + 2:
        raise LimaError(f"network `{name}`: subnet {subnet} is too small for members "
                        f"(from .{FIRST_MEMBER})")
    return UserNet(name, subnet)


def allocate(leases: Mapping[str, Mapping[str, str]], net: UserNet, mac: str,
             instance: str) -> tuple[dict[str, dict[str, str]], str]:
    """(new leases, address) for `mac`: its lease when it has one (the same address
    on every start), else the first free address from .15 up, below the router's DHCP
    pool. Leases outside the subnet (the network was re-created with another gateway)
    and the instance's leases for another MAC (one NIC per network) are dropped."""
    out = {ip: dict(v) for ip, v in leases.items()
           if _in(ip, net.subnet) and (v.get("instance") != instance
                                       or v.get("mac", "").lower() == mac.lower())}
    for ip, v in out.items():
        if v.get("mac", "").lower() == mac.lower():
            v["instance"] = instance
            return out, ip
    pool = ipaddress.IPv4Address(net.dhcp_start)
    hosts = list(net.subnet.hosts())
    for addr in hosts[FIRST_MEMBER - 1:]:
        if addr >= pool:
            break
        if str(addr) not in out:
            out[str(addr)] = {"mac": mac.lower(), "instance": instance}
            return out, str(addr)
    raise LimaError(f"network `{net.name}` has no free address left in {net.subnet}",
                    hint="delete instances that are not needed any more")


def _in(ip: str, subnet: ipaddress.IPv4Network) -> bool:
    try:
        return ipaddress.IPv4Address(ip) in subnet
    except ValueError:
        return False


def release(leases: Mapping[str, Mapping[str, str]], instance: str) -> dict[str, dict[str, str]]:
    """The leases without `instance`'s."""
    return {ip: dict(v) for ip, v in leases.items() if v.get("instance") != instance}


def render_hosts(leases: Mapping[str, Mapping[str, str]]) -> str:
    """/etc/hosts lines for the members: `ADDRESS<TAB>lima-NAME.internal`, in address
    order (the guest agent puts them into a block of the guest's /etc/hosts)."""
    from pylima.names import hostname_for

    rows = sorted(((ipaddress.IPv4Address(ip), v["instance"]) for ip, v in leases.items()
                   if v.get("instance")), key=lambda r: r[0])
    return "".join(f"{ip}\t{hostname_for(name)}.internal\n" for ip, name in rows)


def user_v2_entries(cfg: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The `networks` entries of a filled config that name a `lima:` network."""
    return [nw for nw in cfg.get("networks") or [] if isinstance(nw, dict) and nw.get("lima")]


def router_argv(qemu: str, net: UserNet, switch: str, qmp: str) -> list[str]:
    """The network's router: a QEMU with no machine whose user-mode stack (libslirp:
    the host at .2, DNS at .3, NAT to the host, `hostfwd` from the host's loopback)
    and the switch port are joined by QEMU's hub. The members' SSH and port forwards
    are `hostfwd_add` rules on it, over its QMP socket `qmp`."""
    for path in (switch, qmp):
        if "," in path:
            raise LimaError(f"the network path `{path}` contains a comma, which QEMU "
                            "cannot take", hint="use a LIMA_HOME without commas")
    return [qemu, "-machine", "none", "-nodefaults", "-display", "none", "-no-user-config",
            "-netdev", f"user,id={ROUTER_NETDEV},net={net.subnet},host={net.host},"
                       f"dns={net.dns},dhcpstart={net.dhcp_start}",
            "-netdev", f"vde,id=switch,sock={switch}",
            "-netdev", f"hubport,id=hub-{ROUTER_NETDEV},hubid=0,netdev={ROUTER_NETDEV}",
            "-netdev", "hubport,id=hub-switch,hubid=0,netdev=switch",
            "-chardev", f"socket,id=qmp,path={qmp},server=on,wait=off",
            "-mon", "chardev=qmp,mode=control"]


def hostfwd_rule(protocol: str, host_ip: str, host_port: int, guest_ip: str,
                 guest_port: int) -> str:
    """`hostfwd_add`'s rule: `tcp:127.0.0.1:8080-192.168.104.15:80` (IPv6 host
    addresses bracketed; an empty `guest_ip` is the NIC's own guest)."""
    host = f"[{host_ip}]" if ":" in host_ip else host_ip
    return f"{protocol}:{host}:{host_port}-{guest_ip}:{guest_port}"
