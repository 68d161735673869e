"""`$LIMA_HOME/_config/networks.yaml`: the named networks `networks[].lima` refers to.

As Lima, the file is written with the default networks the first time a
configuration names one, and read on each use after. On Linux only `user-v2` (no
host daemon needs root for it) is usable; the others are socket_vmnet's (macOS)."""

from __future__ import annotations

import logging
import os
import shutil
from typing import Any

from pylima import dirs
from pylima.errors import ConfigError

log = logging.getLogger("pylima")

NETWORKS_YAML = "networks.yaml"


def default_networks_yaml() -> str:
    """The default file, with Lima's networks and paths (socket_vmnet where found)."""
    socket_vmnet = "/opt/socket_vmnet/bin/socket_vmnet"
    for cand in (socket_vmnet, "socket_vmnet", "/usr/local/opt/socket_vmnet/bin/socket_vmnet",
                 "/opt/homebrew/opt/socket_vmnet/bin/socket_vmnet"):
        found = shutil.which(cand)
        if found:
            socket_vmnet = os.path.realpath(found)
            break
    return f"""\
# Named networks for `networks: [{{lima: NAME}}]` in lima.yaml (written by pylima with
# Lima's defaults). `user-v2` is a user-mode network between the instances that name
# it; `shared`, `bridged` and `host` are socket_vmnet's and need macOS.
paths:
  socketVMNet: "{socket_vmnet}"
  varRun: /private/var/run/lima
  sudoers: /private/etc/sudoers.d/lima
group: admin
networks:
  user-v2:
    mode: user-v2
    gateway: 192.168.104.1
    netmask: 255.255.255.0
  shared:
    mode: shared
    gateway: 192.168.105.1
    dhcpEnd: 192.168.105.254
    netmask: 255.255.255.0
  bridged:
    mode: bridged
    interface: en0
  host:
    mode: host
    gateway: 192.168.106.1
    dhcpEnd: 192.168.106.254
    netmask: 255.255.255.0
"""


def load_networks() -> dict[str, Any]:
    """The parsed file, written first when it does not exist."""
    import yaml

    path = dirs.config_dir() / NETWORKS_YAML
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{NETWORKS_YAML}.{os.getpid()}")
        tmp.write_text(default_networks_yaml())
        os.replace(tmp, path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot parse `{path}`: {' '.join(str(e).split())}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"cannot parse `{path}`: not a mapping")
    unknown = unknown_fields(data)
    if unknown:  # e.g. `vdeSwitch` of Lima < v0.22: Lima reads on, with this warning
        log.warning("Non-strict YAML is deprecated and will be unsupported in a future "
                    "version of Lima: %s", path,
                    extra={"fields": {"error": f"unknown field \"{unknown[0]}\""}})
    nets = data.get("networks")
    if not isinstance(nets, dict):
        data["networks"] = nets = {}
    if not any(isinstance(n, dict) and n.get("mode") == "user-v2" and n.get("gateway")
               for n in nets.values()):
        nets["user-v2"] = {"mode": "user-v2", "gateway": "192.168.104.1",
                           "netmask": "255.255.255.0"}  # as Lima fills it in
    return data


_FIELDS = {"paths", "group", "networks"}
_PATH_FIELDS = {"socketVMNet", "varRun", "sudoers"}
_NETWORK_FIELDS = {"mode", "interface", "gateway", "dhcpEnd", "netmask"}


def unknown_fields(data: dict[str, Any]) -> list[str]:
    """The fields of a parsed networks.yaml that Lima's schema does not have."""
    out = [str(k) for k in data if k not in _FIELDS]
    if isinstance(data.get("paths"), dict):
        out += [f"paths.{k}" for k in data["paths"] if k not in _PATH_FIELDS]
    for name, nw in (data.get("networks") or {}).items() \
            if isinstance(data.get("networks"), dict) else ():
        if isinstance(nw, dict):
            out += [f"networks.{name}.{k}" for k in nw if k not in _NETWORK_FIELDS]
    return out


def network_modes() -> dict[str, str]:
    """Network name -> mode (user-v2, shared, bridged, host)."""
    return {str(k): str((v or {}).get("mode") or "") for k, v in
            load_networks()["networks"].items()}


# ---------------------------------------------------------------- limactl network

MODES = ("user-v2", "host", "shared", "bridged")  # Lima's order (`--mode` completion)


def networks_yaml_path() -> Any:
    return dirs.config_dir() / NETWORKS_YAML


def gateway_cidr(nw: dict[str, Any]) -> str:
    """The GATEWAY column of `limactl network list`: `IP/PREFIX` (Go's net.IPNet), or
    `-` for a network without a gateway."""
    import ipaddress

    gw = nw.get("gateway")
    if not gw:
        return "-"
    mask = nw.get("netmask")
    if not mask:
        return "<nil>"  # as Go prints an IPNet without a mask
    try:
        prefix = ipaddress.IPv4Network(f"0.0.0.0/{mask}").prefixlen
    except ValueError:
        return f"{gw}/{''.join(f'{int(b):02x}' for b in str(mask).split('.'))}"
    return f"{gw}/{prefix}"


def network_json(name: str, nw: dict[str, Any]) -> dict[str, Any]:
    """One line of `limactl network list --json`: Lima's field order, empty fields left
    out."""
    out: dict[str, Any] = {"name": name, "mode": str(nw.get("mode") or "")}
    for key in ("interface", "gateway", "dhcpEnd", "netmask"):
        if nw.get(key):
            out[key] = str(nw[key])
    return out


def network_entry(name: str, mode: str, gateway: str, interface: str) -> dict[str, Any]:
    """The networks.yaml entry `limactl network create NAME` adds, checked as Lima
    checks it (its messages); raises LimaError."""
    import ipaddress

    from pylima.errors import LimaError
    from pylima.names import validate_identifier

    reason = validate_identifier(name)
    if reason:
        raise LimaError(f"invalid network name `{name}`: {reason}")
    if mode not in MODES:
        raise LimaError(f"network mode `{mode}` is not supported, use one of "
                        f"{', '.join(f'`{m}`' for m in MODES)}")
    if mode == "bridged":
        if gateway:
            raise LimaError(f"network mode `{mode}` does not support specifying gateway")
        if not interface:
            raise LimaError(f"network mode `{mode}` requires specifying interface")
        reason = validate_identifier(interface)
        if reason:
            raise LimaError(f"invalid interface `{interface}` for network `{name}`: {reason}")
        return {"mode": mode, "interface": interface}
    if not gateway:
        raise LimaError(f"network mode `{mode}` requires specifying gateway")
    if interface:
        raise LimaError(f"network mode `{mode}` does not support specifying interface")
    cidr = gateway if "/" in gateway else gateway + "/24"
    try:
        iface = ipaddress.ip_interface(cidr)
    except ValueError as e:
        raise LimaError(f"failed to parse CIDR `{cidr}`: invalid CIDR address: {cidr}") from e
    ip = iface.ip
    if ip.is_unspecified or ip.is_loopback:
        raise LimaError(f"invalid IP address: {ip}")
    if ip.version != 4:
        raise LimaError(f"failed to parse CIDR `{cidr}`: pylima's networks are IPv4 only")
    return {"mode": mode, "gateway": str(ip), "netmask": str(iface.network.netmask),
            "interface": ""}


def subnet_of(nw: dict[str, Any]) -> Any:
    """The IPv4 network of a networks.yaml entry with a gateway, else None."""
    import ipaddress

    try:
        return ipaddress.IPv4Interface(f"{nw['gateway']}/{nw.get('netmask') or '255.255.255.0'}"
                                       ).network
    except (KeyError, ValueError):
        return None


def subnet_collision(name: str, entry: dict[str, Any], others: dict[str, Any],
                     host_addrs: list[tuple[str, str]]) -> str | None:
    """Why the subnet of new network `name` cannot be used: it overlaps another
    network of networks.yaml or an address of the host's interfaces (`host_addrs`:
    (interface, CIDR) pairs). None when it is free."""
    import ipaddress

    net = subnet_of(entry)
    if net is None:
        return None
    for other, nw in sorted(others.items()):
        theirs = subnet_of(nw or {})
        if theirs is not None and net.overlaps(theirs):
            return (f"network `{name}`: subnet {net} overlaps network `{other}` ({theirs})")
    for ifname, cidr in host_addrs:
        try:
            theirs = ipaddress.IPv4Interface(cidr).network
        except ValueError:
            continue
        if theirs.prefixlen and net.overlaps(theirs):
            return (f"network `{name}`: subnet {net} collides with the host's interface "
                    f"`{ifname}` ({cidr})")
    return None


def host_ipv4_addresses() -> list[tuple[str, str]]:
    """(interface, CIDR) for each IPv4 address of the host (`ip -j -4 addr`); empty
    where `ip` is missing."""
    import json

    from pylima.errors import CommandError
    from pylima.process import run

    if shutil.which("ip") is None:
        log.debug("`ip` not found: the host's subnets are not checked")
        return []
    try:
        out = run(["ip", "-j", "-4", "addr", "show"], timeout=10).stdout
        links = json.loads(out or "[]")
    except (CommandError, ValueError) as e:
        log.debug("cannot list the host's addresses: %s", e)
        return []
    return [(str(link.get("ifname")), f"{a['local']}/{a['prefixlen']}")
            for link in links for a in link.get("addr_info") or []
            if a.get("family") == "inet" and a.get("local")]


def _edit_networks_yaml(change: Any) -> None:
    """Apply `change(networks_map)` to networks.yaml, keeping its comments."""
    from pylima.config.yamlio import dump_roundtrip, load_roundtrip

    load_networks()  # writes the default file first, as Lima's LoadConfig
    path = networks_yaml_path()
    doc = load_roundtrip(path.read_text(), f"`{path}`")
    if doc is None or not hasattr(doc, "get"):
        raise ConfigError(f"cannot parse `{path}`: not a mapping")
    if doc.get("networks") is None:
        from ruamel.yaml.comments import CommentedMap

        doc["networks"] = CommentedMap()
    change(doc["networks"])
    tmp = path.with_name(f".{NETWORKS_YAML}.{os.getpid()}")
    tmp.write_text(dump_roundtrip(doc))
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def create_network(name: str, mode: str = "user-v2", gateway: str = "",
                   interface: str = "") -> dict[str, Any]:
    """`limactl network create NAME`: add the network to networks.yaml; returns the
    entry. Nothing is written when it is refused."""
    from pylima.errors import LimaError

    nets = load_networks()["networks"]
    if name in nets:
        raise LimaError(f"network `{name}` already exists")
    entry = network_entry(name, mode, gateway, interface)
    reason = subnet_collision(name, entry, nets,
                              host_ipv4_addresses() if entry.get("gateway") else [])
    if reason:
        raise LimaError(reason)

    def add(networks: Any) -> None:
        from ruamel.yaml.comments import CommentedMap

        m = CommentedMap()
        m.update(entry)
        networks[name] = m

    _edit_networks_yaml(add)
    return entry


def delete_networks(names: list[str]) -> None:
    """`limactl network delete --force NAME...`: remove them from networks.yaml (a
    name that is not there is no error, as with Lima)."""

    def remove(networks: Any) -> None:
        for n in names:
            if n in networks:
                del networks[n]

    _edit_networks_yaml(remove)
