"""Facts about the host that lima.yaml defaults depend on (the impure side of
`config.defaults.HostFacts`). Kept import-light: `limactl list` reads them."""

from __future__ import annotations

import functools
import os
import pwd
import stat

from pylima import dirs

TYPE_CHECKING = False  # typing itself costs start-up time on this path

if TYPE_CHECKING:
    from typing import Any, Literal

    from pylima.config.defaults import HostFacts

_ARCHES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64",
           "armv7l": "armv7l", "ppc64le": "ppc64le", "riscv64": "riscv64", "s390x": "s390x"}


def host_arch() -> str:
    m = os.uname().machine
    return _ARCHES.get(m.lower(), m)


def host_os() -> str:
    """Go's runtime.GOOS spelling: linux, darwin, ..."""
    return os.uname().sysname.lower()


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


def path_kind(path: str) -> Literal["dir", "file"] | None:
    """What is at `path` on this host (links followed): "dir", "file" (anything else
    that exists) or None (nothing, or unreadable): the probe config validation takes."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):  # as os.path.exists: a NUL in the path is "nothing"
        return None
    return "dir" if stat.S_ISDIR(st.st_mode) else "file"


def _machine_id() -> str:
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            with open(path) as f:
                return f.read().strip()
        except OSError:
            continue
    return ""


@functools.cache
def _raw_facts() -> dict[str, Any]:
    uid = os.getuid()
    try:
        pw = pwd.getpwuid(uid)
        user, home, gecos = pw.pw_name, pw.pw_dir, pw.pw_gecos.split(",")[0]
    except KeyError:
        user, home, gecos = os.environ.get("USER", "lima"), os.path.expanduser("~"), ""
    return {
        "cpus": os.cpu_count() or 1,
        "memory": host_memory(),
        "arch": host_arch(),
        "user": user,
        "uid": uid,
        "home": os.environ.get("HOME", home),
        "comment": gecos,
        "timezone": host_timezone(),
        "lima_home": str(dirs.lima_home()),
        "temp_dir": os.environ.get("TMPDIR") or "/tmp",
        "machine_id": _machine_id(),
        "is_darwin": host_os() == "darwin",
    }


def host_key() -> list[Any]:
    """Everything defaults depend on, as a JSON-able value (for caches)."""
    return sorted(_raw_facts().items())


@functools.cache
def host_facts() -> HostFacts:
    from pylima.config.defaults import HostFacts

    return HostFacts(**_raw_facts())
