"""Host directories shared with a real guest, one guest per mount type (9p,
reverse-sshfs, virtiofs), each started once and used by every test of its type.

The reverse-sshfs guest boots the local image's cloud-init variant (the boot path of
cloud images); the others boot pylima's default image, through pylima-init. Each
also runs a provisioning script, and the cloud-init guest forwards a port and joins
the user-v2 network (its address from cloud-init's network rendering).

Each guest gets a read-only mount (`ro`) and a writable one (`rw`) of two
directories that sit next to a file the guest must never read (`secret.txt`); the
mounts' symbolic links point at it by absolute and relative paths. 9p and
reverse-sshfs run as an unprivileged host user (the guest user has its uid);
virtiofs needs QEMU's virtiofsd, which needs root, so that guest shows the root case.
"""

from __future__ import annotations

import json
import os
import pwd
import shlex
import shutil
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.vm.conftest import REPO, Host, eventually

SECRET = "TOPSECRET"
# A location that can never be created: that mount fails, the rest still work.
IMPOSSIBLE = "/proc/pylima-no-such-dir"


@dataclass
class Guest:
    host: Host
    name: str
    mount_type: str
    base: Path
    start_output: str
    boot_path: str  # "cloud-init" or "pylima-init"

    @property
    def ro(self) -> Path:
        return self.base / "ro"

    @property
    def rw(self) -> Path:
        return self.base / "rw"

    def sh(self, script: str, **kw: object) -> tuple[int, str, str]:
        r = self.host.limactl("shell", "--workdir=/", self.name, "sh", "-c", script,
                              **kw)  # type: ignore[arg-type]
        return r.returncode, r.stdout, r.stderr

    def host_sh(self, script: str) -> str:
        r = self.host.run("sh", "-c", script)
        assert r.returncode == 0, r.stderr
        return r.stdout


def _make_tree(base: Path, owner: str) -> None:
    shutil.rmtree(base, ignore_errors=True)
    (base / "ro" / "sub").mkdir(parents=True)
    (base / "rw").mkdir()
    (base / "secret.txt").write_text(SECRET + "\n")
    (base / "ro" / "hello.txt").write_text("hello from the host\n")
    for d in ("ro", "rw"):
        (base / d / "abs-link").symlink_to(base / "secret.txt")
        (base / d / "rel-link").symlink_to("../secret.txt")
        (base / d / "up-dir").symlink_to("..")
    (base / "ro" / "inner-link").symlink_to("hello.txt")
    pw = pwd.getpwnam(owner)
    for p in [base, *base.rglob("*")]:
        os.lchown(p, pw.pw_uid, pw.pw_gid)


PROVISION = [{"mode": "system",
              "script": "#!/bin/sh\necho \"provisioned as $(id -un)\" >/run/pylima-provisioned\n"}]


def _mounts_set(image: dict, mount_type: str, mounts: list[dict]) -> str:
    return (f".images = [{json.dumps(image)}] | .mountType = {json.dumps(mount_type)} | "
            f".mounts = {json.dumps(mounts)} | .mountTypesUnsupported = [] | "
            f".mountInotify = true | .provision = {json.dumps(PROVISION)}")


@pytest.fixture(scope="module", params=["9p", "reverse-sshfs", "virtiofs"])
def guest(request: pytest.FixtureRequest, unprivileged_host: Host,
          shared_image: dict, built_image: dict, cloud_init_image: dict,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guest]:
    mount_type: str = request.param
    name = "mnt-" + mount_type.replace("reverse-", "r")
    boot_path = "cloud-init" if mount_type == "reverse-sshfs" else "pylima-init"
    if mount_type == "virtiofs":
        from pylima.drivers.qemu.virtiofs import virtiofsd_problem

        if os.getuid() != 0:
            pytest.skip("QEMU's virtiofsd needs root (CI runs the tests as root)")
        problem = virtiofsd_problem()
        if problem:
            pytest.skip(f"{problem[0]} ({problem[1]})")
        host = Host("root", Path("/root"),
                    {"LIMA_HOME": str(tmp_path_factory.mktemp("vm-root") / "lima")})
        image = built_image
        base = Path("/var/tmp/pylima-mounttest-virtiofs")
    else:
        host = unprivileged_host
        image = cloud_init_image if boot_path == "cloud-init" else shared_image
        base = host.home / f"mounttest-{mount_type}"
    _make_tree(base, host.user)
    mounts: list[dict] = [{"location": str(base / "ro")},
                          {"location": str(base / "rw"), "writable": True}]
    if mount_type == "reverse-sshfs":
        # the server resolves links itself here: they must still stay inside (not on
        # the writable mount: with follow_symlinks, sshfs cannot create links)
        mounts[0]["sshfs"] = {"followSymlinks": True}
    if mount_type == "9p":
        mounts.append({"location": IMPOSSIBLE, "writable": True})
    if mount_type == "virtiofs":
        # missing: pylima creates it, given to the guest user since pylima is root
        shutil.rmtree(base / "rw")
    # The cloud-init guest is on the user-v2 network too: cloud-init's reading of the
    # seed's network-config (a second NIC found by its MAC, with a static address).
    network = ["--network=lima:user-v2"] if boot_path == "cloud-init" else []
    r = host.limactl("start", f"--name={name}", "--tty=false", "--cpus=2", "--memory=2",
                     *network, "--set", _mounts_set(image, mount_type, mounts),
                     "template:debian-12", timeout=1500)
    out = r.stdout + r.stderr
    try:
        if mount_type == "9p":
            assert r.returncode != 0 and "DEGRADED" in out, out
        else:
            assert r.returncode == 0 and "READY" in out, out
        if mount_type == "virtiofs":
            for link, target in (("abs-link", str(base / "secret.txt")),
                                 ("rel-link", "../secret.txt"), ("up-dir", "..")):
                (base / "rw" / link).symlink_to(target)
        yield Guest(host, name, mount_type, base, out, boot_path)
    finally:  # a failed set-up must not leave the guest running either
        host.limactl("stop", "-f", name)
        host.limactl("delete", "-f", name)
        shutil.rmtree(base, ignore_errors=True)


def test_host_file_visible_at_same_path(guest: Guest) -> None:
    rc, out, err = guest.sh(f"cat {guest.ro}/hello.txt")
    assert rc == 0 and out == "hello from the host\n", err
    rc, out, _ = guest.sh(f"cat {guest.ro}/inner-link")  # a link inside the mount works
    assert out == "hello from the host\n"
    rc, out, _ = guest.sh(f"ls {guest.ro}")
    assert out.split() == ["abs-link", "hello.txt", "inner-link", "rel-link", "sub", "up-dir"]


def test_read_only_mount_refuses_writes(guest: Guest) -> None:
    for cmd in (f"touch {guest.ro}/new", f"echo x >> {guest.ro}/hello.txt",
                f"mkdir {guest.ro}/d", f"rm {guest.ro}/hello.txt",
                f"sudo -n touch {guest.ro}/new-by-root"):
        rc, _, _ = guest.sh(cmd)
        assert rc != 0, cmd
    assert sorted(os.listdir(guest.ro)) == ["abs-link", "hello.txt", "inner-link",
                                            "rel-link", "sub", "up-dir"]
    assert (guest.ro / "hello.txt").read_text() == "hello from the host\n"


def test_writable_round_trip(guest: Guest) -> None:
    rc, _, err = guest.sh(f"echo from-guest > {guest.rw}/from-guest.txt && "
                          f"mkdir {guest.rw}/gdir && ln -s from-guest.txt {guest.rw}/glink")
    assert rc == 0, err
    assert (guest.rw / "from-guest.txt").read_text() == "from-guest\n"
    assert os.readlink(guest.rw / "glink") == "from-guest.txt"
    guest.host_sh(f"echo from-host > {shlex.quote(str(guest.rw / 'from-host.txt'))}")
    rc, out, err = guest.sh(f"cat {guest.rw}/from-host.txt")
    assert out == "from-host\n", err
    rc, _, err = guest.sh(f"mv {guest.rw}/from-host.txt {guest.rw}/moved.txt && "
                          f"rm {guest.rw}/from-guest.txt {guest.rw}/glink && rmdir {guest.rw}/gdir")
    assert rc == 0, err
    assert sorted(os.listdir(guest.rw)) == ["abs-link", "moved.txt", "rel-link", "up-dir"]


# An inotify watcher in the guest (python3 and libc: the image has no inotify-tools):
# it prints `watching`, then the first event's name, or `timeout`.
GUEST_WATCHER = r"""
import ctypes, os, select, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.inotify_init1(0)
IN_MODIFY, IN_ATTRIB, IN_CLOSE_WRITE, IN_CREATE = 0x2, 0x4, 0x8, 0x100
assert libc.inotify_add_watch(fd, sys.argv[1].encode(),
                              IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_CREATE) >= 0
print("watching", flush=True)
if not select.select([fd], [], [], 90)[0]:
    print("timeout", flush=True)
    sys.exit(1)
buf = os.read(fd, 4096)
_, mask, _, size = struct.unpack_from("iIII", buf)
print("event", buf[16:16 + size].rstrip(b"\0").decode(), flush=True)
"""


def test_host_change_wakes_a_guest_watcher(guest: Guest) -> None:
    """mountInotify: a file written on the host wakes an inotify watcher on the
    guest's side of the writable mount (none of the mount types carries host events
    by itself)."""
    target = guest.rw / "watched.txt"
    guest.host_sh(f"echo before > {shlex.quote(str(target))}")
    log = "/tmp/pylima-inotify.log"
    rc, _, err = guest.sh(f"rm -f {log}; printf '%s' {shlex.quote(GUEST_WATCHER)} "
                          f">/tmp/watch.py; (python3 /tmp/watch.py {guest.rw} >{log} 2>&1 &)")
    assert rc == 0, err
    assert eventually(lambda: "watching" in guest.sh(f"cat {log}")[1])
    time_before = target.stat().st_mtime
    guest.host_sh(f"sleep 1; echo after > {shlex.quote(str(target))}")
    assert target.stat().st_mtime != time_before
    assert eventually(lambda: "event" in guest.sh(f"cat {log}")[1], timeout=60), \
        guest.sh(f"cat {log}")[1]
    assert guest.sh(f"cat {log}")[1].splitlines()[-1] == "event watched.txt"
    inst_dir = guest.host.limactl("list", "--format", "{{.Dir}}", guest.name).stdout.strip()
    assert (f"enable inotify for writable mount: {guest.rw}"
            in Path(inst_dir, "ha.stderr.log").read_text())


def test_ownership(guest: Guest) -> None:
    host_uid = pwd.getpwnam(guest.host.user).pw_uid
    guest_uid = int(guest.sh("id -u")[1])
    rc, out, _ = guest.sh(f"stat -c %u {guest.ro}/hello.txt")
    shown = int(out)
    rc, _, err = guest.sh(f"echo mine > {guest.rw}/owned.txt")
    assert rc == 0, err
    on_host = (guest.rw / "owned.txt").stat().st_uid
    if host_uid != 0:
        # Lima's normal case: the guest user has the host user's uid, both ways.
        assert guest_uid == host_uid
        assert shown == host_uid and on_host == host_uid
    elif guest.mount_type == "reverse-sshfs":
        # root's files are shown as the guest user's; on the host they stay root's
        assert shown == guest_uid and on_host == 0
    else:
        # 9p/virtiofs as root: host files keep their owner (root here); what the guest
        # user writes belongs on the host to the guest's uid. The writable directory
        # pylima created is the guest user's.
        assert shown == 0 and on_host == guest_uid
        assert guest.rw.stat().st_uid == guest_uid
    (guest.rw / "owned.txt").unlink()


@pytest.mark.parametrize("d", ["ro", "rw"])
def test_no_escape_through_links_or_dotdot(guest: Guest, d: str) -> None:
    mnt = guest.base / d
    for path in (f"{mnt}/abs-link", f"{mnt}/rel-link", f"{mnt}/../secret.txt",
                 f"{mnt}/up-dir/secret.txt", f"{mnt}/up-dir/../secret.txt",
                 f"{mnt}/../../{guest.base.name}/secret.txt"):
        rc, out, err = guest.sh(f"cat {shlex.quote(path)}; sudo -n cat {shlex.quote(path)}")
        assert SECRET not in out + err, path
    rc, out, _ = guest.sh(f"ls -a {mnt}/.. {mnt}/up-dir/ 2>&1")
    assert "secret.txt" not in out
    if d == "rw":
        # a link made in the guest and followed by whoever resolves it
        rc, out, err = guest.sh(f"ln -s {guest.base}/secret.txt {mnt}/guest-link && "
                                f"cat {mnt}/guest-link; ln -s ../secret.txt {mnt}/guest-rel && "
                                f"cat {mnt}/guest-rel; rm -f {mnt}/guest-link {mnt}/guest-rel")
        assert SECRET not in out + err


def test_shell_lands_in_host_cwd_under_a_mount(guest: Guest) -> None:
    r = guest.host.limactl("shell", guest.name, "pwd", cwd=str(guest.ro / "sub"))
    assert r.stdout.strip() == str(guest.ro / "sub"), r.stderr


def test_boot_path_and_provisioning(guest: Guest) -> None:
    """pylima's image boots without cloud-init; its cloud-init variant through it. Both
    run the provisioning script (as root)."""
    rc, out, err = guest.sh("cat /run/pylima-provisioned")
    assert out == "provisioned as root\n", err
    rc, out, err = guest.sh(
        "if [ -e /run/cloud-init/result.json ]; then echo cloud-init; "
        "elif [ -e /run/pylima-init/final.done ]; then echo pylima-init; fi; "
        "command -v cloud-init >/dev/null && echo has-cloud-init || true")
    if guest.boot_path == "cloud-init":
        assert out.split() == ["cloud-init", "has-cloud-init"], err
    else:
        assert out.split() == ["pylima-init"], err


def test_cloud_init_guest_takes_its_user_v2_address(guest: Guest) -> None:
    """cloud-init renders the seed's network-config as pylima-init does: the user-v2
    NIC, in place of the user-mode one (as in Lima) and named eth0 by its MAC, has
    the address of its lease and the default route through the network's host."""
    if guest.boot_path != "cloud-init":
        pytest.skip("pylima-init guests on user-v2: tests/vm/test_networks.py")
    home = Path(guest.host.env.get("LIMA_HOME") or guest.host.home / ".lima")
    leases = json.loads((home / "_networks" / "user-v2" / "leases.json").read_text())
    addr = next(ip for ip, v in leases.items() if v["instance"] == guest.name)
    rc, out, err = guest.sh("ip -4 -br addr show eth0; ip route show default; ip -4 -br addr")
    assert rc == 0, err
    assert f"{addr}/24" in out.splitlines()[0], out
    assert out.splitlines()[1].startswith("default via 192.168.104.2 dev eth0"), out
    assert "192.168.5." not in out, out  # no user-mode NIC


def test_cloud_init_guest_forwards_a_port(guest: Guest) -> None:
    if guest.boot_path != "cloud-init":
        pytest.skip("port forwarding on pylima-init guests: tests/vm/test_boot.py")
    port = 18765
    rc, _, err = guest.sh(
        "mkdir -p /tmp/www && echo from-cloud-init-guest >/tmp/www/index.html && "
        f"(setsid nohup python3 -m http.server {port} --bind 127.0.0.1 --directory /tmp/www "
        ">/dev/null 2>&1 &)")
    assert rc == 0, err

    def page() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:
            return resp.read().decode()

    assert eventually(page) == "from-cloud-init-guest\n"
    guest.sh(f"pkill -f 'http.server {port}'")


def test_failed_mount_is_reported_by_name(guest: Guest) -> None:
    if guest.mount_type != "9p":
        assert "DEGRADED" not in guest.start_output
        return
    assert f"mount `{IMPOSSIBLE}`" in guest.start_output
    info = json.loads(guest.host.limactl("list", "--json", guest.name).stdout)
    assert info["status"] == "Running"


ATTACK = r"""
import ctypes, json, os, signal, sys
sys.path.insert(0, "/tmp")
from sftpclient import Client, escape_attempts
mp, secret = sys.argv[1], sys.argv[2]
pid = None
for d in os.listdir("/proc"):
    if not d.isdigit():
        continue
    try:
        argv = open(f"/proc/{d}/cmdline", "rb").read().split(b"\0")
    except OSError:
        continue
    if argv[0].endswith(b"sshfs") and mp.encode() in argv:
        pid = int(d)
os.kill(pid, signal.SIGSTOP)
libc = ctypes.CDLL(None, use_errno=True)
pidfd = libc.syscall(434, pid, 0)          # pidfd_open
rfd = libc.syscall(438, pidfd, 0, 0)       # pidfd_getfd: sshfs's end of the channel
wfd = libc.syscall(438, pidfd, 1, 0)
c = Client(rfd, wfd, first_id=1 << 30)
leaks = escape_attempts(c, secret, "secret.txt")
c.write_file("/raw-write.txt", b"raw")
print(json.dumps({"leaks": leaks, "listing": sorted(c.listdir("/"))}))
os.kill(pid, signal.SIGKILL)
"""


def test_root_guest_speaking_raw_sftp_stays_inside(guest: Guest) -> None:
    """The guest's root takes over sshfs's SFTP channel and asks the host directly."""
    if guest.mount_type != "reverse-sshfs":
        pytest.skip("only reverse-sshfs has an SFTP channel")
    client = (REPO / "tests" / "sftpclient.py").read_text()
    rc, _, err = guest.sh("cat > /tmp/sftpclient.py", input=client)
    assert rc == 0, err
    rc, _, err = guest.sh("cat > /tmp/attack.py", input=ATTACK)
    assert rc == 0, err
    rc, out, err = guest.sh(f"sudo -n python3 /tmp/attack.py {guest.rw} "
                            f"{guest.base / 'secret.txt'}", timeout=120)
    assert rc == 0, err
    result = json.loads(out)
    assert result["leaks"] == []
    assert "raw-write.txt" in result["listing"]  # the channel did reach the host
    assert (guest.rw / "raw-write.txt").read_text() == "raw"
    assert (guest.base / "secret.txt").read_text() == SECRET + "\n"
    assert not (guest.base / "written-outside").exists()


def test_snapshot_of_the_running_guest(guest: Guest) -> None:
    """9p and virtiofs: QEMU cannot save a guest that has them mounted; the refusal is
    one line in QEMU's words, naming the export, and no snapshot is left behind.
    reverse-sshfs: the snapshot is taken and applied, and the mounts work again."""
    h, name = guest.host, guest.name
    r = h.limactl("snapshot", "create", name, "--tag", "s1", timeout=1800)
    if guest.mount_type in ("9p", "virtiofs"):
        assert r.returncode == 1, r.stdout + r.stderr
        fatal = [line for line in r.stderr.splitlines() if "level=fatal" in line]
        assert len(fatal) == 1, r.stderr
        assert "failed to create the snapshot: " in fatal[0]
        if guest.mount_type == "9p":
            assert "VirtFS export path" in fatal[0] and "mount_tag" in fatal[0], fatal[0]
        else:  # "State blocked by non-migratable device '0000:00:06.0/vhost-user-fs'"
            assert "non-migratable device" in fatal[0] and "vhost-user-fs" in fatal[0]
        assert h.limactl("snapshot", "list", name, "-q").stdout == ""
        rc, out, _ = guest.sh("echo alive")
        assert rc == 0 and out == "alive\n"
        return
    assert r.returncode == 0, r.stderr
    r = h.limactl("snapshot", "apply", name, "--tag", "s1", timeout=1800)
    assert r.returncode == 0, r.stderr
    (guest.rw / "after-apply.txt").write_text("fresh\n")
    rc, out, err = guest.sh(f"cat {guest.ro}/hello.txt {guest.rw}/after-apply.txt && "
                            f"echo w > {guest.rw}/from-guest.txt", timeout=120)
    assert rc == 0, err
    assert out.endswith("fresh\n")
    assert (guest.rw / "from-guest.txt").read_text() == "w\n"
    assert h.limactl("snapshot", "delete", name, "--tag", "s1", timeout=600).returncode == 0
