"""Render the NoCloud seed (the `cidata` ISO's files) for a pylima guest. PURE.

The guest's cloud-init reads meta-data, user-data and network-config. Everything
else on the seed is pylima's boot machinery:

- ``boot.sh`` (+ ``lib.sh``): run on every boot through cloud-init's
  ``scripts_per_boot`` module: cloud-init's ``write_files`` installs a small
  launcher into /var/lib/cloud/scripts/per-boot/, which mounts the seed at
  /mnt/lima-cidata and runs boot.sh. write_files is a per-instance module, and
  meta-data's instance-id is new on every boot, so the launcher is (re)written on
  every boot too; the per-boot hook then runs after users, SSH keys and network are
  configured, late enough for mounts and provisioning. Lima uses the same hook.
- ``boot/NN-*.sh``: steps boot.sh runs in name order.
- ``lima.env`` (LIMA_CIDATA_*), ``param.env`` (PARAM_*): shell-quoted assignments.
- ``etc_environment``, ``etc_hosts``: the blocks boot scripts put into /etc.
- ``provision.{dependency,data,system,user}/NNNNNNNN``: provisioning, numbered by
  their index in `provision` so that name order is config order. ``boot`` mode
  scripts go to cloud-init's ``bootcmd`` instead (run very early on every boot).
- ``lima-guestagent``: the guest agent, when one is given.
- ``pylima-init``: the boot path of pylima's own images, which carry no cloud-init:
  it reads meta-data, user-data and network-config and does what cloud-init does
  with them, then runs the same per-boot launcher (see `guestagent/init.py`).
  ``pylima-init.marshal`` holds those three documents for it, the same values in
  Python's marshal format (a YAML parser costs the guest's boot more than a second).

The cloud image's cloud-init must keep these modules: bootcmd, write_files,
growpart, resizefs, set_hostname/update_hostname, users_groups, ssh, timezone,
ca_certs, resolv_conf, package_update_upgrade_install (config stage) and
scripts_per_boot (final stage). Anything else can be trimmed for boot speed.
"""

from __future__ import annotations

import hashlib
import ipaddress
import marshal
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml

from pylima import filenames
from pylima.cidata import scripts
from pylima.config.defaults import mount_tag
from pylima.config.units import parse_size
from pylima.errors import ConfigError
from pylima.names import hostname_for
from pylima.usernet_plan import UserNic


@dataclass(frozen=True)
class SlirpNet:
    """QEMU user-mode network as pylima (and Lima) set it up."""

    network: str = "192.168.5.0/24"
    gateway: str = "192.168.5.2"  # the host, known in the guest as host.lima.internal
    dns: str = "192.168.5.3"
    guest: str = "192.168.5.15"


SLIRP = SlirpNet()

HOST_INTERNAL_NAME = "host.lima.internal"
# The name of the containerd archive on the seed (Lima's).
CONTAINERD_ARCHIVE_NAME = "nerdctl-full.tgz"
PROXY_VARS = ("ftp_proxy", "http_proxy", "https_proxy", "no_proxy")

# Files on the seed that must be executable (mode 0755); everything else is 0644.
_EXECUTABLE_DIRS = ("boot", "provision.dependency", "provision.system", "provision.user")
_EXECUTABLE_FILES = ("boot.sh", "lima-guestagent", "pylima-init")
# pylima-init's copy of the seed's documents (its SEED_DOCS), and the marshal format
# version written: 4 is read by every Python 3 since 3.4, whatever the host runs.
GUEST_INIT_DOCS = "pylima-init.marshal"
_MARSHAL_VERSION = 4

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_BLOCK_START = "#LIMA-START"
_BLOCK_END = "#LIMA-END"


def shell_quote(value: object) -> str:
    """Quote one value for POSIX sh (safe strings stay bare, as in Lima's files)."""
    return shlex.quote(str(value))




def file_mode(path: str) -> int:
    """The permission bits `path` gets on the seed."""
    top = path.split("/", 1)[0]
    if path in _EXECUTABLE_FILES or ("/" in path and top in _EXECUTABLE_DIRS):
        return 0o755
    return 0o644


def render_cidata(cfg: Mapping[str, Any], *, instance_name: str, instance_id: str,
                  user_pubkeys: Sequence[str], host_key_private: str, host_key_public: str,
                  ssh_local_port: int, slirp: SlirpNet = SLIRP,
                  mount_tags: Mapping[int, str] | None = None,
                  guest_agent: bytes | None = None,
                  guest_init: bytes | None = None,
                  host_env: Mapping[str, str] | None = None,
                  ca_cert_files: Sequence[str] = (),
                  host_home: str | None = None,
                  containerd_archive: bytes | None = None,
                  user_nics: Sequence[UserNic] = ()) -> dict[str, bytes]:
    """Return the seed's files (path on the ISO -> content) for a filled lima.yaml.

    `instance_id` must be new on every boot (cloud-init then re-runs its per-instance
    modules, and the boot-done marker tells this boot from an older one).
    `host_key_*` is the ed25519 host key pair the host generated and pins.
    `host_env` is the host's environment, of which only the proxy variables are used
    (with `propagateProxyEnv`). `ca_cert_files` are the contents of the files named in
    `caCerts.files`, read by the caller. `mount_tags` maps an index in `mounts` to the
    tag the VM driver gave that share (Lima's tag by default). `host_home` (the
    host user's home) finds the mount of the host's home for LIMA_CIDATA_HOSTHOME_*.
    `guest_init` is pylima-init, for images that boot without cloud-init.
    `containerd_archive` is the nerdctl-full archive for `containerd.system/user` (None
    when the host could not get one). `user_nics` are the instance's NICs on user-v2
    networks, with the addresses the host leased to them.
    """
    if not user_pubkeys:
        raise ConfigError("no SSH public key for the guest user",
                          hint="run `ssh-keygen` or check $LIMA_HOME/_config/user.pub")
    primary = next((n for n in user_nics if n.primary), None)
    if primary is not None:
        # As Lima: the first user-v2 network replaces the user-mode one, and its host
        # and DNS addresses are the "slirp" ones the guest is told (its own address
        # is not: Lima leaves LIMA_CIDATA_SLIRP_IP_ADDRESS empty there).
        subnet = ipaddress.IPv4Interface(f"{primary.address}/{primary.prefixlen}").network
        slirp = SlirpNet(str(subnet), primary.host, primary.dns, "")
    seed = _Seed(cfg, instance_name, instance_id, slirp, dict(mount_tags or {}),
                 dict(host_env or {}))
    seed.has_containerd_archive = containerd_archive is not None
    docs = {
        "meta-data": meta_data_doc(instance_id, instance_name),
        "user-data": seed.user_data_doc(list(user_pubkeys), host_key_private,
                                        host_key_public, list(ca_cert_files)),
        "network-config": seed.network_config_doc(user_nics),
    }
    files: dict[str, str | bytes] = {
        "meta-data": _dump_yaml(docs["meta-data"]),
        "user-data": seed.user_data_head() + _dump_yaml(docs["user-data"]),
        "network-config": _dump_yaml(docs["network-config"]),
        "lima.env": seed.lima_env(ssh_local_port, host_home,
                                  filenames.VIRTIO_PORT if guest_agent is not None else ""),
        "param.env": render_param_env(seed.params),
        "etc_environment": render_etc_environment(seed.env),
        "etc_hosts": seed.etc_hosts(),
        "boot.sh": scripts.BOOT_SH,
        "lib.sh": scripts.LIB_SH,
        "boot/00-guest-setup.sh": scripts.GUEST_SETUP_SH,
        "boot/06-etc-hosts.sh": scripts.ETC_HOSTS_SH,
        "boot/07-etc-environment.sh": scripts.ETC_ENVIRONMENT_SH,
        "boot/20-rootless-base.sh": scripts.ROOTLESS_BASE_SH,
    }
    # Steps with nothing to do are left off the seed: every step costs a second or
    # two of shell start-up under emulation.
    if cfg.get("additionalDisks"):
        files["boot/05-lima-disks.sh"] = scripts.DISKS_SH
    if seed.mounts:
        files["boot/05-mounts.sh"] = seed.mounts_script()
    if guest_agent is not None:
        files["boot/25-guestagent.sh"] = scripts.GUEST_AGENT_SH
        files["lima-guestagent"] = guest_agent
    if guest_init is not None:
        files["pylima-init"] = guest_init
        files[GUEST_INIT_DOCS] = guest_init_docs(docs)
    if seed.needs_dependency_step():
        files["boot/30-dependencies.sh"] = scripts.DEPENDENCIES_SH
    if seed.needs_containerd_step():
        files["boot/40-containerd.sh"] = scripts.CONTAINERD_SH
        if containerd_archive is not None:
            files[CONTAINERD_ARCHIVE_NAME] = containerd_archive
    files.update(seed.provision_files())
    return {k: v.encode() if isinstance(v, str) else v for k, v in files.items()}


def guest_init_docs(docs: Mapping[str, Mapping[str, Any]]) -> bytes:
    """pylima-init.marshal: the seed's documents by name (meta-data, user-data,
    network-config), the same values as their YAML."""
    return marshal.dumps({name: dict(doc) for name, doc in docs.items()}, _MARSHAL_VERSION)


def meta_data_doc(instance_id: str, instance_name: str) -> dict[str, Any]:
    return {"instance-id": instance_id, "local-hostname": hostname_for(instance_name)}


def render_param_env(params: Mapping[str, str]) -> str:
    """PARAM_<KEY>=value lines, shell-quoted: `set -a; . param.env` exports them."""
    return "".join(f"PARAM_{k}={shell_quote(v)}\n" for k, v in params.items())


def render_etc_environment(env: Mapping[str, str]) -> str:
    """The block boot/07 puts into /etc/environment (read by pam_env, not a shell).

    pam_env drops one pair of surrounding quotes and nothing else, so values are
    written inside double quotes verbatim: spaces, quotes and '$' arrive unchanged.
    """
    lines = [_BLOCK_START]
    lines += [f'{k}="{v}"' for k, v in env.items()]
    lines.append(_BLOCK_END)
    return "\n".join(lines) + "\n"


def proxy_env(env: Mapping[str, str], host_env: Mapping[str, str], propagate: bool,
              gateway: str) -> dict[str, str]:
    """The guest environment: `env` plus the host's proxy settings, Lima's way.

    The host's proxy variables override `env` (when `propagate`); an empty value
    removes a variable; a proxy on the host's loopback is reached through the slirp
    gateway; lower- and upper-case forms end up equal, the lower-case one winning.
    """
    out = dict(env)
    names = list(PROXY_VARS) + [n.upper() for n in PROXY_VARS]
    if propagate:
        for name in names:
            if name in host_env:
                out[name] = host_env[name]
    for name in names:
        if name not in out:
            continue
        if out[name] == "":
            del out[name]
        elif name.lower() != "no_proxy":
            out[name] = _loopback_to_gateway(out[name], gateway)
    for lower in PROXY_VARS:
        upper = lower.upper()
        if lower in out:
            out[upper] = out[lower]
        elif upper in out:
            out[lower] = out[upper]
    return out


def _loopback_to_gateway(url: str, gateway: str) -> str:
    try:
        parts = urlsplit(url)
        host = parts.hostname
        port = parts.port
    except ValueError:
        return url
    if not host or not _is_loopback(host):
        return url
    netloc = gateway if port is None else f"{gateway}:{port}"
    if parts.username is not None:
        cred = parts.username + (f":{parts.password}" if parts.password is not None else "")
        netloc = f"{cred}@{netloc}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _literal_str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


class _SeedDumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True  # repeated values are written out, no &anchors in the seed


_SeedDumper.add_representer(str, _literal_str)


def _dump_yaml(doc: Any) -> str:
    return yaml.dump(doc, Dumper=_SeedDumper, sort_keys=False, default_flow_style=False,
                     allow_unicode=True, width=10_000)


def _printable(text: str) -> str:
    return "".join(ch for ch in text if ch.isprintable())


def _check_names(kind: str, names: Sequence[str]) -> None:
    for name in names:
        if not _NAME_RE.match(name):
            raise ConfigError(f"field `{kind}` has an invalid variable name `{name}`")


class _Seed:
    """The values one render works from, validated once."""

    def __init__(self, cfg: Mapping[str, Any], name: str, iid: str, slirp: SlirpNet,
                 tags: dict[int, str], host_env: dict[str, str]) -> None:
        self.cfg = cfg
        self.name = name
        self.iid = iid
        self.slirp = slirp
        self.tags = tags
        user = cfg.get("user") or {}
        self.user = str(user.get("name") or "lima")
        self.uid = int(user.get("uid") or 1000)
        self.home = str(user.get("home") or f"/home/{self.user}.guest")
        self.shell = str(user.get("shell") or "/bin/bash")
        self.comment = _printable(str(user.get("comment") or ""))
        self.sudo = bool(user.get("passwordlessSudo", True))
        self.params = {str(k): "" if v is None else str(v)
                       for k, v in (cfg.get("param") or {}).items()}
        _check_names("param", list(self.params))
        env = {str(k): "" if v is None else str(v) for k, v in (cfg.get("env") or {}).items()}
        self.env = proxy_env(env, host_env, bool(cfg.get("propagateProxyEnv", True)),
                             slirp.gateway)
        _check_names("env", list(self.env))
        for k, v in self.env.items():
            if "\n" in v or "\r" in v:
                raise ConfigError(f"field `env.{k}` must not contain a line break")
        self.mount_type = str(cfg.get("mountType") or "9p")
        self.mounts = [m for m in (cfg.get("mounts") or []) if isinstance(m, dict)]
        self.provision = [p for p in (cfg.get("provision") or []) if isinstance(p, dict)]
        self.has_containerd_archive = False

    # -- cloud-init ------------------------------------------------------------

    def user_data_doc(self, pubkeys: list[str], key_private: str, key_public: str,
                      ca_files: list[str]) -> dict[str, Any]:
        cfg = self.cfg
        user: dict[str, Any] = {"name": self.user, "uid": self.uid}
        if self.comment:
            user["gecos"] = self.comment
        user["homedir"] = self.home
        user["shell"] = self.shell
        user["sudo"] = "ALL=(ALL) NOPASSWD:ALL" if self.sudo else "ALL=(ALL) ALL"
        # Without passwordless sudo, boot.sh sets a random password (in ~/password).
        user["lock_passwd"] = self.sudo
        user["ssh_authorized_keys"] = [k.strip() for k in pubkeys]
        doc: dict[str, Any] = {
            "growpart": {"mode": "auto", "devices": ["/"]},
            "resize_rootfs": True,
            "users": [user],
            # The host generated this key and pins it in its known_hosts: the guest
            # installs it as is and generates none of its own (also saves boot time).
            # cloud-init only generates key types whose file is missing, and writes
            # ssh_keys first, so listing ed25519 here generates nothing; an empty list
            # would work the same but fails cloud-init's schema check ("too short").
            "ssh_deletekeys": False,
            "ssh_genkeytypes": ["ed25519"],
            "ssh_keys": {"ed25519_private": key_private.strip() + "\n",
                         "ed25519_public": key_public.strip()},
        }
        if cfg.get("timezone"):
            doc["timezone"] = str(cfg["timezone"])
        if cfg.get("upgradePackages"):
            doc.update({"package_update": True, "package_upgrade": True,
                        "package_reboot_if_required": True})
        ca = cfg.get("caCerts") or {}
        trusted = [c.strip() + "\n" for c in list(ca.get("certs") or []) + ca_files if c.strip()]
        if ca.get("removeDefaults") or trusted:
            ca_doc: dict[str, Any] = {}
            if ca.get("removeDefaults"):
                ca_doc["remove_defaults"] = True
            if trusted:
                ca_doc["trusted"] = trusted
            doc["ca_certs"] = ca_doc
        doc["manage_resolv_conf"] = True
        doc["resolv_conf"] = {"nameservers": self.dns()}
        doc["write_files"] = [{"path": scripts.PER_BOOT_LAUNCHER_PATH, "owner": "root:root",
                               "permissions": "0755", "content": scripts.PER_BOOT_LAUNCHER}]
        bootcmd = self.bootcmds()
        if bootcmd:
            doc["bootcmd"] = bootcmd
        return doc

    def user_data_head(self) -> str:
        return ("#cloud-config\n"
                f"# pylima seed for instance {self.name}: cloud-init creates the user,\n"
                "# installs the SSH keys and the per-boot launcher of boot.sh.\n")

    def dns(self) -> list[str]:
        host_resolver = (self.cfg.get("hostResolver") or {}).get("enabled", True)
        configured = [str(a) for a in (self.cfg.get("dns") or [])]
        if configured and not host_resolver:
            return configured
        # The host resolver answers at the slirp DNS address (also the fallback when
        # no `dns` is set: QEMU forwards it to the host's own resolver).
        return [self.slirp.dns]

    def network_config_doc(self, user_nics: Sequence[UserNic] = ()) -> dict[str, Any]:
        dns = {"addresses": self.dns()}
        # A user-v2 NIC is found by its MAC and gets its leased address statically.
        # The primary one (eth0, in place of the slirp NIC) has the default route
        # through the network's host and its DNS; the others have no gateway. They
        # sort before the slirp entries (networkd takes the first file that matches,
        # by name, and the slirp patterns match every NIC).
        ethernets: dict[str, Any] = {}
        for nic in user_nics:
            eth: dict[str, Any] = {"match": {"macaddress": nic.mac}, "set-name": nic.interface,
                                   "addresses": [f"{nic.address}/{nic.prefixlen}"]}
            if nic.primary:
                eth["routes"] = [{"to": "0.0.0.0/0", "via": nic.host}]
                eth["nameservers"] = dns
            ethernets[nic.interface] = {**eth, "dhcp4": False, "dhcp6": False}
        if any(nic.primary for nic in user_nics):
            return {"version": 2, "ethernets": ethernets}
        # The one slirp NIC is called eth0 or en* depending on the image's naming.
        ethernets.update({
            name: {"match": {"name": pattern}, "dhcp4": True, "dhcp6": False,
                   "nameservers": dns}
            for name, pattern in (("slirp-en", "en*"), ("slirp-eth", "eth*"))
        })
        return {"version": 2, "ethernets": ethernets}

    def bootcmds(self) -> list[str]:
        """`boot` mode provisioning as bootcmd entries (run early, on every boot).

        The seed is not mounted yet at that point, so each script travels inside
        user-data: it is written to /run and run there, with PARAM_* exported; a
        failure is recorded in /run/lima-boot-errors and does not stop the boot.
        """
        out = []
        params = render_param_env(self.params)
        for i, p in enumerate(self.provision):
            if p.get("mode") != "boot":
                continue
            script = str(p.get("script") or "")
            if not script.endswith("\n"):
                script += "\n"
            path = f"/run/lima-provision-boot.{i:08d}"
            eof = "PYLIMA_EOF_" + hashlib.sha256(script.encode()).hexdigest()[:16]
            runner = shell_quote(path) if script.startswith("#!") else f"/bin/sh {path}"
            out.append(
                f"# provision[{i}] (mode: boot)\n"
                f"cat >{path} <<'{eof}'\n{script}{eof}\n"
                f"chmod 700 {path}\n"
                f"( set -a\n{params}set +a\n"
                f"  {runner} </dev/null ) || echo \"provision[{i}] (boot) failed with exit"
                f" code $?\" >>{scripts.BOOT_ERRORS}\n"
                f"rm -f {path}\n"
            )
        return out

    # -- pylima's own files -----------------------------------------------------

    def needs_containerd_step(self) -> bool:
        """boot/40 has work with an archive, or for containerd.system (the distro's)."""
        containerd = self.cfg.get("containerd") or {}
        return bool(containerd.get("system")) or (
            bool(containerd.get("user")) and self.has_containerd_archive)

    def needs_dependency_step(self) -> bool:
        """Whether boot/30 has work: dependency scripts, or packages pylima needs."""
        if any(p.get("mode") == "dependency" for p in self.provision):
            return True
        return self.mount_type == "reverse-sshfs" and bool(self.mounts)

    def _mount_point(self, m: Mapping[str, Any]) -> str:
        return str(m.get("mountPoint") or m.get("location") or "")

    def lima_env(self, ssh_local_port: int, host_home: str | None,
                 virtio_port: str = "") -> str:
        cfg = self.cfg
        containerd = cfg.get("containerd") or {}
        host_home_mp = next((self._mount_point(m) for m in self.mounts
                             if host_home and m.get("location") == host_home), "")
        env: list[tuple[str, object]] = [
            ("LIMA_CIDATA_DEBUG", ""),
            ("LIMA_CIDATA_IID", self.iid),
            ("LIMA_CIDATA_NAME", self.name),
            ("LIMA_CIDATA_HOSTNAME", hostname_for(self.name)),
            ("LIMA_CIDATA_USER", self.user),
            ("LIMA_CIDATA_UID", self.uid),
            ("LIMA_CIDATA_COMMENT", self.comment),
            ("LIMA_CIDATA_HOME", self.home),
            ("LIMA_CIDATA_SHELL", self.shell),
            ("LIMA_CIDATA_HOSTHOME_MOUNTPOINT", host_home_mp),
            ("LIMA_CIDATA_MOUNTS", len(self.mounts)),
        ]
        for i, m in enumerate(self.mounts):
            env.append((f"LIMA_CIDATA_MOUNTS_{i}_MOUNTPOINT", self._mount_point(m)))
        env.append(("LIMA_CIDATA_MOUNTTYPE", self.mount_type))
        disks = list(cfg.get("additionalDisks") or [])
        env.append(("LIMA_CIDATA_DISKS", len(disks)))
        for i, d in enumerate(disks):
            d = d if isinstance(d, dict) else {"name": str(d)}
            env += [(f"LIMA_CIDATA_DISK_{i}_NAME", d.get("name") or ""),
                    (f"LIMA_CIDATA_DISK_{i}_DEVICE", f"vd{chr(ord('b') + i)}"),
                    (f"LIMA_CIDATA_DISK_{i}_FORMAT",
                     "false" if d.get("format") is False else "true"),
                    (f"LIMA_CIDATA_DISK_{i}_FSTYPE", d.get("fsType") or ""),
                    (f"LIMA_CIDATA_DISK_{i}_FSARGS", " ".join(d.get("fsArgs") or []))]
        skip_deps = False
        for i, p in enumerate(self.provision):
            if p.get("mode") == "dependency" and p.get("skipDefaultDependencyResolution"):
                skip_deps = True
            if p.get("mode") == "data":
                n = f"{i:08d}"
                env += [(f"LIMA_CIDATA_DATAFILE_{n}_OVERWRITE",
                         "false" if p.get("overwrite") is False else "true"),
                        (f"LIMA_CIDATA_DATAFILE_{n}_OWNER", p.get("owner") or "root:root"),
                        (f"LIMA_CIDATA_DATAFILE_{n}_PATH", p.get("path") or ""),
                        (f"LIMA_CIDATA_DATAFILE_{n}_PERMISSIONS",
                         p.get("permissions") or "644")]
            if p.get("mode") == "yq":
                n = f"{i:08d}"
                env += [(f"LIMA_CIDATA_YQ_PROVISION_{n}_OWNER", p.get("owner") or "root:root"),
                        (f"LIMA_CIDATA_YQ_PROVISION_{n}_PATH", p.get("path") or ""),
                        (f"LIMA_CIDATA_YQ_PROVISION_{n}_PERMISSIONS",
                         p.get("permissions") or "644")]
        env += [
            ("LIMA_CIDATA_GUEST_INSTALL_PREFIX", cfg.get("guestInstallPrefix") or "/usr/local"),
            ("LIMA_CIDATA_UPGRADE_PACKAGES", _flag(cfg.get("upgradePackages"))),
            ("LIMA_CIDATA_CONTAINERD_USER", _flag(containerd.get("user"))),
            ("LIMA_CIDATA_CONTAINERD_SYSTEM", _flag(containerd.get("system"))),
        ]
        if (containerd.get("user") or containerd.get("system")) and self.has_containerd_archive:
            env.append(("LIMA_CIDATA_CONTAINERD_ARCHIVE", CONTAINERD_ARCHIVE_NAME))
        env += [
            ("LIMA_CIDATA_SLIRP_DNS", self.slirp.dns),
            ("LIMA_CIDATA_SLIRP_GATEWAY", self.slirp.gateway),
            ("LIMA_CIDATA_SLIRP_IP_ADDRESS", self.slirp.guest),
            ("LIMA_CIDATA_UDP_DNS_LOCAL_PORT", 0),
            ("LIMA_CIDATA_TCP_DNS_LOCAL_PORT", 0),
            ("LIMA_CIDATA_ROSETTA_ENABLED", "false"),
            ("LIMA_CIDATA_ROSETTA_BINFMT", "false"),
            ("LIMA_CIDATA_SKIP_DEFAULT_DEPENDENCY_RESOLUTION", _flag(skip_deps)),
            ("LIMA_CIDATA_VMTYPE", cfg.get("vmType") or "qemu"),
            ("LIMA_CIDATA_VSOCK_PORT", 0),
            ("LIMA_CIDATA_VIRTIO_PORT", virtio_port),
            ("LIMA_CIDATA_PLAIN", _flag(cfg.get("plain"))),
            ("LIMA_CIDATA_NO_CLOUD_INIT", ""),
            ("LIMA_CIDATA_PASSWORDLESS_SUDO", _flag(self.sudo)),
            # pylima's additions.
            ("LIMA_CIDATA_SSH_LOCAL_PORT", ssh_local_port),
            ("LIMA_CIDATA_PARAM_NAMES", ",".join(f"PARAM_{k}" for k in self.params)),
            ("LIMA_CIDATA_ENV_NAMES", ",".join(self.env)),
            ("LIMA_CIDATA_YQ_PROVISIONS",
             sum(1 for p in self.provision if p.get("mode") == "yq")),
        ]
        return "".join(f"{k}={shell_quote(v)}\n" for k, v in env)

    def etc_hosts(self) -> str:
        lines = [_BLOCK_START,
                 f"{self.slirp.gateway}\t{HOST_INTERNAL_NAME}",
                 f"127.0.1.1\t{hostname_for(self.name)}"]
        known = {HOST_INTERNAL_NAME: self.slirp.gateway, hostname_for(self.name): "127.0.1.1"}
        hosts = (self.cfg.get("hostResolver") or {}).get("hosts") or {}
        for name, target in hosts.items():
            name, target = str(name), str(target)
            address = known.get(target, target)
            try:
                ipaddress.ip_address(address)
            except ValueError:
                # /etc/hosts holds addresses only; an alias of an unknown name is left
                # to the DNS side.
                lines.append(f"# {name}: {target} is not an address")
                continue
            if not re.fullmatch(r"[A-Za-z0-9._-]+", name):
                lines.append("# skipped a host name that is not valid")
                continue
            lines.append(f"{address}\t{name}")
        lines.append(_BLOCK_END)
        return "\n".join(lines) + "\n"

    def mounts_script(self) -> str:
        out = ["#!/bin/sh",
               f"# Host directories shared with this guest (mountType: {self.mount_type}).",
               "set -u",
               "# shellcheck source=/dev/null",
               '. "$LIMA_CIDATA_MNT/lib.sh"',
               scripts.MOUNT_FUNCS.rstrip("\n"),
               "",
               "code=0"]
        for i, m in enumerate(self.mounts):
            mp = self._mount_point(m)
            if not mp.startswith("/"):
                raise ConfigError(f"field `mounts[{i}].mountPoint` must be an absolute path")
            tag = self.tags.get(i) or mount_tag(str(m.get("location") or ""), mp)
            mode = "rw" if m.get("writable") else "ro"
            q = f"{shell_quote(tag)} {shell_quote(mp)}"
            if self.mount_type == "9p":
                ninep = m.get("9p") or {}
                opts = ",".join([
                    "trans=virtio",
                    f"version={ninep.get('protocolVersion') or '9p2000.L'}",
                    f"msize={parse_size(ninep.get('msize') or '128KiB')}",
                    f"cache={ninep.get('cache') or ('mmap' if mode == 'rw' else 'fscache')}",
                    mode])
                out.append(f"mount_9p {q} {shell_quote(opts)} || code=1")
            elif self.mount_type == "virtiofs":
                out.append(f"mount_virtiofs {q} {mode} || code=1")
            elif self.mount_type == "reverse-sshfs":
                out.append(f"mount_reverse_sshfs {q} {mode} || code=1")
            else:
                out.append(f"# mountType {shell_quote(self.mount_type)}: nothing to do"
                           f" for {shell_quote(mp)}")
        out.append('exit "$code"')
        return "\n".join(out) + "\n"

    def provision_files(self) -> dict[str, str]:
        files: dict[str, str] = {}
        for i, p in enumerate(self.provision):
            mode = p.get("mode") or "system"
            n = f"{i:08d}"
            if mode in ("system", "user", "dependency"):
                script = str(p.get("script") or "")
                # A script without "#!" runs under /bin/sh, as the guest would exec it.
                if not script.startswith("#!"):
                    script = "#!/bin/sh\n" + script
                files[f"provision.{mode}/{n}"] = script
            elif mode == "data":
                files[f"provision.data/{n}"] = str(p.get("content") or "")
            elif mode == "yq":
                # evaluated by the host (boot.sh installs the results); the file
                # holds the expression, as Lima's provision.yq/ does
                files[f"provision.yq/{n}"] = str(p.get("expression") or "")
            elif mode in ("boot", "ansible"):
                # boot: in user-data's bootcmd; ansible: run by the host (a deprecated
                # Lima mode).
                continue
            else:
                raise ConfigError(f"field `provision[{i}].mode` has an unknown value `{mode}`")
        return files


def _flag(value: object) -> str:
    return "1" if value else ""
