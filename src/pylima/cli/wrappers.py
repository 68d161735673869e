"""`docker.lima`, `podman.lima` and `nerdctl.lima`: the container CLI of an instance.

`docker.lima` and `podman.lima` run the host's own client against the instance's
forwarded socket (DOCKER_HOST / CONTAINER_HOST) when the host has that client and
the socket is there; otherwise, and always for nerdctl (which has no remote mode),
they run the client inside the guest (`lima docker ...`).
"""

from __future__ import annotations

import os
import shutil
import sys
from typing import Any


def _instance(default_instance: str, template: str) -> Any:
    from pylima import log as pylog
    from pylima.store.instance import inspect, instance_names

    pylog.setup()
    name = os.environ.get("LIMA_INSTANCE") or default_instance
    if name not in instance_names():
        sys.stderr.write(f'instance "{name}" does not exist, run `limactl create --name={name} '
                         f'{template}` to create a new instance\n')
        sys.exit(1)
    return inspect(name)


def _in_guest(name: str, tool: str) -> Any:
    from pylima.cli.lima_cmd import main as lima_main

    os.environ["LIMA_INSTANCE"] = name
    return lima_main([tool, *sys.argv[1:]])


def _host_client(inst: Any, tool: str, env_var: str) -> None:
    """exec the host's `tool` against the forwarded socket, when both exist."""
    from pylima.containers.docker import engine_socket

    client = shutil.which(tool)
    sock = engine_socket(inst, tool)
    if client is None or sock is None or not sock.exists():
        return
    env = dict(os.environ)
    env[env_var] = f"unix://{sock}"
    if tool == "docker":
        env.pop("DOCKER_CONTEXT", None)
    os.execve(client, [tool, *sys.argv[1:]], env)


def nerdctl_main() -> Any:
    inst = _instance("default", "template:default")
    return _in_guest(inst.name, "nerdctl")


def docker_main() -> Any:
    inst = _instance("docker", "template:docker")
    _host_client(inst, "docker", "DOCKER_HOST")
    return _in_guest(inst.name, "docker")


def podman_main() -> Any:
    inst = _instance("podman", "template:podman")
    _host_client(inst, "podman", "CONTAINER_HOST")
    return _in_guest(inst.name, "podman")
