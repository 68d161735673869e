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
    nets = data.get("networks")
    if not isinstance(nets, dict):
        data["networks"] = nets = {}
    if not any(isinstance(n, dict) and n.get("mode") == "user-v2" and n.get("gateway")
               for n in nets.values()):
        nets["user-v2"] = {"mode": "user-v2", "gateway": "192.168.104.1",
                           "netmask": "255.255.255.0"}  # as Lima fills it in
    return data


def network_modes() -> dict[str, str]:
    """Network name -> mode (user-v2, shared, bridged, host)."""
    return {str(k): str((v or {}).get("mode") or "") for k, v in
            load_networks()["networks"].items()}
