"""pylima-init, run as the guest runs it (`pylima-init STAGE SEED`) on a seed pylima
rendered, with `--root` pointing every file it writes at a scratch directory."""

from __future__ import annotations

import marshal
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.unit.test_cidata import HOST_PRIV, HOST_PUB, IID, PUBKEY, filled, render

from pylima.cidata import file_mode
from pylima.cidata.render import GUEST_INIT_DOCS, guest_init_docs
from pylima.guestagent import guest_init_bytes
from pylima.guestagent.init import (
    SEED_DOCS,
    render_networkd,
    spawn,
    valid_hostname,
    valid_username,
)

INIT = Path(__file__).resolve().parents[2] / "src" / "pylima" / "guestagent" / "init.py"


def write_seed(tmp: Path, files: dict[str, bytes]) -> Path:
    seed = tmp / "seed"
    for name, data in files.items():
        p = seed / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        p.chmod(file_mode(name))  # as the ISO's Rock Ridge modes give them
    return seed


def docs_of(files: dict[str, bytes]) -> dict[str, Any]:
    """The seed's documents, as pylima-init reads them."""
    docs: dict[str, Any] = marshal.loads(files[GUEST_INIT_DOCS])
    return docs


def with_docs(files: dict[str, bytes], docs: dict[str, Any]) -> dict[str, bytes]:
    """The seed with its documents replaced as pylima writes them: YAML for
    cloud-init, and the same values in pylima-init's marshal'd copy."""
    return {**files,
            "meta-data": yaml.safe_dump(docs["meta-data"]).encode(),
            "user-data": ("#cloud-config\n" + yaml.safe_dump(docs["user-data"])).encode(),
            "network-config": yaml.safe_dump(docs["network-config"]).encode(),
            GUEST_INIT_DOCS: guest_init_docs(docs)}


def fake_root(tmp: Path) -> Path:
    root = tmp / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hosts").write_text("127.0.0.1\tlocalhost\n127.0.1.1\told-name\n")
    (root / "etc" / "ca-certificates.conf").write_text("# comment\nmozilla/A.crt\n")
    zone = root / "usr" / "share" / "zoneinfo" / "Europe" / "Paris"
    zone.parent.mkdir(parents=True)
    zone.write_bytes(b"TZif2")
    return root


def run_init(stage: str, seed: Path, root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(INIT), stage, str(seed), "--root", str(root)],
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def seed_files() -> dict[str, bytes]:
    return render(guest_init=guest_init_bytes())


def test_shipped_on_the_seed_as_an_executable(seed_files: dict[str, bytes]) -> None:
    assert seed_files["pylima-init"] == INIT.read_bytes()
    assert file_mode("pylima-init") == 0o755
    assert "pylima-init" not in render()  # only when the caller ships it


def test_early_stage_writes_what_cloud_init_would(tmp_path: Path,
                                                  seed_files: dict[str, bytes]) -> None:
    seed, root = write_seed(tmp_path, seed_files), fake_root(tmp_path)
    r = run_init("early", seed, root)
    assert r.returncode == 0, r.stdout + r.stderr
    assert not (root / "run" / "lima-boot-errors").exists()
    assert (root / "run" / "pylima-init" / "early.done").read_text() == IID + "\n"
    # host name, and the name resolving locally (the old 127.0.1.1 line replaced)
    assert (root / "etc" / "hostname").read_text() == "lima-dev\n"
    assert (root / "etc" / "hosts").read_text() == "127.0.0.1\tlocalhost\n127.0.1.1\tlima-dev\n"
    # the user's key, sudo rule and the pinned host key
    home = root / "home" / "alice.guest"
    keys = home / ".ssh" / "authorized_keys"
    assert keys.read_text() == PUBKEY + "\n"
    assert stat.S_IMODE(keys.stat().st_mode) == 0o600
    assert stat.S_IMODE((home / ".ssh").stat().st_mode) == 0o700
    sudoers = root / "etc" / "sudoers.d" / "90-pylima-users"
    assert "alice ALL=(ALL) NOPASSWD:ALL" in sudoers.read_text().splitlines()
    assert stat.S_IMODE(sudoers.stat().st_mode) == 0o440
    priv = root / "etc" / "ssh" / "ssh_host_ed25519_key"
    assert priv.read_text() == HOST_PRIV
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    assert (root / "etc" / "ssh" / "ssh_host_ed25519_key.pub").read_text() == HOST_PUB + "\n"
    # time zone, CA certificate (caCerts.certs), the default CAs kept
    assert os.readlink(root / "etc" / "localtime") == "/usr/share/zoneinfo/Europe/Paris"
    assert (root / "etc" / "timezone").read_text() == "Europe/Paris\n"
    ca = root / "usr" / "local" / "share" / "ca-certificates" / "pylima-ca-0.crt"
    assert ca.read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert "mozilla/A.crt" in (root / "etc" / "ca-certificates.conf").read_text().splitlines()
    # the per-boot launcher of boot.sh (write_files), run by the final stage
    launcher = root / "var" / "lib" / "cloud" / "scripts" / "per-boot" / "00-lima.boot.sh"
    assert stat.S_IMODE(launcher.stat().st_mode) == 0o755
    assert "boot.sh" in launcher.read_text()
    # `boot` mode provisioning, as one bootcmd script
    bootcmd = (root / "run" / "pylima-init" / "bootcmd").read_text()
    assert bootcmd.startswith("#!/bin/sh\n") and "echo boot-one $PARAM_GREETING" in bootcmd
    # the network: DHCP on either NIC name, with the slirp DNS
    net = root / "run" / "systemd" / "network"
    assert sorted(p.name for p in net.iterdir()) == ["10-pylima-slirp-en.network",
                                                      "10-pylima-slirp-eth.network"]
    en = (net / "10-pylima-slirp-en.network").read_text()
    assert "Name=en*" in en and "DHCP=ipv4" in en and "DNS=192.168.5.3" in en
    assert "packages are updated in the final stage" in r.stdout  # upgradePackages
    # boot/07 ran before sshd: /etc/environment is final and SSH sessions may begin
    env = (root / "etc" / "environment").read_text()
    assert env.startswith("#LIMA-START\n") and env.endswith("#LIMA-END\n")
    assert (root / "run" / "lima-ssh-ready").read_text() == IID + "\n"
    # boot/20 ran too: logind, starting after this stage, starts the user's manager
    assert (root / "var" / "lib" / "systemd" / "linger" / "alice").exists()
    # and boot.sh, later in this boot, knows not to run them again
    assert (root / "run" / "pylima-init" / "early-boot-scripts").read_text() == (
        f"{IID} boot/00-guest-setup.sh\n{IID} boot/07-etc-environment.sh\n"
        f"{IID} boot/20-rootless-base.sh\n")


def test_a_second_boot_keeps_keys_the_user_added(tmp_path: Path,
                                                 seed_files: dict[str, bytes]) -> None:
    seed, root = write_seed(tmp_path, seed_files), fake_root(tmp_path)
    assert run_init("early", seed, root).returncode == 0
    keys = root / "home" / "alice.guest" / ".ssh" / "authorized_keys"
    keys.write_text(keys.read_text() + "ssh-ed25519 AAAAmine user@elsewhere\n")
    assert run_init("early", seed, root).returncode == 0
    assert keys.read_text() == PUBKEY + "\nssh-ed25519 AAAAmine user@elsewhere\n"


def test_remove_default_cas(tmp_path: Path) -> None:
    files = render(filled({"caCerts": {"removeDefaults": True}}), guest_init=guest_init_bytes())
    seed, root = write_seed(tmp_path, files), fake_root(tmp_path)
    assert run_init("early", seed, root).returncode == 0
    conf = (root / "etc" / "ca-certificates.conf").read_text().splitlines()
    assert conf == ["# comment", "!mozilla/A.crt"]


def test_unknown_fields_are_named_and_the_rest_is_applied(
        tmp_path: Path, seed_files: dict[str, bytes]) -> None:
    docs = docs_of(seed_files)
    docs["user-data"]["snap"] = {"commands": ["true"]}
    docs["user-data"]["users"][0]["groups"] = "docker"
    docs["network-config"]["ethernets"]["slirp-en"]["mtu"] = 1400
    files = with_docs(seed_files, docs)
    seed, root = write_seed(tmp_path, files), fake_root(tmp_path)
    r = run_init("early", seed, root)
    assert r.returncode == 1
    errors = (root / "run" / "lima-boot-errors").read_text().splitlines()
    assert [e.split(":")[1].strip() for e in errors] == [
        "unknown field `snap` in user-data", "unknown field `users[0].groups` in user-data",
        "unknown field `ethernets.slirp-en.mtu` in network-config"]
    for field in ("`snap`", "`users[0].groups`", "`ethernets.slirp-en.mtu`"):
        assert field in r.stdout  # on the console: the host's serial.log
    assert (root / "home" / "alice.guest" / ".ssh" / "authorized_keys").exists()
    assert "1 error" not in r.stdout and "3 error(s)" in r.stdout


def test_a_field_that_cannot_be_applied_is_an_error(tmp_path: Path) -> None:
    files = render(filled({"timezone": "Mars/Olympus_Mons"}), guest_init=guest_init_bytes())
    seed, root = write_seed(tmp_path, files), fake_root(tmp_path)
    r = run_init("early", seed, root)
    assert r.returncode == 1
    assert (root / "run" / "lima-boot-errors").read_text() == (
        "pylima-init: timezone: unknown time zone `Mars/Olympus_Mons`\n")
    assert not (root / "etc" / "localtime").exists()


@pytest.mark.parametrize(("data", "error"), [
    (b"\xe3\x01", "cannot read pylima-init.marshal: "),  # cut short
    (b"?", "cannot read pylima-init.marshal: bad marshal data"),
    (marshal.dumps([1, 2], 4), "pylima-init.marshal is not a mapping"),
    (marshal.dumps({"user-data": "users: []"}, 4), "user-data is not a mapping"),
    (None, "the seed has no pylima-init.marshal (it was not written by pylima)"),
])
def test_an_unreadable_document_is_an_error(tmp_path: Path, seed_files: dict[str, bytes],
                                            data: bytes | None, error: str) -> None:
    files = {k: v for k, v in seed_files.items() if k != GUEST_INIT_DOCS}
    if data is not None:
        files[GUEST_INIT_DOCS] = data
    seed, root = write_seed(tmp_path, files), fake_root(tmp_path)
    r = run_init("early", seed, root)
    assert r.returncode == 1
    errors = (root / "run" / "lima-boot-errors").read_text().splitlines()
    assert errors[0].startswith(f"pylima-init: {error}"), errors
    assert "Traceback" not in r.stdout + r.stderr


def test_it_reads_the_documents_pylima_writes_for_it() -> None:
    assert SEED_DOCS == GUEST_INIT_DOCS


def test_final_stage_marks_its_end(tmp_path: Path, seed_files: dict[str, bytes]) -> None:
    seed, root = write_seed(tmp_path, seed_files), fake_root(tmp_path)
    assert run_init("early", seed, root).returncode == 0
    r = run_init("final", seed, root)
    assert r.returncode == 0, r.stdout
    assert "running /var/lib/cloud/scripts/per-boot/00-lima.boot.sh" in r.stdout
    assert (root / "run" / "pylima-init" / "final.done").read_text() == IID + "\n"


def test_early_stage_plans_a_final_stage_without_python(
        tmp_path: Path, seed_files: dict[str, bytes]) -> None:
    """Nothing but the per-boot scripts for the final stage (no grow under --root, no
    packages, nothing deferred): the early stage says so, for the image's launcher."""
    docs = docs_of(seed_files)
    doc = docs["user-data"]
    for k in ("package_update", "package_upgrade", "package_reboot_if_required"):
        doc.pop(k, None)
    files = with_docs(seed_files, docs)
    seed, root = write_seed(tmp_path, files), fake_root(tmp_path)
    assert run_init("early", seed, root).returncode == 0
    plan = root / "run" / "pylima-init" / "final-scripts-only"
    assert plan.read_text() == IID + "\n"


def test_a_growpart_field_it_does_not_know_is_reported_once(
        tmp_path: Path, seed_files: dict[str, bytes]) -> None:
    """The early stage leaves such a `growpart` to the final stage (no plan), which
    names the field: one line in the boot errors over both stages."""
    docs = docs_of(seed_files)
    doc = docs["user-data"]
    doc["growpart"] = {"mode": "auto", "devices": ["/"], "bogus": 1}
    files = with_docs(seed_files, docs)
    seed, root = write_seed(tmp_path, files), fake_root(tmp_path)
    assert run_init("early", seed, root).returncode == 0
    assert not (root / "run" / "pylima-init" / "final-scripts-only").exists()
    assert run_init("final", seed, root).returncode == 1
    errors = (root / "run" / "lima-boot-errors").read_text().splitlines()
    assert [e for e in errors if "growpart.bogus" in e] == [
        "pylima-init: unknown field `growpart.bogus` in user-data: not applied "
        "(pylima-init knows: devices, ignore_growroot_disabled, mode)"], errors


@pytest.mark.parametrize("extra", [
    {"package_upgrade": True},
    {"write_files": [{"path": "/etc/later", "content": "x", "defer": True}]},
])
def test_final_stage_with_work_keeps_python(tmp_path: Path, seed_files: dict[str, bytes],
                                            extra: dict[str, Any]) -> None:
    docs = docs_of(seed_files)
    doc = docs["user-data"]
    for k, v in extra.items():
        doc[k] = [*doc.get(k, []), *v] if isinstance(v, list) else v
    files = with_docs(seed_files, docs)
    seed, root = write_seed(tmp_path, files), fake_root(tmp_path)
    assert run_init("early", seed, root).returncode == 0
    assert not (root / "run" / "pylima-init" / "final-scripts-only").exists()


def test_networkd_rendering() -> None:
    assert render_networkd("e", {"match": {"macaddress": "52:55:55:00:00:01"},
                                 "dhcp4": True, "dhcp6": True,
                                 "nameservers": {"addresses": ["1.1.1.1", "8.8.8.8"],
                                                 "search": ["lan"]}}) == (
        "# Written by pylima-init from the seed's network-config\n"
        "[Match]\nMACAddress=52:55:55:00:00:01\n\n[Network]\nDHCP=yes\n"
        "DNS=1.1.1.1\nDNS=8.8.8.8\nDomains=lan\n")
    assert render_networkd("lima0", {"match": {"macaddress": "52:55:55:00:00:02"},
                                     "set-name": "lima0", "addresses": ["192.168.104.16/24"],
                                     "dhcp4": False}) == (
        "# Written by pylima-init from the seed's network-config\n"
        "[Match]\nMACAddress=52:55:55:00:00:02\n\n[Network]\nDHCP=no\n"
        "Address=192.168.104.16/24\n")
    assert "Name=eth0\n" in render_networkd("eth0", {})
    assert "DHCP=no\n" in render_networkd("eth0", {})


def test_a_primary_user_v2_nic_gets_its_route_and_dns(tmp_path: Path) -> None:
    """The seed of an instance whose first user-v2 network replaces the slirp one: one
    static eth0 with the default route through the network's host (.2) and its DNS;
    a route field pylima-init does not know is named, not skipped."""
    from pylima.store.usernet import UserNic

    nic = UserNic("user-v2", "eth0", "52:55:55:00:00:01", "192.168.104.15", 24, "/sw",
                  primary=True, host="192.168.104.2", dns="192.168.104.3")
    files = render(filled({}), guest_init=guest_init_bytes(), user_nics=[nic])
    seed, root = write_seed(tmp_path / "a", files), fake_root(tmp_path / "a")
    assert run_init("early", seed, root).returncode == 0
    units = sorted((root / "run" / "systemd" / "network").glob("10-pylima-*.network"))
    assert [u.name for u in units] == ["10-pylima-eth0.network"]
    assert units[0].read_text() == (
        "# Written by pylima-init from the seed's network-config\n"
        "[Match]\nMACAddress=52:55:55:00:00:01\n\n[Network]\nDHCP=no\n"
        "Address=192.168.104.15/24\nDNS=192.168.104.3\n\n[Route]\nGateway=192.168.104.2\n")
    # set-name: udev names the NIC eth0 at every `add` event it handles for it
    link = root / "run" / "systemd" / "network" / "10-pylima-eth0.link"
    assert link.read_text() == (
        "# Written by pylima-init from the seed's network-config (set-name)\n"
        "[Match]\nMACAddress=52:55:55:00:00:01\n\n[Link]\nName=eth0\n")
    docs = docs_of(files)
    docs["network-config"]["ethernets"]["eth0"]["routes"][0]["metric"] = 5
    bad = with_docs(files, docs)
    seed, root = write_seed(tmp_path / "b", bad), fake_root(tmp_path / "b")
    r = run_init("early", seed, root)
    assert r.returncode == 1
    assert "unknown field `ethernets.eth0.routes[0].metric` in network-config" in r.stdout


def test_plain_mode_runs_no_boot_script_early(tmp_path: Path) -> None:
    seed = write_seed(tmp_path, render(filled({"plain": True}), guest_init=guest_init_bytes()))
    root = fake_root(tmp_path)
    r = run_init("early", seed, root)
    assert r.returncode == 0, r.stdout + r.stderr
    assert not (root / "etc" / "environment").exists()
    assert not (root / "run" / "lima-ssh-ready").exists()
    assert not (root / "var" / "lib" / "systemd" / "linger").exists()


def test_a_failing_early_boot_script_is_named(tmp_path: Path,
                                              seed_files: dict[str, bytes]) -> None:
    seed = write_seed(tmp_path, {**seed_files,
                                 "boot/07-etc-environment.sh": b"#!/bin/sh\necho no >&2\nexit 4\n"})
    root = fake_root(tmp_path)
    r = run_init("early", seed, root)
    assert r.returncode == 1
    assert (root / "run" / "lima-boot-errors").read_text() == (
        "pylima-init: early boot scripts: boot/07-etc-environment.sh failed with exit "
        "code 4: no\n")
    # boot/00 before it is done; boot/07 (and 20) run again in boot.sh
    assert (root / "run" / "pylima-init" / "early-boot-scripts").read_text() == (
        f"{IID} boot/00-guest-setup.sh\n")


def test_spawn_runs_real_programs() -> None:
    """pylima-init's process helper (no subprocess module in the guest's boot path)."""
    assert spawn(["sh", "-c", "echo out; echo err >&2; exit 3"]) == (3, "out\nerr\n")
    assert spawn(["cat"]) == (0, "")  # stdin is /dev/null
    assert spawn(["sed", "s/a/b/"], input="a\n") == (0, "b\n")
    assert spawn(["sh", "-c", 'echo "$X"'], env={"X": "y", "PATH": os.defpath}) == (0, "y\n")
    assert spawn(["sh", "-c", "kill -TERM $$"])[0] == -15
    before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(FileNotFoundError):
        spawn(["pylima-no-such-program"], input="x")
    spawn(["true"], input="x")
    assert len(os.listdir("/proc/self/fd")) == before  # no descriptor left open


def test_boot_sh_reads_the_list_pylima_init_writes() -> None:
    """The early-run list has one path: pylima-init's (it runs without pylima) is
    scripts.EARLY_BOOT_SCRIPTS_DONE, the one boot.sh reads."""
    from pylima.cidata import scripts
    from pylima.guestagent import init

    assert init.EARLY_DONE_FILE == scripts.EARLY_BOOT_SCRIPTS_DONE
    assert f"\nEARLY_BOOT_SCRIPTS_DONE={scripts.EARLY_BOOT_SCRIPTS_DONE}\n" in scripts.BOOT_SH


def test_a_locked_password_is_not_locked_again(tmp_path: Path) -> None:
    """`passwd -l` runs only where /etc/shadow does not show the lock already (a
    process and a rewrite of /etc/shadow on every boot otherwise)."""
    from pylima.guestagent.init import Init

    root = fake_root(tmp_path)
    (root / "etc" / "shadow").write_text(
        "root:*:19000:0:99999:7:::\n"
        "lima:!:19000:0:99999:7:::\n"
        "pw:$y$j9T$abc$def:19000:0:99999:7:::\n"
        "relocked:!$y$j9T$abc$def:19000:0:99999:7:::\n")
    init = Init(str(write_seed(tmp_path, {"meta-data": b"instance-id: x\n"})), str(root))
    assert init.password_locked("lima")
    assert init.password_locked("relocked")
    assert not init.password_locked("pw")
    assert not init.password_locked("root")  # "*": no password, but not locked either
    assert not init.password_locked("nobody-here")
    (root / "etc" / "shadow").unlink()
    assert not init.password_locked("lima")  # unreadable: lock, as before


def test_the_boot_path_imports_no_costly_module() -> None:
    """What pylima-init imports at start-up is on the boot's critical path: under
    emulation re, yaml, json, shlex or subprocess cost it a second or more."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import init; "
            "print(' '.join(m for m in ('re', 'yaml', 'json', 'shlex', 'subprocess', "
            "'typing', 'socket', 'enum') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-S", "-c", code, str(INIT.parent)],
                       capture_output=True, text=True, timeout=60, check=True)
    assert r.stdout.strip() == ""


@pytest.mark.parametrize("name", [
    "lima-dev", "a", "A1", "x" * 63, "x" * 64, "-a", ".a", "a.b-c", "a_b", "a b", "",
    "é", "a\n",
])
def test_host_name_check_is_the_documented_pattern(name: str) -> None:
    import re

    assert valid_hostname(name) == bool(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.-]{0,62}",
                                                     name)), name


@pytest.mark.parametrize("name", [
    "lima", "_x", "a.b-c_1", "host$", "$", "", "1a", ".a", "-a", "Alice", "a$b", "a b",
    "é",
])
def test_user_name_check_is_useradds_pattern(name: str) -> None:
    import re

    assert valid_username(name) == bool(re.fullmatch(r"[a-z_][a-z0-9_.-]*\$?", name)), name
