"""The host side of a guest's docker (or podman) socket.

A template that runs an engine forwards its socket to `<instance dir>/sock/docker.sock`
(a `guestSocket`/`hostSocket` rule). The host's own `docker` client (no engine needed
on the host) then talks to the guest through it: with DOCKER_HOST, or through a docker
context that `limactl start` creates for the instance (`lima-NAME`, the name Lima's
docker template tells its users to create; `colima` names its contexts after its
instances).
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path
from typing import Any

log = logging.getLogger("pylima")

SOCKET_NAMES = {"docker": "docker.sock", "podman": "podman.sock"}


def engine_socket(inst: Any, engine: str = "docker") -> Path | None:
    """The host end of the instance's forwarded engine socket, from its config
    (whether or not it exists yet)."""
    name = SOCKET_NAMES[engine]
    for rule in (inst.config or {}).get("portForwards") or []:
        if not isinstance(rule, dict):
            continue
        host = str(rule.get("hostSocket") or "")
        if host and Path(host).name == name:
            return Path(host)
    return None


def context_name(instance_name: str) -> str:
    return f"lima-{instance_name}"


def _docker(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


def ensure_context(name: str, sock: Path, description: str = "") -> bool:
    """Create (or point again) the docker context `name` at `sock`. False, with one
    log line, when the host has no docker client or it fails; never raises."""
    if shutil.which("docker") is None:
        log.info("No docker client on this host: not creating the docker context `%s`",
                 name)
        return False
    endpoint = f"host=unix://{sock}"
    try:
        exists = _docker("context", "inspect", name).returncode == 0
        verb = "update" if exists else "create"
        args = ["context", verb, name, "--docker", endpoint]
        if description:
            args += ["--description", description]
        r = _docker(*args)
    except (OSError, subprocess.TimeoutExpired) as e:
        log.warning("could not create the docker context `%s`: %s", name, e)
        return False
    if r.returncode != 0:
        log.warning("could not create the docker context `%s`: %s", name,
                    (r.stderr or r.stdout).strip())
        return False
    log.info("docker context `%s` points at %s (`docker context use %s`)", name, sock, name)
    return True


def remove_context(name: str) -> None:
    if shutil.which("docker") is None:
        return
    try:
        if _docker("context", "inspect", name).returncode != 0:
            return
        current = _docker("context", "show").stdout.strip()
        if current == name:
            _docker("context", "use", "default")
        _docker("context", "rm", "--force", name)
    except (OSError, subprocess.TimeoutExpired):
        pass


def setup_instance_context(inst: Any) -> None:
    """After a start: the `lima-NAME` context for an instance that forwards docker.sock."""
    sock = engine_socket(inst, "docker")
    if sock is not None:
        ensure_context(context_name(inst.name), sock, f"pylima instance {inst.name}")
