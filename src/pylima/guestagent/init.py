#!/usr/bin/python3
"""pylima-init: what cloud-init does for pylima's NoCloud seed, in a fraction of the time.

pylima's own images carry no cloud-init. Two systemd units of the image run this
program from the mounted seed (`pylima-init early|final SEED`):

- early (before the network, sshd and logind start): `bootcmd`, the host name,
  the user and its SSH keys, sudo, the SSH host keys, the time zone, CA
  certificates, `write_files`, and the network configuration for systemd-networkd.
- final (once the network and sshd are up): growing the root partition and file
  system, package update/upgrade, deferred `write_files`, then the scripts in
  /var/lib/cloud/scripts/per-boot (pylima's launcher of boot.sh, written there by
  `write_files` as for cloud-init).

It reads the same meta-data, user-data and network-config that cloud-init reads, and
knows every field pylima writes. It reads them from the seed's pylima-init.marshal,
where pylima writes the same documents with Python's built-in marshal: under
emulation, importing a YAML parser (and `re`, which json needs too) costs the boot's
critical path more than a second; marshal costs nothing. A field it does not know is
never skipped silently: it is named on the console (the host's serial.log) and in
/run/lima-boot-errors, and the host reports a degraded start. Images with cloud-init
ignore this file.

Stdlib only (a guest's python3), and on the boot path only modules that cost no
import time; the rest (shlex, socket, base64, ...) are imported where they are used.
`--root DIR` addresses every file under DIR and leaves the running system alone (no
commands are run): tests use it to run the file-writing steps on a host.
"""

from __future__ import annotations

import marshal
import os
import pwd
import sys
import time

# As typing.TYPE_CHECKING, without importing typing (a tenth of a second of the boot
# under emulation): the annotations need these names only for mypy.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

BOOT_ERRORS = "/run/lima-boot-errors"
STATE_DIR = "/run/pylima-init"
PER_BOOT_DIR = "/var/lib/cloud/scripts/per-boot"
SUDOERS_FILE = "/etc/sudoers.d/90-pylima-users"
NETWORK_DIR = "/run/systemd/network"
# How long `set-name` waits for udev to have handled the NIC (its driver is loaded by
# udev's coldplug, and udev gives it its own name first), then renames it anyway.
NIC_WAIT_SECONDS = 20.0

# The fields this program knows, per document. Nested fields are checked where
# they are used.
META_DATA_KEYS = {"instance-id", "local-hostname"}
USER_DATA_KEYS = {
    "bootcmd", "growpart", "resize_rootfs", "users", "ssh_deletekeys", "ssh_genkeytypes",
    "ssh_keys", "timezone", "package_update", "package_upgrade",
    "package_reboot_if_required", "ca_certs", "manage_resolv_conf", "resolv_conf",
    "write_files",
}
USER_KEYS = {"name", "uid", "gecos", "homedir", "shell", "sudo", "lock_passwd",
             "ssh_authorized_keys"}
GROWPART_KEYS = {"mode", "devices", "ignore_growroot_disabled"}
WRITE_FILE_KEYS = {"path", "content", "owner", "permissions", "encoding", "append", "defer"}
ETHERNET_KEYS = {"match", "dhcp4", "dhcp6", "nameservers", "set-name", "addresses", "routes"}
ROUTE_KEYS = {"to", "via"}
KEY_TYPES = ("rsa", "ecdsa", "ed25519")
KEY_PARTS = ("private", "public", "certificate")
# The seed's meta-data, user-data and network-config, as one marshal'd mapping from
# document name to document (pylima's cidata.render writes it).
SEED_DOCS = "pylima-init.marshal"
DOC_NAMES = ("meta-data", "user-data", "network-config")
HOSTNAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-")
USERNAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_.-")
# Boot scripts of the seed that the early stage runs too (see early_boot_scripts).
EARLY_BOOT_SCRIPTS = ("boot/00-guest-setup.sh", "boot/07-etc-environment.sh",
                      "boot/20-rootless-base.sh")
EARLY_DONE_FILE = f"{STATE_DIR}/early-boot-scripts"  # boot.sh's EARLY_BOOT_SCRIPTS_DONE
# Written by the early stage when the final stage has nothing to do but the per-boot
# scripts (no partition to grow, no packages, no deferred write_files): the image's
# launcher then runs them itself, without starting Python (half a second or more of
# the boot's critical path under emulation). It holds the instance id.
SCRIPTS_ONLY_FILE = f"{STATE_DIR}/final-scripts-only"


def ssh_key_name(key: str) -> tuple[str, str] | None:
    """(type, part) of an `ssh_keys` field such as `ed25519_private`, or None."""
    kind, _, part = key.partition("_")
    return (kind, part) if kind in KEY_TYPES and part in KEY_PARTS else None


def valid_hostname(name: str) -> bool:
    """[A-Za-z0-9][A-Za-z0-9.-]{0,62}, without importing re."""
    return 0 < len(name) <= 63 and name[0] not in ".-" and set(name) <= HOSTNAME_CHARS


def valid_username(name: str) -> bool:
    r"""[a-z_][a-z0-9_.-]*\$? (useradd's rule), without importing re."""
    body = name[:-1] if name.endswith("$") else name
    return (bool(body) and body[0] in USERNAME_CHARS and body[0] not in "0123456789.-"
            and set(body) <= USERNAME_CHARS)


def shell_join(argv: list[str]) -> str:
    import shlex  # imports re: only for a list command or an error message

    return shlex.join(argv)


def spawn(argv: list[str], *, env: dict[str, str] | None = None, input: str | None = None,
          capture: bool = True) -> tuple[int, str]:
    """Run `argv`, its stdin /dev/null or `input`; (exit status, what it wrote to
    stdout and stderr, when captured). os.posix_spawn, not subprocess: importing
    subprocess costs half a second of the boot's critical path under emulation."""
    actions: list[tuple[Any, ...]] = []
    child_ends: list[int] = []
    in_w = out_r = -1
    if input is None:
        actions.append((os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0))
    else:
        in_r, in_w = os.pipe()
        actions.append((os.POSIX_SPAWN_DUP2, in_r, 0))
        child_ends.append(in_r)
    if capture:
        out_r, out_w = os.pipe()
        actions += [(os.POSIX_SPAWN_DUP2, out_w, 1), (os.POSIX_SPAWN_DUP2, out_w, 2)]
        child_ends.append(out_w)
    try:
        pid = os.posix_spawnp(argv[0], argv, os.environ if env is None else env,
                              file_actions=actions)
    except BaseException:
        for fd in (in_w, out_r):
            if fd >= 0:
                os.close(fd)
        raise
    finally:
        for fd in child_ends:
            os.close(fd)
    out = b""
    try:
        if in_w >= 0:
            data = (input or "").encode()
            try:
                while data:
                    data = data[os.write(in_w, data):]
            except BrokenPipeError:
                pass  # it exited without reading all of it, as subprocess allows
            os.close(in_w)
            in_w = -1
        if out_r >= 0:
            with open(out_r, "rb", closefd=True) as f:
                out_r = -1
                out = f.read()
    finally:
        for fd in (in_w, out_r):
            if fd >= 0:
                os.close(fd)
        _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), out.decode(errors="replace")


class FieldError(Exception):
    """A field of the seed this program does not know or cannot apply."""


def command_failed(what: str, rc: int, output: str) -> FieldError:
    """The error for a command that exited with `rc`: its status and last line."""
    lines = output.strip().splitlines()
    return FieldError(f"{what} failed with exit code {rc}" + (f": {lines[-1]}" if lines else ""))


class Init:
    def __init__(self, seed: str, root: str = "") -> None:
        self.seed = seed
        self.root = root.rstrip("/")
        self.errors: list[str] = []
        docs = self._load_docs()
        self.meta = docs["meta-data"]
        self.user_data = docs["user-data"]
        self.network = docs["network-config"]
        self.iid = str(self.meta.get("instance-id") or "")

    # -- helpers ---------------------------------------------------------------------

    def path(self, p: str) -> str:
        return self.root + p

    @property
    def on_guest(self) -> bool:
        return not self.root

    def _load_docs(self) -> dict[str, dict[str, Any]]:
        """The seed's documents by name; an empty mapping for one that is missing or
        is not a mapping (an error, but the stage still does what the rest says)."""
        docs: dict[str, dict[str, Any]] = {name: {} for name in DOC_NAMES}
        try:
            with open(os.path.join(self.seed, SEED_DOCS), "rb") as f:
                loaded = marshal.load(f)
        except FileNotFoundError:
            self.error(f"the seed has no {SEED_DOCS} (it was not written by pylima)")
            return docs
        except (OSError, EOFError, ValueError, TypeError) as e:
            self.error(f"cannot read {SEED_DOCS}: {e}")
            return docs
        if not isinstance(loaded, dict):
            self.error(f"{SEED_DOCS} is not a mapping")
            return docs
        for name in DOC_NAMES:
            doc = loaded.get(name)
            if doc is None:
                continue
            if not isinstance(doc, dict):
                self.error(f"{name} is not a mapping")
                continue
            docs[name] = doc
        return docs

    def log(self, msg: str) -> None:
        print(f"pylima-init: {msg}", flush=True)

    def error(self, msg: str) -> None:
        self.log(f"ERROR: {msg}")
        self.errors.append(msg)
        try:
            os.makedirs(os.path.dirname(self.path(BOOT_ERRORS)), exist_ok=True)
            with open(self.path(BOOT_ERRORS), "a", encoding="utf-8") as f:
                f.write(f"pylima-init: {msg}\n")
        except OSError:
            pass

    def unknown(self, doc: str, keys: Any, known: set[str], where: str = "") -> None:
        for k in sorted(map(str, keys)):
            if k not in known:
                self.error(f"unknown field `{where}{k}` in {doc}: not applied "
                           "(pylima-init knows: " + ", ".join(sorted(known)) + ")")

    def run(self, argv: list[str], *, env: dict[str, str] | None = None,
            input: str | None = None) -> str:
        """Run a command on the guest (nothing under --root); its output, or a
        FieldError naming it with its status and last line."""
        if not self.on_guest:
            return ""
        rc, out = spawn(argv, env=env, input=input)
        if rc != 0:
            raise command_failed(f"`{shell_join(argv)}`", rc, out)
        return out

    def write(self, p: str, content: str | bytes, mode: int = 0o644, append: bool = False,
              owner: tuple[int, int] | None = None) -> None:
        full = self.path(p)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        data = content.encode() if isinstance(content, str) else content
        if append:
            with open(full, "ab") as f:
                f.write(data)
        else:
            tmp = f"{full}.pylima-init.{os.getpid()}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, full)
        os.chmod(full, mode)
        if owner is not None and self.on_guest:
            os.chown(full, *owner)

    def step(self, name: str, fn: Callable[[], None]) -> None:
        t0 = time.monotonic()
        try:
            fn()
        except FieldError as e:
            self.error(f"{name}: {e}")
        except Exception as e:  # one failing step never stops the others
            self.error(f"{name}: {type(e).__name__}: {e}")
        dt = time.monotonic() - t0
        if dt > 0.5:
            self.log(f"{name} took {dt:.1f} s")

    # -- early -------------------------------------------------------------------------

    def early(self) -> None:
        self.unknown("meta-data", self.meta, META_DATA_KEYS)
        self.unknown("user-data", self.user_data, USER_DATA_KEYS)
        self.step("bootcmd", self.bootcmd)
        self.step("hostname", self.hostname)
        self.step("users", self.users)
        self.step("ssh", self.ssh_host_keys)
        self.step("timezone", self.timezone)
        self.step("ca_certs", self.ca_certs)
        self.step("resolv_conf", self.resolv_conf)
        self.step("write_files", lambda: self.write_files(deferred=False))
        self.step("network-config", self.network_config)
        self.step("early boot scripts", self.early_boot_scripts)
        if self.wants_packages():
            self.log("packages are updated in the final stage")
        self.step("final stage plan", self.plan_final)

    def wants_packages(self) -> bool:
        return bool(self.user_data.get("package_update")
                    or self.user_data.get("package_upgrade"))

    def plan_final(self) -> None:
        """SCRIPTS_ONLY_FILE when the final stage needs no Python. A `growpart` the
        final stage would find fault with is left to it, so that it is reported once."""
        ud = self.user_data
        entries = ud.get("write_files") or []
        deferred = isinstance(entries, list) and any(
            isinstance(e, dict) and e.get("defer") for e in entries)
        gp = ud.get("growpart")
        if isinstance(gp, dict) and set(map(str, gp)) - GROWPART_KEYS:
            return
        try:
            grow = self.grow_target()
        except FieldError:
            return
        if grow is None and not deferred and not self.wants_packages():
            self.write(SCRIPTS_ONLY_FILE, self.iid + "\n", 0o600)

    def early_boot_scripts(self) -> None:
        """Boot scripts run here, before logind and sshd start, as well as by boot.sh
        later (where they then change nothing). boot/07 makes SSH sessions final
        (/etc/environment, then the lima-ssh-ready marker): run later only, it found
        the host's first SSH session open and, the file having changed, ended it.
        boot/20's linger file makes logind start the user's manager at boot, instead
        of the first SSH login waiting for it. boot/00 makes sshd accept COLORTERM
        before the host agent's first connection (which later sessions share). Plain
        mode runs no boot script (boot.sh writes the marker itself)."""
        if not os.path.isfile(os.path.join(self.seed, "lima.env")):
            return  # not pylima's seed layout
        for rel in EARLY_BOOT_SCRIPTS:
            script = os.path.join(self.seed, rel)
            if not os.path.isfile(script):
                continue
            env = {**os.environ, "LIMA_CIDATA_MNT": self.seed}
            if self.root:
                env["LIMA_CIDATA_ROOT"] = self.root
            rc, out = spawn(
                ["/bin/sh", "-c", 'set -a; . "$LIMA_CIDATA_MNT/lima.env"; set +a; '
                 '[ "${LIMA_CIDATA_PLAIN:-0}" = 1 ] && exit 0; exec "$0"', script], env=env)
            if rc != 0:
                raise command_failed(rel, rc, out)
            # boot.sh skips it in this boot (one that failed here runs again there)
            self.write(EARLY_DONE_FILE, f"{self.iid} {rel}\n", 0o600, append=True)

    def bootcmd(self) -> None:
        cmds = self.user_data.get("bootcmd") or []
        if not cmds:
            return
        if not isinstance(cmds, list):
            raise FieldError("`bootcmd` must be a list")
        # As cloud-init: one shell script, a line per string entry, a quoted command
        # per list entry, run by /bin/sh with INSTANCE_ID set.
        lines = ["#!/bin/sh"]
        for c in cmds:
            lines.append(shell_join(list(map(str, c))) if isinstance(c, list) else str(c))
        script = self.path(f"{STATE_DIR}/bootcmd")
        self.write(f"{STATE_DIR}/bootcmd", "\n".join(lines) + "\n", 0o700)
        self.run(["/bin/sh", script], env={**os.environ, "INSTANCE_ID": self.iid})

    def hostname(self) -> None:
        name = str(self.meta.get("local-hostname") or "")
        if not name:
            return
        if not valid_hostname(name):
            raise FieldError(f"`local-hostname` `{name}` is not a valid host name")
        self.write("/etc/hostname", name + "\n")
        # systemd set the name from /etc/hostname already on every boot but the first;
        # importing socket costs most of a second of the boot under emulation
        if self.on_guest and os.uname().nodename != name:
            import socket

            socket.sethostname(name)
        # As cloud-init's `manage_etc_hosts: localhost`: the name resolves locally.
        hosts = self.path("/etc/hosts")
        try:
            with open(hosts, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            lines = ["127.0.0.1\tlocalhost"]
        lines = [ln for ln in lines if not ln.startswith("127.0.1.1")]
        lines.insert(1 if lines else 0, f"127.0.1.1\t{name}")
        self.write("/etc/hosts", "\n".join(lines) + "\n")

    def grow_target(self) -> tuple[str, int] | None:
        """(disk, partition number) of the root partition when `growpart` asks for it
        to be grown and the disk has room after it; None when there is nothing to do."""
        gp = self.user_data.get("growpart")
        if gp is None:
            return None
        if not isinstance(gp, dict):
            raise FieldError("`growpart` must be a mapping")
        self.unknown("user-data", gp, GROWPART_KEYS, "growpart.")
        if gp.get("mode") in (False, "off"):
            return None
        devices = gp.get("devices") or ["/"]
        if devices != ["/"]:
            raise FieldError(f"`growpart.devices` {devices!r}: only [\"/\"] is supported")
        if not self.on_guest:
            return None
        part = root_partition()
        if part is None:
            raise FieldError("cannot find the root partition")
        disk, number, grow = part
        return (disk, number) if grow else None

    def growpart(self) -> None:
        target = self.grow_target()
        if target is None:
            return
        disk, number = target
        self.log(f"growing /dev/{disk} partition {number} to the end of the disk")
        # sfdisk moves the backup GPT to the disk's new end and extends the partition;
        # partx tells the kernel (the partition is in use: no re-read). Three programs
        # where growpart runs dozens (~4 s under emulation); growpart stays the fallback.
        try:
            self.run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", "-N",
                      str(number), f"/dev/{disk}"], input=", +\n")
            self.run(["partx", "--update", "--nr", str(number), f"/dev/{disk}"])
        except FieldError as e:
            self.log(f"sfdisk could not grow the partition ({e}); trying growpart")
            self.run(["growpart", f"/dev/{disk}", str(number)])
        if self.user_data.get("resize_rootfs", True):
            dev = partition_device(disk, number)
            self.run(["resize2fs", dev])

    def users(self) -> None:
        users = self.user_data.get("users") or []
        if not isinstance(users, list):
            raise FieldError("`users` must be a list")
        sudoers = []
        for i, u in enumerate(users):
            if not isinstance(u, dict):
                raise FieldError(f"`users[{i}]`: only a mapping is supported")
            self.unknown("user-data", u, USER_KEYS, f"users[{i}].")
            name = str(u["name"])
            if not valid_username(name):
                raise FieldError(f"`users[{i}].name` `{name}` is not a valid user name")
            home = str(u.get("homedir") or f"/home/{name}")
            self.ensure_user(name, u, home)
            if u.get("sudo"):
                rules = u["sudo"] if isinstance(u["sudo"], list) else [u["sudo"]]
                sudoers += [f"# User rules for {name}"] + [f"{name} {r}" for r in rules]
            if u.get("lock_passwd", True) and not self.password_locked(name):
                self.run(["passwd", "-l", name])
            keys = [str(k).strip() for k in u.get("ssh_authorized_keys") or []]
            self.authorized_keys(name, home, keys)
        if sudoers:
            self.write(SUDOERS_FILE, "# Written by pylima-init\n" + "\n".join(sudoers) + "\n",
                       0o440)

    def password_locked(self, name: str) -> bool:
        """Whether `name`'s password is locked already (a "!" before its hash in
        /etc/shadow, as `passwd -l` leaves it): then locking it again, a process and
        a rewrite of /etc/shadow on every boot, changes nothing."""
        try:
            with open(self.path("/etc/shadow"), encoding="utf-8") as f:
                for line in f:
                    fields = line.rstrip("\n").split(":")
                    if fields[0] == name and len(fields) > 1:
                        return fields[1].startswith("!")
        except OSError:
            pass
        return False

    def ensure_user(self, name: str, u: dict[str, Any], home: str) -> None:
        if not self.on_guest:
            return
        try:
            pwd.getpwnam(name)
            return  # an earlier boot made it; its home and files stay as they are
        except KeyError:
            pass
        argv = ["useradd", "--create-home", "--home-dir", home,
                "--shell", str(u.get("shell") or "/bin/bash")]
        if u.get("uid") is not None:
            argv += ["--uid", str(int(u["uid"]))]
        if u.get("gecos"):
            argv += ["--comment", str(u["gecos"])]
        self.run([*argv, name])

    def authorized_keys(self, name: str, home: str, keys: list[str]) -> None:
        if not keys:
            return
        if self.on_guest:
            pw = pwd.getpwnam(name)
            owner: tuple[int, int] | None = (pw.pw_uid, pw.pw_gid)
        else:
            owner = None
        ssh_dir = f"{home}/.ssh"
        os.makedirs(self.path(ssh_dir), mode=0o700, exist_ok=True)
        if owner:
            os.chown(self.path(ssh_dir), *owner)
        path = f"{ssh_dir}/authorized_keys"
        try:
            with open(self.path(path), encoding="utf-8") as f:
                existing = [ln for ln in f.read().splitlines() if ln.strip()]
        except FileNotFoundError:
            existing = []
        # As cloud-init: keys already there stay, the seed's are added once.
        merged = existing + [k for k in keys if k not in existing]
        self.write(path, "\n".join(merged) + "\n", 0o600, owner=owner)

    def ssh_host_keys(self) -> None:
        ud = self.user_data
        keys = ud.get("ssh_keys") or {}
        if not isinstance(keys, dict):
            raise FieldError("`ssh_keys` must be a mapping")
        bad = [k for k in keys if not ssh_key_name(str(k))]
        for k in bad:
            self.error(f"unknown field `ssh_keys.{k}` in user-data: not applied")
        if ud.get("ssh_deletekeys"):
            d = self.path("/etc/ssh")
            for f in os.listdir(d) if os.path.isdir(d) else []:
                if f.startswith("ssh_host_") and "key" in f:
                    os.unlink(os.path.join(d, f))
        for k, v in keys.items():
            m = ssh_key_name(str(k))
            if not m:
                continue
            kind, part = m
            base = f"/etc/ssh/ssh_host_{kind}_key"
            if part == "private":
                self.write(base, str(v).strip() + "\n", 0o600)
            elif part == "public":
                self.write(base + ".pub", str(v).strip() + "\n", 0o644)
            else:
                self.write(base + "-cert.pub", str(v).strip() + "\n", 0o644)
        for kind in ud.get("ssh_genkeytypes") or []:
            if kind not in KEY_TYPES:
                raise FieldError(f"`ssh_genkeytypes`: unknown key type `{kind}`")
            path = f"/etc/ssh/ssh_host_{kind}_key"
            if not os.path.exists(self.path(path)):
                self.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-f", path])

    def timezone(self) -> None:
        tz = self.user_data.get("timezone")
        if not tz:
            return
        tz = str(tz)
        zone = f"/usr/share/zoneinfo/{tz}"
        if ".." in tz.split("/") or not os.path.isfile(self.path(zone)):
            raise FieldError(f"unknown time zone `{tz}`")
        link = self.path("/etc/localtime")
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(zone, link)
        self.write("/etc/timezone", tz + "\n")

    def ca_certs(self) -> None:
        ca = self.user_data.get("ca_certs")
        if not ca:
            return
        if not isinstance(ca, dict):
            raise FieldError("`ca_certs` must be a mapping")
        self.unknown("user-data", ca, {"remove_defaults", "trusted"}, "ca_certs.")
        if ca.get("remove_defaults"):
            conf = self.path("/etc/ca-certificates.conf")
            if os.path.exists(conf):
                with open(conf, encoding="utf-8") as f:
                    lines = f.read().splitlines()
                # "!name" deselects a certificate (update-ca-certificates(8)).
                lines = [ln if ln.startswith(("#", "!")) or not ln.strip() else "!" + ln
                         for ln in lines]
                self.write("/etc/ca-certificates.conf", "\n".join(lines) + "\n")
        for i, cert in enumerate(ca.get("trusted") or []):
            self.write(f"/usr/local/share/ca-certificates/pylima-ca-{i}.crt",
                       str(cert).strip() + "\n")
        self.run(["update-ca-certificates", "--fresh"])

    def resolv_conf(self) -> None:
        rc = self.user_data.get("resolv_conf")
        if rc is None:
            return
        if not isinstance(rc, dict):
            raise FieldError("`resolv_conf` must be a mapping")
        self.unknown("user-data", rc, {"nameservers"}, "resolv_conf.")
        # As cloud-init on Debian, where systemd-resolved owns /etc/resolv.conf: the
        # name servers reach the resolver through network-config, which must list them.
        wanted = [str(a) for a in rc.get("nameservers") or []]
        given: set[str] = set()
        for eth in ((self.network.get("ethernets") or {}).values()):
            given.update(str(a) for a in
                         ((eth or {}).get("nameservers") or {}).get("addresses") or [])
        missing = [a for a in wanted if a not in given]
        if missing:
            raise FieldError(f"`resolv_conf.nameservers` {missing} are not in network-config")

    def write_files(self, deferred: bool) -> None:
        entries = self.user_data.get("write_files") or []
        if not isinstance(entries, list):
            raise FieldError("`write_files` must be a list")
        for i, e in enumerate(entries):
            if not isinstance(e, dict) or not e.get("path"):
                raise FieldError(f"`write_files[{i}]` needs a path")
            if not deferred:
                self.unknown("user-data", e, WRITE_FILE_KEYS, f"write_files[{i}].")
            if bool(e.get("defer")) != deferred:
                continue
            content: str | bytes = str(e.get("content") or "")
            enc = str(e.get("encoding") or "text").lower()
            if enc in ("b64", "base64"):
                import base64

                content = base64.b64decode(content)
            elif enc in ("gz+b64", "gzip+base64", "gz+base64", "gzip+b64"):
                import base64
                import gzip

                content = gzip.decompress(base64.b64decode(content))
            elif enc not in ("text", "text/plain"):
                raise FieldError(f"`write_files[{i}].encoding` `{enc}` is not supported")
            mode = int(str(e.get("permissions") or "0644"), 8)
            owner = None
            if self.on_guest:
                user, _, group = str(e.get("owner") or "root:root").partition(":")
                pw = pwd.getpwnam(user)
                gid = pw.pw_gid
                if group:
                    import grp

                    gid = grp.getgrnam(group).gr_gid
                owner = (pw.pw_uid, gid)
            self.write(str(e["path"]), content, mode, bool(e.get("append")), owner)

    def network_config(self) -> None:
        net = self.network
        if not net:
            return
        self.unknown("network-config", net, {"version", "ethernets"})
        if net.get("version") != 2:
            raise FieldError(f"network-config version {net.get('version')!r}: only 2 is "
                             "supported")
        eths = net.get("ethernets") or {}
        for name, eth in eths.items():
            eth = eth or {}
            self.unknown("network-config", eth, ETHERNET_KEYS, f"ethernets.{name}.")
            for i, route in enumerate(eth.get("routes") or []):
                if not isinstance(route, dict) or not route.get("via"):
                    raise FieldError(f"network-config `ethernets.{name}.routes[{i}]` "
                                     "needs a `via`")
                self.unknown("network-config", route, ROUTE_KEYS,
                             f"ethernets.{name}.routes[{i}].")
            self.set_name(eth)
            self.write(f"{NETWORK_DIR}/10-pylima-{name}.network",
                       render_networkd(str(name), eth))

    def set_name(self, eth: dict[str, Any]) -> None:
        """`set-name` of a NIC matched by MAC, as cloud-init's udev rule does it: a
        systemd .link file, so that every `add` event udev handles for the NIC names
        it so (udev's coldplug may send one after this stage), and a rename now,
        before networkd starts. The early stage runs while udev's coldplug loads the
        NIC's driver and names the NIC (enp0s3): the rename waits until udev has
        handled it (its entry in udev's database), else udev would name it after us."""
        new = str(eth.get("set-name") or "")
        mac = str((eth.get("match") or {}).get("macaddress") or "").lower()
        if not new or not mac:
            return
        self.write(f"{NETWORK_DIR}/10-pylima-{new}.link",
                   "# Written by pylima-init from the seed's network-config (set-name)\n"
                   f"[Match]\nMACAddress={mac}\n\n[Link]\nName={new}\n")
        if not self.on_guest:
            return
        # udevd reads .link files when it starts and then only every few seconds; where
        # it runs already, it reads this one now (where it does not yet, the call fails
        # and udevd reads it when it starts)
        spawn(["udevadm", "control", "--reload"])
        deadline = time.monotonic() + NIC_WAIT_SECONDS
        while True:
            dev = nic_by_mac(mac)
            if dev is not None and udev_handled(dev):
                break
            if time.monotonic() > deadline:
                if dev is None:
                    raise FieldError(f"`set-name: {new}`: no NIC has the MAC address {mac}")
                self.log(f"udev has not handled {dev} after {NIC_WAIT_SECONDS:.0f} s: "
                         f"renaming it to {new} anyway")
                break
            time.sleep(0.05)
        if dev != new:
            self.run(["ip", "link", "set", "dev", dev, "name", new])

    # -- final -------------------------------------------------------------------------

    def final(self) -> None:
        # Nothing before sshd needs the room: growing the disk (first boot only)
        # overlaps the host's first SSH connections instead of delaying them.
        self.step("growpart", self.growpart)
        if self.wants_packages():
            self.step("package_update_upgrade_install", self.packages)
        self.step("write_files (deferred)", lambda: self.write_files(deferred=True))
        self.step("scripts_per_boot", self.per_boot)

    def packages(self) -> None:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        self.run(["apt-get", "-q", "update"], env=env)
        if self.user_data.get("package_upgrade"):
            self.run(["apt-get", "-q", "-y", "-o", "Dpkg::Options::=--force-confold",
                      "dist-upgrade"], env=env)
        if (self.user_data.get("package_reboot_if_required")
                and os.path.exists(self.path("/var/run/reboot-required")) and self.on_guest):
            self.log("a package asks for a reboot: rebooting")
            spawn(["systemctl", "reboot"])
            sys.exit(0)

    def per_boot(self) -> None:
        d = self.path(PER_BOOT_DIR)
        if not os.path.isdir(d):
            return
        for f in sorted(os.listdir(d)):
            p = os.path.join(d, f)
            if not (os.path.isfile(p) and os.access(p, os.X_OK)):
                continue
            self.log(f"running {PER_BOOT_DIR}/{f}")
            if self.on_guest:
                # its output goes straight to our stdout (the console and the journal)
                rc, _ = spawn([p], capture=False)
                if rc != 0:
                    # boot.sh records its own failures in /run/lima-boot-errors
                    self.log(f"{f} exited with status {rc}")


def nic_by_mac(mac: str) -> str | None:
    """The name of the network interface with MAC address `mac` (lower case), if any."""
    try:
        devs = sorted(os.listdir("/sys/class/net"))
    except OSError:
        return None
    for dev in devs:
        try:
            with open(f"/sys/class/net/{dev}/address") as f:
                if f.read().strip().lower() == mac:
                    return dev
        except OSError:
            continue
    return None


def udev_handled(dev: str) -> bool:
    """Whether udev has processed the interface `dev` (and so named it): udev writes
    its database entry, /run/udev/data/nIFINDEX, once it has."""
    try:
        with open(f"/sys/class/net/{dev}/ifindex") as f:
            ifindex = f.read().strip()
    except OSError:
        return False
    return os.path.exists(f"/run/udev/data/n{ifindex}")


def render_networkd(name: str, eth: dict[str, Any]) -> str:
    """One systemd-networkd .network file for a network-config v2 ethernet (as
    cloud-init's networkd renderer writes it)."""
    match = eth.get("match") or {}
    lines = ["# Written by pylima-init from the seed's network-config", "[Match]"]
    if match.get("name"):
        lines.append(f"Name={match['name']}")
    elif match.get("macaddress"):
        lines.append(f"MACAddress={match['macaddress']}")
    else:
        lines.append(f"Name={name}")
    lines += ["", "[Network]"]
    d4, d6 = bool(eth.get("dhcp4")), bool(eth.get("dhcp6"))
    lines.append("DHCP=" + {(True, True): "yes", (True, False): "ipv4",
                            (False, True): "ipv6", (False, False): "no"}[(d4, d6)])
    for a in eth.get("addresses") or []:
        lines.append(f"Address={a}")
    ns = eth.get("nameservers") or {}
    for a in ns.get("addresses") or []:
        lines.append(f"DNS={a}")
    if ns.get("search"):
        lines.append("Domains=" + " ".join(map(str, ns["search"])))
    for route in eth.get("routes") or []:
        lines += ["", "[Route]", f"Gateway={route['via']}"]
        if route.get("to") not in (None, "default", "0.0.0.0/0"):
            lines.append(f"Destination={route['to']}")
    return "\n".join(lines) + "\n"


def root_partition() -> tuple[str, int, bool] | None:
    """(disk, partition number, whether the disk has room after it) for '/'."""
    dev = os.stat("/").st_dev
    sys_dir = f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}"
    try:
        with open(f"{sys_dir}/partition") as f:
            number = int(f.read())
        real = os.path.realpath(sys_dir)
        disk = os.path.basename(os.path.dirname(real))

        def num(p: str) -> int:
            with open(p) as f:
                return int(f.read())

        end = num(f"{real}/start") + num(f"{real}/size")
        total = num(f"/sys/class/block/{disk}/size")
    except (OSError, ValueError):
        return None
    # room beyond the backup GPT (33 sectors) and alignment slack: grow
    return disk, number, total - end > 4096


def partition_device(disk: str, number: int) -> str:
    return f"/dev/{disk}p{number}" if disk[-1].isdigit() else f"/dev/{disk}{number}"


USAGE = "usage: pylima-init {early,final} SEED [--root DIR]"


def parse_args(argv: list[str]) -> tuple[str, str, str]:
    """(stage, seed, root). By hand: argparse costs 0.2 s of the boot under emulation."""
    args, root = list(argv), ""
    if "--root" in args:
        i = args.index("--root")
        if i + 1 >= len(args):
            raise SystemExit(f"{USAGE}\npylima-init: --root needs a directory")
        root = args[i + 1]
        del args[i:i + 2]
    else:
        for a in args:
            if a.startswith("--root="):
                root = a.split("=", 1)[1]
                args.remove(a)
                break
    if len(args) != 2 or args[0] not in ("early", "final"):
        raise SystemExit(USAGE)
    return args[0], args[1], root


def main(argv: list[str] | None = None) -> int:
    stage, seed, root = parse_args(sys.argv[1:] if argv is None else argv)
    t0 = time.monotonic()
    init = Init(seed, root)
    init.log(f"{stage} stage of {init.iid or 'an unknown instance'}")
    getattr(init, stage)()
    init.write(f"{STATE_DIR}/{stage}.done", init.iid + "\n")
    init.log(f"{stage} stage done in {time.monotonic() - t0:.1f} s"
             + (f" with {len(init.errors)} error(s)" if init.errors else ""))
    return 1 if init.errors else 0


if __name__ == "__main__":
    sys.exit(main())
