"""`limactl-NAME` plugins: where Lima finds them.

An executable regular file named `limactl-NAME` in the directory of the `limactl`
program (as invoked, then with symlinks resolved), on `$PATH`, or in
`PREFIX/libexec/lima` or `PREFIX/lib/lima` is the plugin NAME; the first directory
in that order wins. `url-SCHEME` plugins rewrite `SCHEME:...` template locators
(pylima.templates.locator); the others become `limactl NAME` commands
(pylima.cli.plugins). Nothing here runs at start-up: directories are searched only
when asked.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import stat
import sys
from dataclasses import dataclass

log = logging.getLogger("pylima")

PREFIX = "limactl-"
URL_PREFIX = "url-"  # locator scheme helpers, hidden from the help text
_DESC = re.compile(r"<limactl-desc>(.*?)</limactl-desc>")


@dataclass(frozen=True)
class Plugin:
    name: str
    path: str
    description: str = ""

    def to_json(self) -> dict[str, str]:
        """`limactl info`'s form (description left out when empty, as Lima's)."""
        out = {"name": self.name, "path": self.path}
        if self.description:
            out["description"] = self.description
        return out

    @property
    def hidden(self) -> bool:
        return self.name.startswith(URL_PREFIX)


def self_dirs(argv0: str | None = None) -> list[str]:
    """The directory of the running `limactl` as invoked (symlinks kept, so that a
    Homebrew-style `bin/` link counts), then the one it resolves to if different."""
    arg = sys.argv[0] if argv0 is None else argv0
    if not arg:
        return []
    found = arg if os.sep in arg else shutil.which(arg)
    if not found:
        return []
    invoked = os.path.dirname(os.path.abspath(found))
    resolved = os.path.dirname(os.path.realpath(found))
    return [invoked] if resolved == invoked else [invoked, resolved]


def libexec_dirs(selves: list[str] | None = None) -> list[str]:
    """`PREFIX/libexec/lima` and `PREFIX/lib/lima` beside each self directory
    (`PREFIX/bin`), those that exist and are not empty."""
    out = []
    for d in self_dirs() if selves is None else selves:
        prefix = os.path.dirname(d)
        for candidate in (os.path.join(prefix, "libexec", "lima"),
                          os.path.join(prefix, "lib", "lima")):
            try:
                if os.listdir(candidate):
                    out.append(candidate)
            except OSError:
                pass
    return out


def plugin_dirs() -> list[str]:
    """Where plugins are looked for, in order of precedence."""
    selves = self_dirs()
    path = os.environ.get("PATH", "")
    return [*selves, *(path.split(os.pathsep) if path else []), *libexec_dirs(selves)]


def plugin_env() -> dict[str, str]:
    """The environment a plugin runs in: PATH is the plugin directories, so that a
    plugin finds `limactl` and its fellow plugins."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join(plugin_dirs())
    return env


def _is_executable(path: str) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and bool(st.st_mode & 0o111)


def _description(path: str) -> str:
    """The text between `<limactl-desc>` and `</limactl-desc>` in a script."""
    try:
        with open(path, "rb") as f:
            if f.read(2) != b"#!":
                return ""
            content = (b"#!" + f.read()).decode(errors="replace")
    except OSError as e:
        log.debug("Failed to read plugin script %s: %s", path, e)
        return ""
    m = _DESC.search(content)
    return m.group(1).strip(" ") if m else ""


def _scan(directory: str) -> list[Plugin]:
    try:
        names = sorted(os.listdir(directory)) if directory else []
    except OSError as e:
        log.debug("Plugin discovery: failed to scan directory %s: %s", directory, e)
        return []
    out = []
    for entry in names:
        if not entry.startswith(PREFIX) or entry == PREFIX:
            continue
        full = os.path.join(directory, entry)
        if _is_executable(full):  # a regular file (or a link to one) with an x bit
            out.append(Plugin(entry[len(PREFIX):], full, _description(full)))
    return out


# Once a process, as Lima's (keyed by the directories, which tests change).
_discovered: dict[tuple[str, ...], list[Plugin]] = {}


def discover() -> list[Plugin]:
    """All plugins, one per name (the first directory's), sorted by name."""
    dirs = tuple(plugin_dirs())
    if dirs not in _discovered:
        found: dict[str, Plugin] = {}
        for d in dirs:
            for p in _scan(d):
                found.setdefault(p.name, p)
        _discovered[dirs] = [found[n] for n in sorted(found)]
    return _discovered[dirs]


def find_plugin(name: str) -> Plugin | None:
    """The plugin `name` (without `limactl-`), or None. Only stats one file per
    directory; the description is not read."""
    if not name or "/" in name or os.sep in name or "\0" in name:
        return None
    for d in plugin_dirs():
        if not d:
            continue
        full = os.path.join(d, PREFIX + name)
        if _is_executable(full):
            return Plugin(name, full)
    return None
