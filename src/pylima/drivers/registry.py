"""Drivers by name, as Lima's registry has them.

Built in: `qemu`, `libvirt` (instances on a local or remote libvirt host), and `vz`
and `wsl2`, which refuse this host (`drivers.unsupported`).
External drivers follow Lima's convention: an executable named `lima-driver-NAME`
in `$LIMA_DRIVERS_PATH` (directories or files, `:`-separated) or in `libexec/lima`
or `lib/lima` beside the directory of `limactl`. They are listed (`limactl create
--list-drivers`, `limactl info`'s `vmTypes` and `vmTypesEx`) and refused with one line
when an instance names them: they speak Lima's gRPC driver protocol, which pylima
does not speak yet.

This module and the host agent's tests are the only places that name a driver
implementation; everything else asks the registry.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from pathlib import Path
from typing import Any

from pylima.errors import ConfigError

log = logging.getLogger(__name__)

INTERNAL = "internal"
EXTERNAL_PREFIX = "lima-driver-"

# name -> "module:Class" (imported on use: `limactl list` never pays for a driver)
_BUILTIN = {
    "qemu": "pylima.drivers.qemu:QemuDriver",
    "libvirt": "pylima.drivers.libvirt:LibvirtDriver",
    "vz": "pylima.drivers.unsupported:VzDriver",
    "wsl2": "pylima.drivers.unsupported:Wsl2Driver",
}
BUILTIN_NAMES = tuple(_BUILTIN)


def _load(spec: str) -> Any:
    module, _, cls = spec.partition(":")
    return getattr(importlib.import_module(module), cls)


def _self_dirs() -> list[Path]:
    """Where `limactl` lives: its own directory (as invoked and resolved) and the
    Python's (the virtualenv's bin)."""
    out: list[Path] = []
    for p in (Path(sys.argv[0]) if sys.argv and sys.argv[0] else None,
              Path(sys.executable)):
        if p is None:
            continue
        for d in (p.absolute().parent, p.resolve().parent):
            if d not in out:
                out.append(d)
    return out


def libexec_dirs() -> list[Path]:
    """Lima's LibexecLima: `<prefix>/libexec/lima` and `<prefix>/lib/lima` for each
    directory `limactl` lives in, where they exist and are not empty."""
    out: list[Path] = []
    for d in _self_dirs():
        for cand in (d.parent / "libexec" / "lima", d.parent / "lib" / "lima"):
            try:
                if cand not in out and any(cand.iterdir()):
                    out.append(cand)
            except OSError:
                continue
    return out


def _driver_file_name(path: Path) -> str:
    base = path.name
    if base.startswith(EXTERNAL_PREFIX) and not base.endswith(".exe"):
        return base[len(EXTERNAL_PREFIX):]
    return ""


def _executable(path: Path) -> bool:
    try:
        return path.is_file() and os.stat(path).st_mode & 0o111 != 0
    except OSError:
        return False


def external_drivers() -> dict[str, str]:
    """name -> path of each `lima-driver-NAME` executable found (first one wins)."""
    found: dict[str, str] = {}

    def register(path: Path) -> None:
        name = _driver_file_name(path)
        if name and name not in found and name not in _BUILTIN and _executable(path):
            found[name] = str(path)

    def scan(directory: Path) -> None:
        try:
            entries = sorted(directory.iterdir())
        except OSError as e:
            log.warning("Error discovering external drivers in `%s`: %s", directory,
                        e.strerror)
            return
        for entry in entries:
            register(entry)

    for p in filter(None, os.environ.get("LIMA_DRIVERS_PATH", "").split(os.pathsep)):
        path = Path(p)
        if path.is_dir():
            scan(path)
        elif path.exists():
            register(path)
        else:
            log.warning("Error accessing external driver path `%s`: no such file or "
                        "directory", p)
    for d in libexec_dirs():
        scan(d)
    return found


def list_drivers() -> dict[str, str]:
    """Lima's registry.List: each driver this host has, name -> "internal" or the path
    of the external driver. vz and wsl2 are listed only where Lima builds them in."""
    out = {name: INTERNAL for name, spec in _BUILTIN.items()
           if name in ("qemu", "libvirt") or _load(spec).available()}
    for name, path in external_drivers().items():
        out.setdefault(name, path)
    return out


def driver_class(vm_type: str) -> Any:
    """The driver class for `vm_type`; ConfigError (one line) when there is none that
    pylima can use."""
    spec = _BUILTIN.get(vm_type)
    if spec is not None:
        return _load(spec)
    path = external_drivers().get(vm_type)
    if path is not None:
        raise ConfigError(f"vmType `{vm_type}` is the external driver `{path}`, which "
                          "pylima cannot use yet (it does not speak Lima's external "
                          "driver protocol)", hint="use `--vm-type=qemu`")
    raise ConfigError(f"vmType `{vm_type}` is not a registered driver",
                      hint="see `limactl create --list-drivers`")


def validate(cfg: dict[str, Any]) -> list[str]:
    """The driver's check that this host can run `cfg`; its warnings."""
    cls = driver_class(str(cfg.get("vmType") or "qemu"))
    return list(cls.validate(cfg))


def check_start(cfg: dict[str, Any]) -> None:
    """The driver's check, before a start spawns or downloads anything, that this host
    has what `cfg` needs at boot (QEMU: swtpm for `tpm: true`); LimaError if not."""
    cls = driver_class(str(cfg.get("vmType") or "qemu"))
    check = getattr(cls, "check_start", None)
    if check is not None:
        check(cfg)


def uses_local_disk(cfg: dict[str, Any]) -> bool:
    """Whether the instance's disk is a file of its instance directory (the QEMU
    driver's) rather than the driver's own (libvirt: a volume on the libvirt host)."""
    cls = driver_class(str(cfg.get("vmType") or "qemu"))
    return bool(getattr(cls, "local_disk", True))


def delete_instance(name: str, inst_dir: Path, cfg: dict[str, Any]) -> list[str]:
    """What the driver keeps outside the instance directory, removed (libvirt: the
    instance's domain and volumes on the libvirt host); what was removed."""
    cls = driver_class(str(cfg.get("vmType") or "qemu"))
    hook = getattr(cls, "delete_instance", None)
    return list(hook(name, inst_dir, cfg)) if hook is not None else []


def new_driver(name: str, inst_dir: Path, cfg: dict[str, Any]) -> Any:
    """The driver object for instance `name` (a `drivers.Driver`)."""
    cls = driver_class(str(cfg.get("vmType") or "qemu"))
    return cls(name, inst_dir, cfg)
