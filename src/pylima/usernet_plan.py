"""The address plan of a user-v2 network and an instance's NICs on it. PURE.

The networks.yaml entry's gateway and netmask give the subnet (as in Lima); the host
answers at .2 and DNS at .3 (slirpvde); members get .15 and up, one lease per NIC
MAC, so that an instance keeps its address. The files that hold the leases and the
daemon that runs the network are `pylima.store.usernet` and `pylima.drivers.qemu.usernet`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pylima.errors import LimaError

FIRST_MEMBER = 15  # as slirp's guest address, 192.168.5.15
SLIRP_SUBNET = ipaddress.IPv4Network("192.168.5.0/24")  # every guest's first NIC


@dataclass(frozen=True)
class UserNet:
    """The address plan of one user-v2 network."""

    name: str
    subnet: ipaddress.IPv4Network

    @property
    def host(self) -> str:  # the host, through slirpvde (Lima's gateway address)
        return str(self.subnet.network_address + 2)

    @property
    def dns(self) -> str:
        return str(self.subnet.network_address + 3)

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
    on every start), else the first free address from .15 up. Leases outside the
    subnet (the network was re-created with another gateway) are dropped."""
    out = {ip: dict(v) for ip, v in leases.items()
           if _in(ip, net.subnet)}
    for ip, v in out.items():
        if v.get("mac", "").lower() == mac.lower():
            v["instance"] = instance
            return out, ip
    hosts = list(net.subnet.hosts())
    for addr in hosts[FIRST_MEMBER - 1:]:
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
