"""Lima's FillDefault: combine the instance's lima.yaml (y) with
$LIMA_HOME/_config/default.yaml (d) and override.yaml (o), then fill builtin
defaults. PURE: host facts come in as a `HostFacts` value.

Precedence: o > y > d > builtin for scalars. Lists are concatenated o, y, d
(images, provision, probes, portForwards, copyToHost, additionalDisks,
containerd.archives, firmware.images, mountTypesUnsupported) so that the first
matching port-forward rule is the highest-priority one. Exceptions, as in Lima:
mounts are appended d, y, o and combined by mountPoint (later wins per field);
networks are appended d, y, o and combined by interface; dns comes from the
highest-priority non-empty list; caCerts files/certs are de-duplicated in d, y, o
order; maps (env, param, vmOpts, osOpts, hostResolver.hosts) merge key by key.
"""

from __future__ import annotations

import copy
import hashlib
import os
import re
from dataclasses import dataclass, field
from typing import Any

from pylima.config.units import format_size

DEFAULT_9P_SECURITY_MODEL = "none"
DEFAULT_9P_PROTOCOL_VERSION = "9p2000.L"
DEFAULT_9P_MSIZE = "128KiB"
DEFAULT_9P_CACHE_RO = "fscache"
DEFAULT_9P_CACHE_RW = "mmap"
DEFAULT_VIRTIOFS_QUEUE_SIZE = 1024
DEFAULT_DISK = "100GiB"
DEFAULT_GUEST_INSTALL_PREFIX = "/usr/local"

# Lima's pinned nerdctl-full archives (containerd, nerdctl, buildkit, ...), used when a
# configuration names none in `containerd.archives`.
DEFAULT_CONTAINERD_ARCHIVES: tuple[tuple[str, str, str], ...] = (
    ("https://github.com/containerd/nerdctl/releases/download/v2.3.5/"
     "nerdctl-full-2.3.5-linux-amd64.tar.gz", "x86_64",
     "sha256:b697295c623639734aaab737523c808fd3cc8d3046039fd94fff1744e4c317aa"),
    ("https://github.com/containerd/nerdctl/releases/download/v2.3.5/"
     "nerdctl-full-2.3.5-linux-arm64.tar.gz", "aarch64",
     "sha256:6e4b687f1d138e750a3c8372abc0f81d3d7490b6359c48c0562fc7dfe98859b2"),
)
FALLBACK_USER = "lima"
FALLBACK_UID = 1000
_VALID_USERNAME = re.compile(r"^[a-z_][a-z0-9_-]*$")


@dataclass(frozen=True)
class HostFacts:
    """What FillDefault needs to know about the host (probed by the caller)."""

    cpus: int
    memory: int  # bytes
    arch: str  # Lima arch name: x86_64, aarch64, ...
    user: str
    uid: int
    home: str
    comment: str = ""
    timezone: str = ""
    lima_home: str = ""
    temp_dir: str = "/tmp"
    machine_id: str = ""
    is_darwin: bool = False

    @property
    def guest_user(self) -> str:
        """The guest user name: the host's, unless it is not a valid Linux user name, or
        is root/admin (pylima runs as root too, where Lima would refuse)."""
        if not _VALID_USERNAME.match(self.user) or self.user in ("root", "admin"):
            return FALLBACK_USER
        return self.user

    @property
    def guest_uid(self) -> int:
        return FALLBACK_UID if self.uid == 0 else self.uid


@dataclass
class FillResult:
    config: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


def default_cpus(host: HostFacts) -> int:
    return min(4, host.cpus)


def default_memory(host: HostFacts) -> str:
    return format_size(min(4 << 30, host.memory // 2))


def _get(doc: dict[str, Any], path: str) -> Any:
    cur: Any = doc
    for part in path.split("."):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    return cur


def _set(doc: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    cur = doc
    for part in parts[:-1]:
        if not isinstance(cur.get(part), dict):
            cur[part] = {}
        cur = cur[part]
    cur[parts[-1]] = value


def _list(doc: dict[str, Any], path: str) -> list[Any]:
    v = _get(doc, path)
    return list(v) if isinstance(v, list) else []


def _map(doc: dict[str, Any], path: str) -> dict[str, Any]:
    v = _get(doc, path)
    return dict(v) if isinstance(v, dict) else {}


class _Expander:
    """Go-template expansion of guest/host strings (user.home, mount locations, ...)."""

    def __init__(self, name: str, inst_dir: str, host: HostFacts, warnings: list[str]) -> None:
        self.name = name
        self.inst_dir = inst_dir
        self.host = host
        self.warnings = warnings

    def _render(self, text: str, data: dict[str, Any], what: str) -> str:
        if "{{" not in text:
            return text
        from pylima.gotemplate import GoTemplateError, render

        try:
            return render(text, data, name="", missingkey_error=False)
        except GoTemplateError as e:
            self.warnings.append(f"Couldn't process {what} `{text}` as a template: {e}")
            return text

    def guest(self, text: str, y: dict[str, Any], what: str) -> str:
        user = y.get("user") or {}
        data = {"Name": self.name, "Hostname": f"lima-{self.name}", "UID": user.get("uid"),
                "User": user.get("name"), "Home": user.get("home"),
                "Param": y.get("param") or {}}
        return self._render(text, data, what)

    def host_(self, text: str, y: dict[str, Any], what: str) -> str:
        data = {"Dir": self.inst_dir, "Name": self.name, "UID": str(self.host.uid),
                "User": self.host.user, "Home": self.host.home, "Param": y.get("param") or {},
                "GlobalTempDir": "/tmp", "TempDir": self.host.temp_dir,
                "Instance": self.name, "LimaHome": self.host.lima_home}
        return self._render(text, data, what)


def mac_address(machine_id: str, unique_id: str) -> str:
    """Lima's stable locally administered MAC: 52:55:55 + 3 bytes of a hash."""
    sha = hashlib.sha256((machine_id + unique_id).encode()).digest()
    return ":".join(f"{b:02x}" for b in bytes([0x52, 0x55, 0x55]) + sha[:3])


def mount_tag(location: str, mount_point: str) -> str:
    """Lima's stable 9p/virtiofs tag: both paths hashed, so one location may be mounted
    at several mount points. The QEMU argv and the guest's mount script must agree."""
    return "lima-" + hashlib.sha256(f"{location}:{mount_point}".encode()).digest()[:8].hex()


def expand_tilde(path: str, home: str) -> str:
    if path == "~":
        return home
    if path.startswith("~/"):
        return os.path.join(home, path[2:])
    return path


def fill_defaults(y_in: dict[str, Any] | None, d_in: dict[str, Any] | None,
                  o_in: dict[str, Any] | None, host: HostFacts, file_path: str,
                  existing_lima_version: str | None = None) -> FillResult:
    """Return the fully resolved config (Lima's FillDefault) and any warnings."""
    y = copy.deepcopy(y_in or {})
    d = d_in or {}
    o = o_in or {}
    inst_dir = os.path.dirname(file_path)
    name = os.path.basename(inst_dir)
    warnings: list[str] = []
    ex = _Expander(name, inst_dir, host, warnings)

    def scalar(path: str, default: Any = None, empty_is_unset: bool = False) -> Any:
        value = _get(y, path)
        if value is None:
            value = _get(d, path)
        ov = _get(o, path)
        if ov is not None:
            value = ov
        if value is None or (empty_is_unset and value in ("", 0)):
            value = default
        if value is not None:
            _set(y, path, value)
        return value

    os_name = scalar("os")
    if os_name in (None, "", "default"):
        os_name = "Darwin" if host.is_darwin else "Linux"
    y["os"] = os_name

    scalar("user.name", host.guest_user)
    scalar("user.comment", host.comment or host.guest_user)
    scalar("user.home", "/home/{{.User}}.guest")
    scalar("user.shell", {"FreeBSD": "/bin/sh", "Darwin": "/bin/zsh",
                          "Windows": "cmd.exe"}.get(os_name, "/bin/bash"))
    scalar("user.uid", host.guest_uid)
    scalar("user.passwordlessSudo", os_name != "Darwin")
    y["user"]["home"] = ex.guest(y["user"]["home"], y, "`user.home` value")

    scalar("vmType")
    if y.get("vmType") in (None, "", "default"):
        y["vmType"] = "qemu"
    arch = scalar("arch")
    if arch in (None, "", "default"):
        arch = host.arch
    y["arch"] = arch

    images = _list(o, "images") + _list(y, "images") + _list(d, "images")
    for img in images:
        if isinstance(img, dict):
            img.setdefault("arch", arch) if img.get("arch") else img.__setitem__("arch", arch)
            for sub in ("kernel", "initrd"):
                if isinstance(img.get(sub), dict) and not img[sub].get("arch"):
                    img[sub]["arch"] = img["arch"]
    y["images"] = images

    scalar("cpus", default_cpus(host), empty_is_unset=True)
    scalar("memory", default_memory(host), empty_is_unset=True)
    scalar("disk", DEFAULT_DISK, empty_is_unset=True)
    y["additionalDisks"] = (_list(o, "additionalDisks") + _list(y, "additionalDisks")
                            + _list(d, "additionalDisks"))
    scalar("audio.device", "")
    scalar("audio.interface", "")
    scalar("video.display", "none", empty_is_unset=True)
    scalar("video.vnc.display", "127.0.0.1:0,to=9", empty_is_unset=True)
    scalar("firmware.legacyBIOS", False)
    fw = _list(o, "firmware.images") + _list(y, "firmware.images") + _list(d, "firmware.images")
    for f in fw:
        if isinstance(f, dict) and not f.get("arch"):
            f["arch"] = arch
    y["firmware"]["images"] = fw
    scalar("timezone", host.timezone)
    scalar("ssh.localPort", 0)
    scalar("ssh.loadDotSSHPubKeys", False)
    scalar("ssh.forwardAgent", False)
    scalar("ssh.forwardX11", False)
    scalar("ssh.forwardX11Trusted", False)
    scalar("ssh.overVsock", False)

    hosts = {**_map(d, "hostResolver.hosts"), **_map(y, "hostResolver.hosts"),
             **_map(o, "hostResolver.hosts")}
    _set(y, "hostResolver.hosts", hosts)

    provision = _list(o, "provision") + _list(y, "provision") + _list(d, "provision")
    for p in provision:
        _fill_provision(p, y, ex, os_name)
    y["provision"] = provision

    scalar("guestInstallPrefix", DEFAULT_GUEST_INSTALL_PREFIX)
    scalar("upgradePackages", False)
    scalar("containerd.system", False)
    scalar("containerd.user", os_name == "Linux" and arch in ("x86_64", "aarch64"))
    archives = (_list(o, "containerd.archives") + _list(y, "containerd.archives")
                + _list(d, "containerd.archives"))
    if not archives:
        archives = [{"location": loc, "arch": a, "digest": dg}
                    for loc, a, dg in DEFAULT_CONTAINERD_ARCHIVES]
    for a in archives:
        if isinstance(a, dict) and not a.get("arch"):
            a["arch"] = arch
    y["containerd"]["archives"] = archives

    probes = _list(o, "probes") + _list(y, "probes") + _list(d, "probes")
    for i, p in enumerate(probes):
        if not isinstance(p, dict):
            continue
        p["mode"] = p.get("mode") or "readiness"
        p["description"] = p.get("description") or f"user probe {i + 1}/{len(probes)}"
        p["script"] = ex.guest(p.get("script") or "", y, "probing script")
    y["probes"] = probes

    forwards = _list(o, "portForwards") + _list(y, "portForwards") + _list(d, "portForwards")
    for rule in forwards:
        if isinstance(rule, dict):
            fill_port_forward_defaults(rule, inst_dir, y, ex)
    y["portForwards"] = forwards

    copies = _list(o, "copyToHost") + _list(y, "copyToHost") + _list(d, "copyToHost")
    for c in copies:
        if isinstance(c, dict):
            if c.get("guest"):
                c["guest"] = ex.guest(c["guest"], y, "guest")
            if c.get("host"):
                c["host"] = ex.host_(c["host"], y, "host")
    y["copyToHost"] = copies

    scalar("hostResolver.enabled", True)
    scalar("hostResolver.ipv6", False)
    scalar("propagateProxyEnv", True)

    y["networks"] = _fill_networks(_list(d, "networks") + _list(y, "networks")
                                   + _list(o, "networks"), host, file_path)

    y["mountTypesUnsupported"] = (_list(o, "mountTypesUnsupported")
                                  + _list(y, "mountTypesUnsupported")
                                  + _list(d, "mountTypesUnsupported"))
    scalar("mountType")
    scalar("mountInotify", False)
    y["mounts"] = _fill_mounts(_list(d, "mounts") + _list(y, "mounts") + _list(o, "mounts"),
                               y, ex, host)

    dns = _list(y, "dns") or _list(d, "dns")
    if _list(o, "dns"):
        dns = _list(o, "dns")
    y["dns"] = dns

    for key in ("env", "param", "vmOpts", "osOpts"):
        y[key] = {**_map(d, key), **_map(y, key), **_map(o, key)}

    scalar("caCerts.removeDefaults", False)
    for key in ("files", "certs"):
        merged: list[Any] = []
        for item in (_list(d, f"caCerts.{key}") + _list(y, f"caCerts.{key}")
                     + _list(o, f"caCerts.{key}")):
            if item not in merged:
                merged.append(item)
        y["caCerts"][key] = merged

    scalar("nestedVirtualization", False)
    scalar("plain", False)
    scalar("tpm", False)
    scalar("rosetta.enabled", False)
    scalar("rosetta.binfmt", False)

    _fill_driver_defaults(y, inst_dir, existing_lima_version)

    if y["plain"]:
        y["portForwards"] = [r for r in y["portForwards"] if r.get("static")]
        y["mounts"] = []
        y["containerd"]["system"] = False
        y["containerd"]["user"] = False
        y["timezone"] = ""
    return FillResult(y, warnings)


def _fill_provision(p: Any, y: dict[str, Any], ex: _Expander, os_name: str) -> None:
    if not isinstance(p, dict):
        return
    mode = p.get("mode") or "system"
    p["mode"] = mode
    if mode == "dependency" and p.get("skipDefaultDependencyResolution") is None:
        p["skipDefaultDependencyResolution"] = False
    if mode == "data":
        p["content"] = ex.guest(p["content"], y, "data content") \
            if p.get("content") is not None else ""
        if p.get("overwrite") is None:
            p["overwrite"] = True
    if mode == "yq":
        if p.get("expression") is not None:
            p["expression"] = ex.guest(p["expression"], y, "expression")
        if p.get("format") is None:
            p["format"] = "auto"
    if mode in ("data", "yq"):
        if p.get("owner") is None:
            p["owner"] = "root:wheel" if os_name in ("Darwin", "FreeBSD") else "root:root"
        else:
            p["owner"] = ex.guest(p["owner"], y, "owner")
        if p.get("path") is not None:
            p["path"] = ex.guest(p["path"], y, "path")
        if p.get("permissions") is None:
            p["permissions"] = "644"
    if p.get("script") is None:
        p["script"] = ""
    if p["script"]:
        p["script"] = ex.guest(p["script"], y, "provisioning script")


def fill_port_forward_defaults(rule: dict[str, Any], inst_dir: str, y: dict[str, Any],
                               ex: _Expander) -> None:
    rule["proto"] = rule.get("proto") or "any"
    if rule.get("guestIP") is None:
        rule["guestIP"] = "0.0.0.0" if rule.get("guestIPMustBeZero") else "127.0.0.1"
    if rule.get("guestIPMustBeZero") is None:
        rule["guestIPMustBeZero"] = str(rule["guestIP"]) in ("0.0.0.0",)
    if rule.get("hostIP") is None:
        rule["hostIP"] = "127.0.0.1"
    gpr = rule.get("guestPortRange") or [0, 0]
    if list(gpr) == [0, 0]:
        gp = rule.get("guestPort") or 0
        rule["guestPortRange"] = [1, 65535] if gp == 0 else [gp, gp]
    if rule.get("guestSocket"):
        rule["guestSocket"] = ex.guest(rule["guestSocket"], y, "guestSocket")
    if rule.get("hostSocket"):
        hs = ex.host_(rule["hostSocket"], y, "hostSocket")
        if not os.path.isabs(hs):
            hs = os.path.join(inst_dir, "sock", hs)
        rule["hostSocket"] = hs
    elif list(rule.get("hostPortRange") or [0, 0]) == [0, 0]:
        hp = rule.get("hostPort") or 0
        rule["hostPortRange"] = list(rule["guestPortRange"]) if hp == 0 else [hp, hp]


def _fill_networks(nets: list[Any], host: HostFacts, file_path: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    index: dict[str, int] = {}
    for nw in nets:
        if not isinstance(nw, dict):
            continue
        iface = nw.get("interface") or ""
        if iface and iface in index:
            cur = out[index[iface]]
            if nw.get("socket"):
                cur["socket"], cur["lima"] = nw["socket"], ""
            if nw.get("lima"):
                cur["lima"], cur["socket"] = nw["lima"], ""
            for k in ("macAddress", "metric"):
                if nw.get(k) not in (None, ""):
                    cur[k] = nw[k]
            continue
        if iface:
            index[iface] = len(out)
        out.append(dict(nw))
    for i, nw in enumerate(out):
        if not nw.get("macAddress"):
            nw["macAddress"] = mac_address(host.machine_id, f"{file_path}#{i}")
        if not nw.get("interface"):
            nw["interface"] = f"lima{i}"
        if nw.get("metric") is None:
            nw["metric"] = 100
    return out


def _fill_mounts(mounts: list[Any], y: dict[str, Any], ex: _Expander,
                 host: HostFacts) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    index: dict[str, int] = {}
    for m_in in mounts:
        if not isinstance(m_in, dict):
            continue
        m = copy.deepcopy(m_in)
        loc = ex.host_(str(m.get("location") or ""), y, "mount location")
        loc = os.path.normpath(loc) if loc else loc
        m["location"] = expand_tilde(loc, host.home)
        if m.get("mountPoint") is None:
            m["mountPoint"] = m["location"]
        else:
            m["mountPoint"] = ex.guest(str(m["mountPoint"]), y, "mount point")
        mp = m["mountPoint"]
        if mp in index:
            cur = out[index[mp]]
            for section in ("sshfs", "9p", "virtiofs"):
                for k, v in (m.get(section) or {}).items():
                    if v is not None:
                        cur.setdefault(section, {})[k] = v
            if m.get("writable") is not None:
                cur["writable"] = m["writable"]
            continue
        index[mp] = len(out)
        out.append(m)
    for m in out:
        sshfs = m.setdefault("sshfs", {}) or {}
        m["sshfs"] = sshfs
        sshfs.setdefault("cache", True) if sshfs.get("cache") is None else None
        if sshfs.get("cache") is None:
            sshfs["cache"] = True
        if sshfs.get("followSymlinks") is None:
            sshfs["followSymlinks"] = False
        if sshfs.get("sftpDriver") is None:
            sshfs["sftpDriver"] = ""
        ninep = m.get("9p") or {}
        m["9p"] = ninep
        if ninep.get("securityModel") is None:
            ninep["securityModel"] = DEFAULT_9P_SECURITY_MODEL
        if ninep.get("protocolVersion") is None:
            ninep["protocolVersion"] = DEFAULT_9P_PROTOCOL_VERSION
        if ninep.get("msize") is None:
            ninep["msize"] = DEFAULT_9P_MSIZE
        if m.get("writable") is None:
            m["writable"] = False
        if ninep.get("cache") is None:
            ninep["cache"] = DEFAULT_9P_CACHE_RW if m["writable"] else DEFAULT_9P_CACHE_RO
        m["virtiofs"] = m.get("virtiofs") or {}
    return out


def _fill_driver_defaults(y: dict[str, Any], inst_dir: str,
                          existing_lima_version: str | None) -> None:
    """The QEMU driver's share of the defaults (mountType, cpuType migration)."""
    if y.get("cpuType"):
        qemu = dict(y["vmOpts"].get("qemu") or {})
        cpu = dict(qemu.get("cpuType") or {})
        for a, v in y["cpuType"].items():
            if v and not cpu.get(a):
                cpu[a] = v
        qemu["cpuType"] = cpu
        y["vmOpts"]["qemu"] = qemu
        del y["cpuType"]
    if y.get("mountType") in (None, "", "default"):
        mount_type = {"vz": "virtiofs", "wsl2": "wsl2",
                      "libvirt": "reverse-sshfs"}.get(y["vmType"], "9p")
        if mount_type == "9p" and "9p" in y["mountTypesUnsupported"]:
            mount_type = "reverse-sshfs"
        y["mountType"] = mount_type
    if y["mountType"] == "virtiofs":
        for m in y["mounts"]:
            m["virtiofs"].setdefault("queueSize", DEFAULT_VIRTIOFS_QUEUE_SIZE)
