"""pylima: Lima ("Linux Machines") in Python.

The Python API (see docs/api.md)::

    import pylima

    with pylima.vm("template:debian-12", cpus=2) as vm:
        print(vm.run(["uname", "-a"]).stdout)

Names are imported on first use, so `import pylima` stays fast.
"""

from __future__ import annotations

# Defined in a leaf module so that modules inside pylima can import them without
# importing the package root (which is the public face, not a dependency).
from pylima.version import LIMA_COMPAT_VERSION, __version__

TYPE_CHECKING = False  # importing typing costs start-up time on the `lima` path

# public name -> module that defines it
_LAZY = {
    "Instance": "pylima.machine",
    "vm": "pylima.machine",
    "list_instances": "pylima.machine",
    "SyncResult": "pylima.machine",
    "LimaError": "pylima.errors",
    "GuestCommandError": "pylima.errors",
    "InstanceError": "pylima.errors",
    "InstanceNotFound": "pylima.errors",
    "ConfigError": "pylima.errors",
    "CommandError": "pylima.errors",
}

__all__ = [
    "LIMA_COMPAT_VERSION", "__version__", "Instance", "vm", "list_instances", "LimaError",
    "GuestCommandError", "InstanceError", "InstanceNotFound", "ConfigError", "CommandError",
    "SyncResult",
]

if TYPE_CHECKING:
    from typing import Any

    from pylima.errors import (
        CommandError,
        ConfigError,
        GuestCommandError,
        InstanceError,
        InstanceNotFound,
        LimaError,
    )
    from pylima.machine import Instance, SyncResult, list_instances, vm


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pylima' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
