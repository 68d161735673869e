"""`docker.lima`, `podman.lima`, `nerdctl.lima`, `kubectl.lima` and `apptainer.lima`:
the container (or cluster) CLI of an instance.

`docker.lima` and `podman.lima` run the host's own client against the instance's
forwarded socket (DOCKER_HOST / CONTAINER_HOST) when the host has that client and
the socket is there; otherwise, and always for nerdctl (which has no remote mode),
they run the client inside the guest (`lima docker ...`).

`kubectl.lima` uses instance $LIMA_INSTANCE, or else `k3s`, or else `k8s`, which must
be running. With a host `kubectl` ($KUBECTL, default kubectl) it runs that with
KUBECONFIG set to the kubeconfig the instance copied to the host; without one it runs
`sudo kubectl` in the guest. `apptainer.lima` runs `apptainer` in instance
$LIMA_INSTANCE (default `apptainer`, running) with the host's home directory added
to APPTAINER_BINDPATH.
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
        create = f"limactl create --name={name}" + (f" {template}" if template else "")
        sys.stderr.write(f'instance "{name}" does not exist, run `{create}` to create a new '
                         'instance\n')
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


def _not_running_exit(name: str) -> None:
    sys.stderr.write(f'instance "{name}" is not running, run `limactl start {name}` to start '
                     'the existing instance\n')
    sys.exit(1)


def _running(default_instance: str, template: str) -> Any:
    from pylima.store.instance import STATUS_RUNNING

    inst = _instance(default_instance, template)
    if inst.status != STATUS_RUNNING:
        _not_running_exit(inst.name)
    return inst


def _kubernetes_instance() -> Any:
    """$LIMA_INSTANCE, or the first of `k3s` and `k8s` that exists."""
    from pylima import log as pylog
    from pylima.store.instance import instance_names

    if os.environ.get("LIMA_INSTANCE"):
        name = os.environ["LIMA_INSTANCE"]
        return _running(name, "")
    pylog.setup()
    names = instance_names()
    for candidate in ("k3s", "k8s"):
        if candidate in names:
            return _running(candidate, f"template:{candidate}")
    sys.stderr.write("No k3s or k8s existing instances found. Either create one with\n"
                     "limactl create --name=k3s template:k3s\n"
                     "limactl create --name=k8s template:k8s\n"
                     "or set LIMA_INSTANCE to the name of your Kubernetes instance\n")
    sys.exit(1)


def kubectl_main() -> Any:
    inst = _kubernetes_instance()
    client = shutil.which(os.environ.get("KUBECTL") or "kubectl")
    if client is not None:
        env = dict(os.environ)
        env["KUBECONFIG"] = os.path.join(str(inst.dir), "copied-from-guest", "kubeconfig.yaml")
        os.execve(client, [client, *sys.argv[1:]], env)
    os.environ["LIMA_INSTANCE"] = inst.name
    from pylima.cli.lima_cmd import main as lima_main

    return lima_main(["sudo", "kubectl", *sys.argv[1:]])


def apptainer_main() -> Any:
    inst = _running("apptainer", "template:apptainer")
    given = os.environ.get("APPTAINER_BINDPATH") or ""
    bind = ",".join([*([given] if given else []), os.path.expanduser("~")])
    os.environ["LIMA_INSTANCE"] = inst.name
    from pylima.cli.lima_cmd import main as lima_main

    return lima_main([f"APPTAINER_BINDPATH={bind}", "apptainer", *sys.argv[1:]])
