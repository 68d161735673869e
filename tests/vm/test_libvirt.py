"""vmType libvirt against a real libvirt: the unprivileged test user's own daemon
(`qemu:///session`, which libvirt starts on first use, no systemd needed), reached
first as a local host and then as a remote one over `qemu+ssh://` through a
dedicated sshd on 127.0.0.1 (its own host key and authorized_keys, started here and
stopped at the end). Both use one storage pool made for this module, so the second
boot reuses the image volume the first uploaded.

One instance, booted twice, one boot at a time, in test order: the tests of this
module depend on each other's state (they are steps of one scenario), so they run
only as a whole module.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.vm.conftest import Host, eventually

NAME = "lv"


def _have_libvirt() -> str:
    if shutil.which("virsh") is None or shutil.which("libvirtd") is None:
        return "libvirt is not installed (scripts/test installs it)"
    try:
        from pylima.drivers.libvirt import conn

        conn.binding()
    except Exception as e:  # noqa: BLE001 - the reason to skip
        return f"libvirt's Python binding: {e}"
    return ""


def _free_port() -> int:
    from pylima.sshutil import free_port

    return free_port()


@dataclass
class Libvirt:
    host: Host
    pool: str
    pool_dir: Path
    share: Path
    remote_uri: str = ""

    def virsh(self, *args: str, uri: str = "qemu:///session") -> str:
        r = self.host.run("virsh", "-c", uri, *args, timeout=120)
        assert r.returncode == 0, r.stderr
        return r.stdout

    def volumes(self) -> list[str]:
        self.virsh("pool-refresh", self.pool)
        lines = self.virsh("vol-list", self.pool).splitlines()[2:]  # under the header
        return [ln.split()[0] for ln in lines if ln.strip()]

    def domains(self) -> list[str]:
        return self.virsh("list", "--all", "--name").split()

    def inst_json(self) -> dict:
        r = self.host.limactl("list", "--json", NAME)
        return json.loads(r.stdout)


@pytest.fixture(scope="module")
def libvirt(unprivileged_host: Host, shared_image: dict) -> Iterator[Libvirt]:
    """The test user's session daemon with a pool of this run's own, and a shared
    directory for the reverse-sshfs mount. No boot here."""
    why = _have_libvirt()
    if why:
        pytest.skip(why)
    host = unprivileged_host
    # in the user's home: a root test run's temporary directories are root's alone
    base = host.home / f"libvirt-test-{os.getpid()}"
    shutil.rmtree(base, ignore_errors=True)
    pool_dir, share = base / "pool", base / "share"
    pool_dir.mkdir(parents=True)
    share.mkdir()
    (share / "hello.txt").write_text("hello over reverse-sshfs\n")
    pw = pwd.getpwnam(host.user)
    for p in (base, pool_dir, share, share / "hello.txt"):
        os.chown(p, pw.pw_uid, pw.pw_gid)
    pool = f"pylimatest-{os.getpid()}"
    lv = Libvirt(host, pool, pool_dir, share)
    lv.virsh("pool-define-as", pool, "dir", "--target", str(pool_dir))
    try:
        lv.virsh("pool-start", pool)
        yield lv
    finally:
        host.limactl("stop", "-f", NAME)
        host.limactl("delete", "-f", NAME)
        host.run("virsh", "-c", "qemu:///session", "pool-destroy", pool)
        host.run("virsh", "-c", "qemu:///session", "pool-undefine", pool)
        shutil.rmtree(base, ignore_errors=True)


def _set(image: dict, uri: str, share: Path) -> str:
    return (f".images = [{json.dumps(image)}] | .vmType = \"libvirt\" | "
            f".vmOpts.libvirt = {json.dumps({'uri': uri})} | "
            f".mounts = {json.dumps([{'location': str(share)}])} | "
            ".containerd = {\"system\": false, \"user\": false}")


def test_bad_uri_pool_and_network_are_one_line_and_create_nothing(
        libvirt: Libvirt, shared_image: dict) -> None:
    """Before any boot: what cannot work is refused at start, with one line that names
    the URI and the cause, and leaves nothing on the libvirt host."""
    host = libvirt.host
    dead = f"qemu+ssh://{host.user}@127.0.0.1:{_free_port()}/session"
    r = host.limactl("create", f"--name={NAME}", "--tty=false",
                     "--set", _set(shared_image, "qemu:///session", libvirt.share),
                     "template:debian-12")
    assert r.returncode == 0, r.stderr
    cases = [
        (f".vmOpts.libvirt.uri = \"{dead}\"", f"cannot connect to libvirt at `{dead}`"),
        (f".vmOpts.libvirt.uri = \"qemu:///session\" | "
         f".vmOpts.libvirt.pool = \"nosuchpool{os.getpid()}\"",
         f"libvirt at `qemu:///session`: storage pool `nosuchpool{os.getpid()}` is not there"),
        (f".vmOpts.libvirt.pool = \"{libvirt.pool}\" | .vmOpts.libvirt.network = "
         f"\"nosuchnet{os.getpid()}\"",
         f"libvirt at `qemu:///session`: network `nosuchnet{os.getpid()}` is not there"),
    ]
    for expr, message in cases:
        r = host.limactl("edit", "--tty=false", "--set", expr, NAME)
        assert r.returncode == 0, r.stderr
        r = host.limactl("start", "--tty=false", NAME, timeout=120)
        fatal = [ln for ln in r.stderr.splitlines() if "level=fatal" in ln]
        assert r.returncode == 1 and len(fatal) == 1 and message in fatal[0], r.stderr
        assert "Traceback" not in r.stderr
    assert libvirt.volumes() == []  # nothing was uploaded
    assert not [d for d in libvirt.domains() if d.endswith(f"-{NAME}")]
    r = host.limactl("edit", "--tty=false", "--set",
                     f".vmOpts.libvirt.network = null | .vmOpts.libvirt.pool = \"{libvirt.pool}\"",
                     NAME)
    assert r.returncode == 0, r.stderr


def test_local_start_uname_forward_and_stop(libvirt: Libvirt) -> None:
    """Boot 1 (local host): READY, `lima uname`, a guest port reached from the host's
    127.0.0.1 (QEMU's hostfwd, through libvirt), status from the host agent and
    libvirt, a snapshot of the running domain applied, `limactl stop` (ACPI shutdown
    through libvirt) leaving no domain, and snapshots of the stopped instance."""
    host = libvirt.host
    r = host.limactl("start", "--tty=false", NAME, timeout=900)
    assert r.returncode == 0 and "READY" in r.stderr + r.stdout, r.stderr
    assert "domain type `qemu`" in r.stderr or "domain type `kvm`" in r.stderr
    r = host.lima("uname", "-s", env={"LIMA_INSTANCE": NAME})
    assert r.returncode == 0 and r.stdout == "Linux\n", r.stderr
    inst = libvirt.inst_json()
    assert (inst["status"], inst["vmType"]) == ("Running", "libvirt")
    assert not (Path(inst["dir"]) / "disk").exists()  # the disk is the pool's volume
    domains = [d for d in libvirt.domains() if d.endswith(f"-{NAME}")]
    assert len(domains) == 1 and domains[0].startswith("pylima-")
    xml = libvirt.virsh("dumpxml", domains[0])
    assert "<pylima:name>lv</pylima:name>" in xml
    vols = libvirt.volumes()
    assert f"{domains[0]}-disk.qcow2" in vols and f"{domains[0]}-cidata.iso" in vols
    port = _check_forward(host)
    # a snapshot of the running domain (QEMU's savevm through libvirt): a file changed
    # after it is back as it was, the shell and the forwarded port still work
    shell = {"env": {"LIMA_INSTANCE": NAME}}
    assert host.lima("sh", "-c", "echo before > ~/mark", **shell).returncode == 0
    _snapshot(host, "create", "run1")
    assert host.lima("sh", "-c", "echo after > ~/mark", **shell).returncode == 0
    _snapshot(host, "apply", "run1")
    r = host.lima("sh", "-c", "cat ~/mark", **shell)
    assert r.returncode == 0 and r.stdout == "before\n", r.stderr
    assert _fetch(port) == b"lima-lv\n"
    r = host.limactl("stop", NAME, timeout=300)
    assert r.returncode == 0, r.stderr
    assert libvirt.inst_json()["status"] == "Stopped"
    assert not [d for d in libvirt.domains() if d.endswith(f"-{NAME}")]
    # stopped: qemu-img on the volume, which holds the running snapshot too
    _snapshot(host, "create", "off1")
    assert _snapshot(host, "list", "", "--quiet") == "run1\noff1\n"
    _snapshot(host, "delete", "off1")
    _snapshot(host, "delete", "run1")
    assert _snapshot(host, "list", "", "--quiet") == ""


def _snapshot(host: Host, action: str, tag: str, *extra: str) -> str:
    args = ["snapshot", action, NAME, *(["--tag", tag] if tag else []), *extra]
    r = host.limactl(*args, timeout=600)
    assert r.returncode == 0, r.stderr
    return r.stdout


def _fetch(port: int) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/hostname", timeout=5) as f:
        return bytes(f.read())


def _check_forward(host: Host) -> int:
    """A guest web server's port, reached on the host's 127.0.0.1; the port."""
    port = _free_port()
    r = host.lima("sh", "-c", f"cd /etc && nohup python3 -m http.server {port} "
                  ">/dev/null 2>&1 </dev/null & echo started", env={"LIMA_INSTANCE": NAME})
    assert r.returncode == 0, r.stderr
    assert eventually(lambda: _fetch(port), timeout=90) == b"lima-lv\n"
    return port


@dataclass
class Sshd:
    port: int
    proc: subprocess.Popen[bytes]
    key: Path


@pytest.fixture(scope="module")
def sshd(libvirt: Libvirt) -> Iterator[Sshd]:
    """A dedicated sshd on 127.0.0.1 for the `qemu+ssh://` host: its own host key and
    authorized_keys; the test user trusts its host key for this port only."""
    host = libvirt.host
    d = libvirt.pool_dir.parent / "sshd"  # the test user must read its client key
    d.mkdir()
    for name in ("hostkey", "client"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)],
                       check=True)
    pw = pwd.getpwnam(host.user)
    os.chown(d / "client", pw.pw_uid, pw.pw_gid)
    shutil.copy(d / "client.pub", d / "authorized_keys")
    os.chmod(d / "authorized_keys", 0o644)
    port = _free_port()
    root = os.getuid() == 0
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'hostkey'}\n"
        f"AuthorizedKeysFile {d / 'authorized_keys'}\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        # PAM lets a locked account (useradd's default) log in with a key
        f"UsePAM {'yes' if root else 'no'}\nStrictModes no\nAllowUsers {host.user}\n"
        f"PidFile {d / 'sshd.pid'}\nAllowTcpForwarding yes\n")
    if root:
        Path("/run/sshd").mkdir(exist_ok=True)
    proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(d / "sshd_config")],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=open(d / "sshd.log", "wb"))  # noqa: SIM115
    line = f"[127.0.0.1]:{port} " + " ".join(
        (d / "hostkey.pub").read_text().split()[:2]) + "\n"
    host.run("sh", "-c", f"mkdir -p -m 700 ~/.ssh && printf '%s' '{line}' >> ~/.ssh/known_hosts")
    try:
        assert eventually(lambda: host.run("ssh", "-o", "BatchMode=yes", "-p", str(port), "-i",
                                           str(d / "client"), f"{host.user}@127.0.0.1",
                                           "true").returncode == 0, timeout=20), \
            (d / "sshd.log").read_text()
        libvirt.remote_uri = (f"qemu+ssh://{host.user}@127.0.0.1:{port}/session"
                              f"?keyfile={d / 'client'}")
        yield Sshd(port, proc, d / "client")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        host.run("sh", "-c", f"grep -vF '[127.0.0.1]:{port} ' ~/.ssh/known_hosts "
                 "> ~/.ssh/known_hosts.tmp; mv ~/.ssh/known_hosts.tmp ~/.ssh/known_hosts")


def test_remote_start_forward_mount_and_owner_death(libvirt: Libvirt, sshd: Sshd) -> None:
    """Boot 2 (the same instance, its URI now qemu+ssh:// through the dedicated sshd):
    the remote path is only exercised by a boot over it. The image volume is reused
    (not uploaded again); a guest port is fetched from this host's 127.0.0.1 (over
    the SSH master); a host file is read through a reverse-sshfs mount. Then the host
    agent is killed with SIGKILL: libvirt destroys the domain with its connection;
    the stopped instance's disk is snapshotted on the remote host; and `delete` leaves
    none of the instance's volumes."""
    host = libvirt.host
    r = host.limactl("edit", "--tty=false", "--set",
                     f".vmOpts.libvirt.uri = \"{libvirt.remote_uri}\"", NAME)
    assert r.returncode == 0, r.stderr
    r = host.limactl("start", "--tty=false", NAME, timeout=900)
    out = r.stderr + r.stdout
    assert r.returncode == 0 and "READY" in out, out
    assert "already on the libvirt host" in out and "Uploading `" not in out
    assert "SSH tunnel to" in out
    _check_forward(host)
    r = host.lima("cat", str(libvirt.share / "hello.txt"), env={"LIMA_INSTANCE": NAME})
    assert r.returncode == 0 and r.stdout == "hello over reverse-sshfs\n", r.stderr
    r = host.limactl("shell", NAME, "sh", "-c", "mount | grep -c fuse.sshfs")
    assert r.returncode == 0 and int(r.stdout) >= 1
    agent = int(libvirt.inst_json()["hostAgentPID"])
    if os.getuid() == 0:
        os.kill(agent, signal.SIGKILL)
    else:
        host.run("kill", "-9", str(agent))
    assert eventually(lambda: not [d for d in libvirt.domains() if d.endswith(f"-{NAME}")],
                      timeout=60)
    assert eventually(lambda: libvirt.inst_json()["status"] == "Stopped", timeout=30)
    # a stopped instance on the remote host: qemu-img runs there, over SSH
    _snapshot(host, "create", "remote1")
    assert _snapshot(host, "list", "", "--quiet") == "remote1\n"
    r = host.limactl("delete", NAME, timeout=120)
    assert r.returncode == 0, r.stderr
    vols = libvirt.volumes()
    assert not [v for v in vols if f"-{NAME}-" in v], vols
    assert [v for v in vols if "-image-" in v]  # the shared base stays
