"""Facts about the host that lima.yaml defaults depend on (the impure side of
`config.defaults.HostFacts`)."""

from __future__ import annotations

import functools
import os
import platform
import pwd
import tempfile

from pylima.config.defaults import HostFacts
from pylima.store import dirs

_ARCHES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64",
           "armv7l": "armv7l", "ppc64le": "ppc64le", "riscv64": "riscv64", "s390x": "s390x"}


def host_arch() -> str:
    m = platform.machine()
    return _ARCHES.get(m.lower(), m)


def host_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):  # pragma: no cover
        return 4 << 30


def host_timezone() -> str:
    try:
        with open("/etc/timezone") as f:
            tz = f.read().strip()
            if tz:
                return tz
    except OSError:
        pass
    try:
        target = os.path.realpath("/etc/localtime")
    except OSError:
        return ""
    marker = "/zoneinfo/"
    if marker in target:
        tz = target.split(marker, 1)[1]
        for prefix in ("posix/", "right/"):
            tz = tz.removeprefix(prefix)
        return tz
    return ""


def _machine_id() -> str:
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            with open(path) as f:
                return f.read().strip()
        except OSError:
            continue
    return ""


@functools.cache
def host_facts() -> HostFacts:
    uid = os.getuid()
    try:
        pw = pwd.getpwuid(uid)
        user, home, gecos = pw.pw_name, pw.pw_dir, pw.pw_gecos.split(",")[0]
    except KeyError:
        user, home, gecos = os.environ.get("USER", "lima"), os.path.expanduser("~"), ""
    home = os.environ.get("HOME", home)
    return HostFacts(
        cpus=os.cpu_count() or 1,
        memory=host_memory(),
        arch=host_arch(),
        user=user,
        uid=uid,
        home=home,
        comment=gecos,
        timezone=host_timezone(),
        lima_home=str(dirs.lima_home()),
        temp_dir=tempfile.gettempdir(),
        machine_id=_machine_id(),
    )
