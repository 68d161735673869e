"""`vmOpts.libvirt` (vmType libvirt): its fields, defaults and checks, and the
libvirt connection URI. PURE."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from pylima.errors import ConfigError

DEFAULT_URI_ROOT = "qemu:///system"
DEFAULT_URI_USER = "qemu:///session"
DEFAULT_POOL = "default"
DEFAULT_NETWORK = ""  # no libvirt network: the user-mode NIC only
OPTS_FIELDS = ("uri", "pool", "network")
# Transports pylima supports: the local daemon, and one reached over SSH (libvirt's
# own transport; pylima reaches the guest's sshd over the same user@host).
URI_SCHEMES = ("qemu", "qemu+unix", "qemu+ssh")
URI_PATHS = ("/system", "/session")
_NAME_RE = re.compile(r"^[A-Za-z0-9_.+-]+$")


def libvirt_opts(cfg: dict[str, Any], *, is_root: bool) -> dict[str, str]:
    """`vmOpts.libvirt` with its defaults: `uri` qemu:///session for a user
    (qemu:///system for root), `pool` default, `network` none."""
    raw = (cfg.get("vmOpts") or {}).get("libvirt") or {}
    return {"uri": str(raw.get("uri") or (DEFAULT_URI_ROOT if is_root else DEFAULT_URI_USER)),
            "pool": str(raw.get("pool") or DEFAULT_POOL),
            "network": str(raw.get("network") or DEFAULT_NETWORK)}


def opts_errors(cfg: dict[str, Any]) -> list[str]:
    """What is wrong with `vmOpts.libvirt` (one line each); [] when it is fine."""
    raw = (cfg.get("vmOpts") or {}).get("libvirt")
    if raw is None:
        return []
    if not isinstance(raw, dict):
        return ["field `vmOpts.libvirt` must be a map"]
    errs = []
    for key, value in raw.items():
        if key not in OPTS_FIELDS:
            errs.append(f"field `vmOpts.libvirt.{key}` is not known (known: "
                        f"{', '.join(OPTS_FIELDS)})")
        elif value is not None and not isinstance(value, str):
            errs.append(f"field `vmOpts.libvirt.{key}` must be a string")
    if errs:
        return errs
    uri = raw.get("uri")
    if uri:
        try:
            parse_uri(uri)
        except ConfigError as e:
            errs.append(e.message)
    for key in ("pool", "network"):
        v = raw.get(key)
        if v and not _NAME_RE.match(v):
            errs.append(f"field `vmOpts.libvirt.{key}` must be a libvirt object name, "
                        f"not `{v}`")
    return errs


@dataclass(frozen=True)
class LibvirtURI:
    """A libvirt connection URI as pylima uses it."""

    uri: str
    scheme: str
    user: str = ""
    host: str = ""
    port: int = 0
    path: str = "/session"
    keyfile: str = ""
    no_verify: bool = False

    @property
    def remote(self) -> bool:
        """The daemon is on another host (reached over SSH)."""
        return self.scheme == "qemu+ssh"

    @property
    def ssh_destination(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    def ssh_args(self) -> list[str]:
        """The ssh options that reach the same user@host as libvirt's transport does
        (the user's ssh config and known_hosts apply, as they do for libvirt)."""
        out = ["-o", "BatchMode=yes"]
        if self.port:
            out += ["-p", str(self.port)]
        if self.keyfile:
            out += ["-i", self.keyfile, "-o", "IdentitiesOnly=yes"]
        if self.no_verify:
            out += ["-o", "StrictHostKeyChecking=no"]
        return out


def parse_uri(uri: str) -> LibvirtURI:
    """Check `uri` (field `vmOpts.libvirt.uri`); ConfigError with one line if pylima
    cannot use it."""
    try:
        u = urlsplit(uri)
        port = u.port or 0
    except ValueError as e:
        raise ConfigError(f"field `vmOpts.libvirt.uri` `{uri}` is not a URI: {e}") from None
    scheme = u.scheme.lower()
    if scheme not in URI_SCHEMES:
        raise ConfigError(f"field `vmOpts.libvirt.uri` `{uri}`: scheme `{u.scheme}` is not "
                          f"supported (use one of {', '.join(s + '://' for s in URI_SCHEMES)})")
    if u.path not in URI_PATHS:
        raise ConfigError(f"field `vmOpts.libvirt.uri` `{uri}`: path must be `/system` or "
                          f"`/session`, not `{u.path or '/'}`")
    query = {k: v[-1] for k, v in parse_qs(u.query).items()}
    if scheme == "qemu+ssh":
        if not u.hostname:
            raise ConfigError(f"field `vmOpts.libvirt.uri` `{uri}`: qemu+ssh needs a host "
                              "(qemu+ssh://user@host/system)")
    elif u.hostname:
        raise ConfigError(f"field `vmOpts.libvirt.uri` `{uri}`: `{scheme}://` names the "
                          "local daemon and takes no host (use qemu+ssh:// for another host)")
    known = {"keyfile", "no_verify", "socket", "mode", "proxy", "sshauth", "no_tty", "command"}
    for k in query:
        if k not in known:
            raise ConfigError(f"field `vmOpts.libvirt.uri` `{uri}`: parameter `{k}` is not "
                              "supported")
    return LibvirtURI(uri, scheme, unquote(u.username or ""), u.hostname or "", port, u.path,
                      query.get("keyfile", ""), query.get("no_verify", "0") not in ("", "0"))
