"""`nerdctl.lima` and `docker.lima`: run the container CLI of an instance."""

from __future__ import annotations

import os
import sys
from typing import Any


def _run(default_instance: str, tool: str, template: str) -> Any:
    from pylima import log as pylog
    from pylima.cli.lima_cmd import main as lima_main
    from pylima.store.instance import instance_names

    pylog.setup()
    name = os.environ.get("LIMA_INSTANCE") or default_instance
    if name not in instance_names():
        sys.stderr.write(f'instance "{name}" does not exist, run `limactl create --name={name} '
                         f'{template}` to create a new instance\n')
        sys.exit(1)
    os.environ["LIMA_INSTANCE"] = name
    return lima_main([tool, *sys.argv[1:]])


def nerdctl_main() -> Any:
    return _run("default", "nerdctl", "template:default")


def docker_main() -> Any:
    return _run("docker", "docker", "template:docker")
