"""The cidata seed: rendered files (key lines), shell syntax, the boot steps run
against a scratch root, and the ISO read back."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pycdlib
import pytest
import yaml

from pylima.cidata import SLIRP, SlirpNet, file_mode, mount_tag, render_cidata
from pylima.cidata.iso import write_cidata_dir, write_cidata_iso
from pylima.cidata.render import proxy_env
from pylima.config.defaults import HostFacts, fill_defaults
from pylima.errors import ConfigError

HOST = HostFacts(cpus=2, memory=8 << 30, arch="x86_64", user="alice", uid=1001,
                 home="/home/alice", comment='Alice "Al" Smith', timezone="Europe/Paris",
                 lima_home="/home/alice/.lima", machine_id="m")
PATH = "/home/alice/.lima/dev/lima.yaml"
WEIRD = """spaced "double" 'single' $HOME `cmd` \\ end"""
PUBKEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostUserKey alice@host"
HOST_PRIV = ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n"
             "-----END OPENSSH PRIVATE KEY-----\n")
HOST_PUB = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGuestHostKey"
IID = "iid-1763880000"

SAMPLE: dict[str, Any] = {
    "mounts": [
        {"location": "~", "writable": False},
        {"location": "/tmp/lima", "mountPoint": "/tmp/lima", "writable": True},
        {"location": "/srv/data", "mountPoint": "/home/alice.guest/mnt/data dir",
         "9p": {"msize": "512KiB", "cache": "none"}},
    ],
    "env": {"WEIRD": WEIRD, "EDITOR": "vim"},
    "param": {"GREETING": WEIRD, "PLAIN": "x"},
    "hostResolver": {"hosts": {"db.internal": "10.1.2.3", "h.alias": "host.lima.internal",
                               "bad": "not-an-address.example"}},
    "provision": [
        {"mode": "system", "script": "#!/bin/bash\necho system-one\n"},
        {"mode": "user", "script": "echo user-one"},
        {"mode": "boot", "script": "echo boot-one $PARAM_GREETING"},
        {"mode": "dependency", "script": "echo dep", "skipDefaultDependencyResolution": True},
        {"mode": "data", "path": "/etc/pylima-test/data.conf", "content": "key=value\n",
         "permissions": "600", "overwrite": False},
        {"mode": "yq", "path": "/etc/x.yaml", "expression": ".a = 1"},
        {"mode": "system", "script": "echo system-two; exit 7"},
    ],
    "upgradePackages": True,
    "caCerts": {"certs": ["-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"]},
}


def filled(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    y = {**SAMPLE, **(extra or {})}
    return fill_defaults(y, {}, {}, HOST, PATH).config


def render(cfg: dict[str, Any] | None = None, **kw: Any) -> dict[str, bytes]:
    args: dict[str, Any] = dict(instance_name="dev", instance_id=IID, user_pubkeys=[PUBKEY],
                                host_key_private=HOST_PRIV, host_key_public=HOST_PUB,
                                ssh_local_port=60022, host_env={}, host_home="/home/alice")
    args.update(kw)
    return render_cidata(cfg if cfg is not None else filled(), **args)


@pytest.fixture(scope="module")
def files() -> dict[str, bytes]:
    return render()


def text(files: dict[str, bytes], name: str) -> str:
    return files[name].decode()


def user_data(files: dict[str, bytes]) -> dict[str, Any]:
    body = text(files, "user-data")
    assert body.startswith("#cloud-config\n")
    doc = yaml.safe_load(body)
    assert isinstance(doc, dict)
    return doc


def sh_values(script: str, names: list[str]) -> dict[str, str]:
    """Run `script` under /bin/sh, then report each variable's value exactly."""
    report = "".join(f'printf "%s\\0" "${{{n}-<unset>}}"\n' for n in names)
    out = subprocess.run(["sh", "-c", script + "\n" + report], capture_output=True,
                         check=True).stdout.decode()
    return dict(zip(names, out.split("\0")[:-1], strict=True))


# -- file list and modes -------------------------------------------------------------

def test_file_list(files: dict[str, bytes]) -> None:
    assert set(files) == {
        "meta-data", "user-data", "network-config", "lima.env", "param.env",
        "etc_environment", "etc_hosts", "boot.sh", "lib.sh", "boot/00-guest-setup.sh",
        "boot/05-mounts.sh", "boot/06-etc-hosts.sh", "boot/07-etc-environment.sh",
        "boot/20-rootless-base.sh", "boot/30-dependencies.sh",
        "provision.system/00000000", "provision.user/00000001",
        "provision.dependency/00000003", "provision.data/00000004",
        "provision.system/00000006", "provision.yq/00000005",
    }
    assert all(isinstance(v, bytes) for v in files.values())


def test_file_modes() -> None:
    for name in ("boot.sh", "boot/05-mounts.sh", "provision.system/00000000",
                 "provision.user/00000001", "provision.dependency/00000003",
                 "lima-guestagent"):
        assert file_mode(name) == 0o755, name
    for name in ("user-data", "lima.env", "lib.sh", "provision.data/00000004", "param.env"):
        assert file_mode(name) == 0o644, name


def test_guest_agent_is_shipped() -> None:
    files = render(guest_agent=b"#!/usr/bin/env python3\n")
    assert files["lima-guestagent"] == b"#!/usr/bin/env python3\n"
    assert "boot/25-guestagent.sh" in files


def test_steps_without_work_are_left_off() -> None:
    cfg = filled({"provision": []})
    cfg["mounts"] = []
    files = render(cfg)
    assert sorted(n for n in files if n.startswith("boot/")) == [
        "boot/00-guest-setup.sh", "boot/06-etc-hosts.sh", "boot/07-etc-environment.sh",
        "boot/20-rootless-base.sh"]
    assert "lima-guestagent" not in files
    # reverse-sshfs mounts need sshfs in the guest: the dependency step installs it.
    files = render(filled({"provision": [], "mountType": "reverse-sshfs"}))
    assert "boot/30-dependencies.sh" in files and "boot/05-mounts.sh" in files


# -- cloud-init files ----------------------------------------------------------------

def test_meta_data(files: dict[str, bytes]) -> None:
    meta = yaml.safe_load(text(files, "meta-data"))
    assert meta == {"instance-id": IID, "local-hostname": "lima-dev"}
    assert yaml.safe_load(text(render(instance_name="a.b_c"), "meta-data"))[
        "local-hostname"] == "lima-a-b-c"


def test_user_data_user(files: dict[str, bytes]) -> None:
    doc = user_data(files)
    (user,) = doc["users"]
    assert user["name"] == "alice"
    assert user["uid"] == 1001  # an integer: cloud-init deprecates the string form
    assert user["homedir"] == "/home/alice.guest"
    assert user["shell"] == "/bin/bash"
    assert user["gecos"] == 'Alice "Al" Smith'
    assert user["sudo"] == "ALL=(ALL) NOPASSWD:ALL"
    assert user["lock_passwd"] is True
    assert user["ssh_authorized_keys"] == [PUBKEY]


def test_user_data_without_passwordless_sudo() -> None:
    cfg = filled({"user": {"passwordlessSudo": False}})
    files = render(cfg)
    (user,) = user_data(files)["users"]
    assert user["sudo"] == "ALL=(ALL) ALL" and user["lock_passwd"] is False
    assert "LIMA_CIDATA_PASSWORDLESS_SUDO=''" in text(files, "lima.env")


def test_user_data_host_key(files: dict[str, bytes]) -> None:
    doc = user_data(files)
    assert doc["ssh_keys"] == {"ed25519_private": HOST_PRIV, "ed25519_public": HOST_PUB}
    assert doc["ssh_deletekeys"] is False
    # Only the type of the key given above: cloud-init generates no key that exists.
    assert doc["ssh_genkeytypes"] == ["ed25519"]


def test_user_data_modules(files: dict[str, bytes]) -> None:
    doc = user_data(files)
    assert doc["timezone"] == "Europe/Paris"
    assert doc["growpart"] == {"mode": "auto", "devices": ["/"]}
    assert doc["resize_rootfs"] is True
    assert doc["package_update"] is True and doc["package_upgrade"] is True
    assert doc["ca_certs"]["trusted"] == [
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"]
    assert doc["resolv_conf"] == {"nameservers": ["192.168.5.3"]}
    (launcher,) = doc["write_files"]
    assert launcher["path"] == "/var/lib/cloud/scripts/per-boot/00-lima.boot.sh"
    assert launcher["permissions"] == "0755"
    assert "/mnt/lima-cidata" in launcher["content"]
    assert '"$mnt/boot.sh" </dev/null' in launcher["content"]
    assert "/dev/console" in launcher["content"] and "logger -t lima-boot" in launcher["content"]


def test_user_data_optional_modules_omitted() -> None:
    cfg = filled({"upgradePackages": False, "caCerts": {}, "timezone": "", "provision": []})
    doc = user_data(render(cfg))
    for key in ("timezone", "package_upgrade", "package_update", "ca_certs", "bootcmd"):
        assert key not in doc


def test_ca_cert_files_from_caller() -> None:
    doc = user_data(render(ca_cert_files=["-----BEGIN CERTIFICATE-----\nFILE\n"
                                          "-----END CERTIFICATE-----\n"]))
    assert len(doc["ca_certs"]["trusted"]) == 2
    assert "FILE" in doc["ca_certs"]["trusted"][1]


def test_boot_mode_provision_runs_from_bootcmd(files: dict[str, bytes]) -> None:
    (cmd,) = user_data(files)["bootcmd"]
    assert "echo boot-one $PARAM_GREETING" in cmd
    assert "/run/lima-boot-errors" in cmd
    assert "PARAM_GREETING=" in cmd
    subprocess.run(["sh", "-n", "-c", cmd], check=True)


def test_bootcmd_entry_runs_and_records_failure(tmp_path: Path) -> None:
    cfg = filled({"provision": [{"mode": "boot", "script": "echo \"$PARAM_GREETING\"; exit 4"}]})
    (cmd,) = user_data(render(cfg))["bootcmd"]
    cmd = cmd.replace("/run/", f"{tmp_path}/")
    out = subprocess.run(["sh", "-c", cmd], capture_output=True, check=True).stdout.decode()
    assert out == WEIRD + "\n"
    errors = (tmp_path / "lima-boot-errors").read_text()
    assert errors == "provision[0] (boot) failed with exit code 4\n"
    assert [p.name for p in tmp_path.iterdir()] == ["lima-boot-errors"]  # script removed


def test_network_config_dns() -> None:
    net = yaml.safe_load(text(render(), "network-config"))
    assert net["version"] == 2
    eths = net["ethernets"].values()
    assert sorted(e["match"]["name"] for e in eths) == ["en*", "eth*"]
    assert all(e["dhcp4"] is True for e in eths)
    assert all(e["nameservers"]["addresses"] == ["192.168.5.3"] for e in eths)

    cfg = filled({"hostResolver": {"enabled": False}, "dns": ["1.1.1.1", "9.9.9.9"]})
    net = yaml.safe_load(text(render(cfg), "network-config"))
    assert all(e["nameservers"]["addresses"] == ["1.1.1.1", "9.9.9.9"]
               for e in net["ethernets"].values())

    other = SlirpNet(dns="10.0.2.3")
    net = yaml.safe_load(text(render(slirp=other), "network-config"))
    assert all(e["nameservers"]["addresses"] == ["10.0.2.3"] for e in net["ethernets"].values())


def test_network_config_user_v2_nics() -> None:
    from pylima.store.usernet import UserNic

    nic = UserNic("user-v2", "lima0", "52:55:55:00:00:01", "192.168.104.15", 24, "/sw")
    net = yaml.safe_load(text(render(user_nics=[nic]), "network-config"))
    # first (networkd takes the first matching file by name; en* matches every NIC),
    # by MAC, static, no gateway: the default route stays on the slirp NIC
    assert list(net["ethernets"]) == ["lima0", "slirp-en", "slirp-eth"]
    assert net["ethernets"]["lima0"] == {
        "match": {"macaddress": "52:55:55:00:00:01"}, "set-name": "lima0",
        "addresses": ["192.168.104.15/24"], "dhcp4": False, "dhcp6": False}


def test_a_primary_user_v2_nic_replaces_the_slirp_one() -> None:
    """As Lima: the first user-v2 network is eth0, with the default route through its
    host (.2) and its DNS (.3); those are also the guest's "slirp" host and DNS."""
    from pylima.store.usernet import UserNic

    first = UserNic("user-v2", "eth0", "52:55:55:00:00:01", "192.168.104.15", 24, "/sw",
                    primary=True, host="192.168.104.2", dns="192.168.104.3")
    more = UserNic("other", "lima1", "52:55:55:00:00:02", "10.9.0.15", 24, "/sw2")
    files = render(user_nics=[first, more])
    net = yaml.safe_load(text(files, "network-config"))
    assert net == {"version": 2, "ethernets": {
        "eth0": {"match": {"macaddress": "52:55:55:00:00:01"}, "set-name": "eth0",
                 "addresses": ["192.168.104.15/24"],
                 "routes": [{"to": "0.0.0.0/0", "via": "192.168.104.2"}],
                 "nameservers": {"addresses": ["192.168.104.3"]},
                 "dhcp4": False, "dhcp6": False},
        "lima1": {"match": {"macaddress": "52:55:55:00:00:02"}, "set-name": "lima1",
                  "addresses": ["10.9.0.15/24"], "dhcp4": False, "dhcp6": False}}}
    env = text(files, "lima.env")
    for line in ("LIMA_CIDATA_SLIRP_DNS=192.168.104.3", "LIMA_CIDATA_SLIRP_GATEWAY=192.168.104.2",
                 "LIMA_CIDATA_SLIRP_IP_ADDRESS=''"):
        assert line in env.splitlines(), env
    assert "192.168.104.2\thost.lima.internal" in text(files, "etc_hosts")
    user = yaml.safe_load(text(files, "user-data"))
    assert user["resolv_conf"] == {"nameservers": ["192.168.104.3"]}


@pytest.mark.parametrize("case", ["sample", "plain", "user-v2", "no-sudo"])
def test_pylima_init_reads_the_same_documents_as_cloud_init(case: str) -> None:
    """pylima-init.marshal is the seed's YAML documents, value for value (the YAML
    is cloud-init's, the marshal'd copy pylima-init's): no field differs or is lost."""
    import marshal

    from pylima.store.usernet import UserNic

    kw: dict[str, Any] = {"guest_init": b"#!/usr/bin/python3\n"}
    cfg = filled()
    if case == "plain":
        cfg = filled({"plain": True, "provision": [], "caCerts": {}})
    elif case == "user-v2":
        kw["user_nics"] = [UserNic("user-v2", "eth0", "52:55:55:00:00:01", "192.168.104.15",
                                   24, "/sw", primary=True, host="192.168.104.2",
                                   dns="192.168.104.3")]
    elif case == "no-sudo":
        cfg = filled({"user": {"passwordlessSudo": False}, "timezone": "Asia/Tokyo"})
    files = render(cfg, **kw)
    docs = marshal.loads(files["pylima-init.marshal"])
    assert list(docs) == ["meta-data", "user-data", "network-config"]
    for name, doc in docs.items():
        assert doc == yaml.safe_load(files[name]), name
    assert "pylima-init.marshal" not in render(cfg)  # only with pylima-init


def test_slirp_defaults() -> None:
    assert (SLIRP.network, SLIRP.gateway, SLIRP.dns, SLIRP.guest) == (
        "192.168.5.0/24", "192.168.5.2", "192.168.5.3", "192.168.5.15")
    with pytest.raises(AttributeError):
        SLIRP.dns = "x"  # type: ignore[misc]


# -- env files -----------------------------------------------------------------------

def test_lima_env(files: dict[str, bytes]) -> None:
    names = ["LIMA_CIDATA_IID", "LIMA_CIDATA_NAME", "LIMA_CIDATA_USER", "LIMA_CIDATA_UID",
             "LIMA_CIDATA_HOME", "LIMA_CIDATA_COMMENT", "LIMA_CIDATA_MOUNTS",
             "LIMA_CIDATA_MOUNTS_2_MOUNTPOINT", "LIMA_CIDATA_MOUNTTYPE",
             "LIMA_CIDATA_HOSTHOME_MOUNTPOINT", "LIMA_CIDATA_SLIRP_GATEWAY",
             "LIMA_CIDATA_SLIRP_DNS", "LIMA_CIDATA_SLIRP_IP_ADDRESS",
             "LIMA_CIDATA_PASSWORDLESS_SUDO", "LIMA_CIDATA_PLAIN",
             "LIMA_CIDATA_SKIP_DEFAULT_DEPENDENCY_RESOLUTION",
             "LIMA_CIDATA_DATAFILE_00000004_PATH", "LIMA_CIDATA_DATAFILE_00000004_OVERWRITE",
             "LIMA_CIDATA_DATAFILE_00000004_PERMISSIONS", "LIMA_CIDATA_DATAFILE_00000004_OWNER",
             "LIMA_CIDATA_SSH_LOCAL_PORT", "LIMA_CIDATA_PARAM_NAMES"]
    v = sh_values(text(files, "lima.env"), names)
    assert v["LIMA_CIDATA_IID"] == IID
    assert v["LIMA_CIDATA_NAME"] == "dev"
    assert (v["LIMA_CIDATA_USER"], v["LIMA_CIDATA_UID"]) == ("alice", "1001")
    assert v["LIMA_CIDATA_HOME"] == "/home/alice.guest"
    assert v["LIMA_CIDATA_COMMENT"] == 'Alice "Al" Smith'
    assert v["LIMA_CIDATA_MOUNTS"] == "3"
    assert v["LIMA_CIDATA_MOUNTS_2_MOUNTPOINT"] == "/home/alice.guest/mnt/data dir"
    assert v["LIMA_CIDATA_MOUNTTYPE"] == "9p"
    assert v["LIMA_CIDATA_HOSTHOME_MOUNTPOINT"] == "/home/alice"
    assert v["LIMA_CIDATA_SLIRP_GATEWAY"] == "192.168.5.2"
    assert v["LIMA_CIDATA_SLIRP_DNS"] == "192.168.5.3"
    assert v["LIMA_CIDATA_SLIRP_IP_ADDRESS"] == "192.168.5.15"
    assert v["LIMA_CIDATA_PASSWORDLESS_SUDO"] == "1"
    assert v["LIMA_CIDATA_PLAIN"] == ""
    assert v["LIMA_CIDATA_SKIP_DEFAULT_DEPENDENCY_RESOLUTION"] == "1"
    assert v["LIMA_CIDATA_DATAFILE_00000004_PATH"] == "/etc/pylima-test/data.conf"
    assert v["LIMA_CIDATA_DATAFILE_00000004_OVERWRITE"] == "false"
    assert v["LIMA_CIDATA_DATAFILE_00000004_PERMISSIONS"] == "600"
    assert v["LIMA_CIDATA_DATAFILE_00000004_OWNER"] == "root:root"
    assert v["LIMA_CIDATA_SSH_LOCAL_PORT"] == "60022"
    assert v["LIMA_CIDATA_PARAM_NAMES"] == "PARAM_GREETING,PARAM_PLAIN"
    assert "LIMA_CIDATA_IID=iid-1763880000\n" in text(files, "lima.env")


def test_additional_disks_step_and_env() -> None:
    """Disk N is vd(b+N), in config order, with Lima's LIMA_CIDATA_DISK_* names; the
    step is on the seed only when there are disks."""
    files = render(filled({"additionalDisks": [
        "data", {"name": "swap", "fsType": "swap"},
        {"name": "x", "format": False, "fsType": "xfs", "fsArgs": ["-m", "crc=1"]}]}))
    assert "boot/05-lima-disks.sh" in files
    names = ["LIMA_CIDATA_DISKS"] + [f"LIMA_CIDATA_DISK_{i}_{k}" for i in range(3)
                                     for k in ("NAME", "DEVICE", "FORMAT", "FSTYPE", "FSARGS")]
    v = sh_values(text(files, "lima.env"), names)
    assert v["LIMA_CIDATA_DISKS"] == "3"
    assert [v[f"LIMA_CIDATA_DISK_{i}_DEVICE"] for i in range(3)] == ["vdb", "vdc", "vdd"]
    assert [v[f"LIMA_CIDATA_DISK_{i}_NAME"] for i in range(3)] == ["data", "swap", "x"]
    assert [v[f"LIMA_CIDATA_DISK_{i}_FORMAT"] for i in range(3)] == ["true", "true", "false"]
    assert [v[f"LIMA_CIDATA_DISK_{i}_FSTYPE"] for i in range(3)] == ["", "swap", "xfs"]
    assert v["LIMA_CIDATA_DISK_2_FSARGS"] == "-m crc=1"
    assert "boot/05-lima-disks.sh" not in render()
    subprocess.run(["sh", "-n", "-c", text(files, "boot/05-lima-disks.sh")], check=True)


def test_param_env_is_shell_quoted(files: dict[str, bytes]) -> None:
    body = text(files, "param.env")
    assert body.splitlines()[1] == "PARAM_PLAIN=x"
    v = sh_values(body, ["PARAM_GREETING", "PARAM_PLAIN"])
    assert v == {"PARAM_GREETING": WEIRD, "PARAM_PLAIN": "x"}


def test_etc_environment_block(files: dict[str, bytes]) -> None:
    lines = text(files, "etc_environment").splitlines()
    assert lines[0] == "#LIMA-START" and lines[-1] == "#LIMA-END"
    assert f'WEIRD="{WEIRD}"' in lines
    assert 'EDITOR="vim"' in lines


def test_etc_environment_read_back_like_pam_env(files: dict[str, bytes],
                                               tmp_path: Path) -> None:
    seed = tmp_path / "seed"
    write_cidata_dir(files, seed)
    v = sh_values(f'. "{seed}/lib.sh"; load_pam_env "{seed}/etc_environment"',
                  ["WEIRD", "EDITOR"])
    assert v == {"WEIRD": WEIRD, "EDITOR": "vim"}


def test_env_rejects_bad_names_and_line_breaks() -> None:
    with pytest.raises(ConfigError, match="env"):
        render(filled({"env": {"BAD-NAME": "x"}}))
    with pytest.raises(ConfigError, match="line break"):
        render(filled({"env": {"A": "x\ny"}}))
    with pytest.raises(ConfigError, match="param"):
        render(filled({"param": {"1x": "y"}}))


def test_no_pubkeys_is_an_error() -> None:
    with pytest.raises(ConfigError, match="SSH"):
        render(user_pubkeys=[])


def test_proxy_env() -> None:
    host = {"http_proxy": "http://localhost:3128", "HTTPS_PROXY": "http://u:p@127.0.0.1:8080/",
            "no_proxy": "localhost,.corp", "FTP_PROXY": "", "PATH": "/bin"}
    env = proxy_env({"ftp_proxy": "ftp://proxy:21", "A": "b"}, host, True, "192.168.5.2")
    assert env == {
        "A": "b",
        "http_proxy": "http://192.168.5.2:3128", "HTTP_PROXY": "http://192.168.5.2:3128",
        "https_proxy": "http://u:p@192.168.5.2:8080/",
        "HTTPS_PROXY": "http://u:p@192.168.5.2:8080/",
        "no_proxy": "localhost,.corp", "NO_PROXY": "localhost,.corp",
        "ftp_proxy": "ftp://proxy:21", "FTP_PROXY": "ftp://proxy:21",
    }
    assert proxy_env({"A": "b"}, host, False, "192.168.5.2") == {"A": "b"}


def test_proxy_from_host_env_reaches_etc_environment() -> None:
    files = render(host_env={"https_proxy": "http://proxy.corp:3128", "HOME": "/root"})
    lines = text(files, "etc_environment").splitlines()
    assert 'https_proxy="http://proxy.corp:3128"' in lines
    assert 'HTTPS_PROXY="http://proxy.corp:3128"' in lines
    assert not any(line.startswith("HOME=") for line in lines)
    files = render(filled({"propagateProxyEnv": False}),
                   host_env={"https_proxy": "http://proxy.corp:3128"})
    assert "proxy" not in text(files, "etc_environment")


def test_etc_hosts(files: dict[str, bytes]) -> None:
    lines = text(files, "etc_hosts").splitlines()
    assert lines[0] == "#LIMA-START" and lines[-1] == "#LIMA-END"
    assert "192.168.5.2\thost.lima.internal" in lines
    assert "127.0.1.1\tlima-dev" in lines
    assert "10.1.2.3\tdb.internal" in lines
    assert "192.168.5.2\th.alias" in lines
    assert not any(line.endswith("\tbad") for line in lines)


# -- mounts ----------------------------------------------------------------------------

def test_9p_mounts(files: dict[str, bytes]) -> None:
    script = text(files, "boot/05-mounts.sh")
    home_tag = mount_tag("/home/alice", "/home/alice")
    assert home_tag == "lima-" + hashlib.sha256(b"/home/alice:/home/alice").hexdigest()[:16]
    assert (f"mount_9p {home_tag} /home/alice "
            "trans=virtio,version=9p2000.L,msize=131072,cache=fscache,ro || code=1") in script
    assert ("trans=virtio,version=9p2000.L,msize=131072,cache=mmap,rw || code=1") in script
    tag3 = mount_tag("/srv/data", "/home/alice.guest/mnt/data dir")
    assert (f"mount_9p {tag3} '/home/alice.guest/mnt/data dir' "
            "trans=virtio,version=9p2000.L,msize=524288,cache=none,ro || code=1") in script
    assert 'mount -t 9p -o "$3" "$1" "$2"' in script


def test_mount_tags_from_the_driver() -> None:
    script = text(render(mount_tags={0: "mount0", 2: "mount2"}), "boot/05-mounts.sh")
    assert "mount_9p mount0 /home/alice " in script
    assert "mount_9p mount2 '/home/alice.guest/mnt/data dir' " in script
    assert f"mount_9p {mount_tag('/tmp/lima', '/tmp/lima')} /tmp/lima " in script


def test_virtiofs_and_reverse_sshfs_mounts() -> None:
    script = text(render(filled({"mountType": "virtiofs"})), "boot/05-mounts.sh")
    assert f"mount_virtiofs {mount_tag('/tmp/lima', '/tmp/lima')} /tmp/lima rw" in script
    assert 'mount -t virtiofs -o "$3" "$1" "$2"' in script
    script = text(render(filled({"mountType": "reverse-sshfs"})), "boot/05-mounts.sh")
    assert "mount_reverse_sshfs" in script and "mount_9p lima-" not in script


def test_relative_mount_point_is_an_error() -> None:
    cfg = filled()
    cfg["mounts"][0]["mountPoint"] = "relative"
    with pytest.raises(ConfigError, match="mountPoint"):
        render(cfg)


# -- provisioning ----------------------------------------------------------------------

def test_provision_layout(files: dict[str, bytes]) -> None:
    assert text(files, "provision.system/00000000") == "#!/bin/bash\necho system-one\n"
    assert text(files, "provision.user/00000001") == "#!/bin/sh\necho user-one"
    assert text(files, "provision.dependency/00000003") == "#!/bin/sh\necho dep"
    assert text(files, "provision.data/00000004") == "key=value\n"
    # yq: the expression, for boot.sh to list (the host evaluates it); its target's
    # path, owner and permissions are in lima.env under Lima's names
    assert text(files, "provision.yq/00000005") == ".a = 1"
    env = text(files, "lima.env")
    assert "LIMA_CIDATA_YQ_PROVISION_00000005_PATH=/etc/x.yaml\n" in env
    assert "LIMA_CIDATA_YQ_PROVISION_00000005_OWNER=root:root\n" in env
    assert "LIMA_CIDATA_YQ_PROVISION_00000005_PERMISSIONS=644\n" in env
    assert not any(n.startswith("provision.boot") for n in files)


def test_unknown_provision_mode() -> None:
    with pytest.raises(ConfigError, match="provision"):
        render(filled({"provision": [{"mode": "nope", "script": "x"}]}))


def test_boot_sh_order(files: dict[str, bytes]) -> None:
    boot = text(files, "boot.sh")
    order = ['"$LIMA_CIDATA_MNT"/boot/*.sh', '"$LIMA_CIDATA_MNT"/provision.data/*',
             '"$LIMA_CIDATA_MNT"/provision.system/*', '"$LIMA_CIDATA_MNT"/provision.user/*',
             '>"$ROOT/run/lima-boot-done"']
    positions = [boot.index(marker) for marker in order]
    assert positions == sorted(positions)
    deps = text(files, "boot/30-dependencies.sh")
    assert deps.index("provision.dependency") < deps.index("SKIP_DEFAULT_DEPENDENCY")
    assert sorted(n for n in files if n.startswith("boot/")) == [
        "boot/00-guest-setup.sh", "boot/05-mounts.sh", "boot/06-etc-hosts.sh",
        "boot/07-etc-environment.sh", "boot/20-rootless-base.sh", "boot/30-dependencies.sh"]
    assert 'printf \'%s\\n\' "$LIMA_CIDATA_IID" >"$ROOT/run/lima-boot-done"' in boot


# -- shell syntax ------------------------------------------------------------------------

def _shell_scripts(files: dict[str, bytes]) -> dict[str, bytes]:
    return {n: c for n, c in files.items()
            if n.endswith(".sh") or n.startswith(("provision.system/", "provision.user/",
                                                  "provision.dependency/"))}


def test_every_script_parses(tmp_path: Path) -> None:
    files = render(guest_agent=b"agent")
    shells = ["sh"] + [s for s in ("dash", "bash") if shutil.which(s)]
    scripts = _shell_scripts(files)
    launcher = user_data(files)["write_files"][0]["content"]
    scripts["per-boot-launcher"] = launcher.encode()
    assert len(scripts) >= 12
    for name, content in scripts.items():
        if content.startswith(b"#!/bin/bash") and name.startswith("provision."):
            continue  # the user's own bash script
        path = tmp_path / name.replace("/", "_")
        path.write_bytes(content)
        for shell in shells:
            res = subprocess.run([shell, "-n", str(path)], capture_output=True)
            assert res.returncode == 0, (name, shell, res.stderr)


def test_config_values_never_reach_code_unquoted() -> None:
    nasty = "/tmp/$(touch pwned) `x` ;rm -rf /"
    cfg = filled({"mounts": [{"location": "/srv", "mountPoint": nasty}]})
    script = text(render(cfg), "boot/05-mounts.sh")
    assert "'/tmp/$(touch pwned) `x` ;rm -rf /'" in script


# -- the boot steps, run against a scratch root --------------------------------------------

def _boot(seed: Path, root: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "LIMA_CIDATA_MNT": str(seed),
           "LIMA_CIDATA_ROOT": str(root), "TMPDIR": str(root.parent)}
    return subprocess.run(["sh", str(seed / "boot.sh")], env=env, capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize("shell", ["dash", "busybox"])
def test_replace_block_keeps_the_rest_and_the_inode(tmp_path: Path, shell: str) -> None:
    """lib.sh's replace_block, with dash and mawk and with busybox's sh and awk: the old
    block and the DROP lines go, the new block ends the file (also an empty one, where
    awk's FNR == NR cannot tell the files apart), the file keeps its inode, a missing
    parent directory is made."""
    from pylima.cidata import scripts

    argv = ["busybox", "sh"] if shell == "busybox" else ["dash"]
    if shutil.which(argv[0]) is None:
        pytest.skip(f"{argv[0]} not installed")
    lib = tmp_path / "lib.sh"
    lib.write_text(scripts.LIB_SH)
    block = tmp_path / "block"
    block.write_text("#LIMA-START\n192.168.5.2\thost.lima.internal\n#LIMA-END\n")
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n1.2.3.4 host.lima.internal\n#LIMA-START\nold\n"
                     "#LIMA-END\nlast line")
    empty = tmp_path / "empty"
    empty.write_text("")
    inode = hosts.stat().st_ino
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if shell == "busybox":
        (bin_dir / "awk").symlink_to(shutil.which("busybox") or "busybox")
    script = ('. "$1"; replace_block "$2" "#LIMA-START" "#LIMA-END" "$4" '
              '"[ \t]host[.]lima[.]internal([ \t]|$)"; '
              'replace_block "$3" "#LIMA-START" "#LIMA-END" "$4"; '
              'replace_block "$5" "#LIMA-START" "#LIMA-END" "$4"')
    new = tmp_path / "sub" / "dir" / "new"
    subprocess.run([*argv, "-c", script, "sh", str(lib), str(hosts), str(empty), str(block),
                    str(new)], check=True, timeout=30,
                   env={"PATH": f"{bin_dir}:{os.environ['PATH']}"})
    assert hosts.read_text() == "127.0.0.1 localhost\nlast line\n" + block.read_text()
    assert hosts.stat().st_ino == inode
    assert empty.read_text() == block.read_text()
    assert new.read_text() == block.read_text()
    assert not list(tmp_path.rglob("*.lima-new"))


def test_boot_sh_in_a_scratch_root(tmp_path: Path) -> None:
    cfg = filled({"mounts": [{"location": "/srv", "mountPoint": "/mnt/share", "writable": True}]})
    cfg["provision"] = [p for p in cfg["provision"] if p["mode"] != "user"]
    cfg["provision"].insert(0, {"mode": "system",
                                "script": 'echo "param=$PARAM_GREETING"; echo "env=$WEIRD"'})
    files = render(cfg)
    seed, root = tmp_path / "seed", tmp_path / "root"
    write_cidata_dir(files, seed)
    (root / "etc").mkdir(parents=True)
    (root / "etc/hosts").write_text("127.0.0.1\tlocalhost\n10.0.0.9\thost.lima.internal\n")
    (root / "etc/environment").write_text('PATH="/usr/bin:/bin"\n')
    (root / cfg["user"]["home"].lstrip("/")).mkdir(parents=True)  # the user exists

    res = _boot(seed, root)
    assert res.returncode == 1, res.stderr  # one system script fails on purpose
    log = res.stdout
    assert f"param={WEIRD}" in log and f"env={WEIRD}" in log
    assert "system-one" in log and "system-two" in log and "dep" in log
    # provisioning order: dependency, data, system (in config order)
    assert log.index("provision.dependency/") < log.index("provision.data/") \
        < log.index("system-one") < log.index("system-two")
    assert (root / "run/lima-boot-done").read_text() == IID + "\n"
    assert (root / "run/lima-ssh-ready").read_text() == IID + "\n"
    errors = (root / "run/lima-boot-errors").read_text().splitlines()
    assert errors == ["provision.system/00000006 failed with exit code 7"]

    hosts = (root / "etc/hosts").read_text().splitlines()
    assert hosts[0] == "127.0.0.1\tlocalhost"
    assert "10.0.0.9\thost.lima.internal" not in hosts
    assert hosts.count("192.168.5.2\thost.lima.internal") == 1
    env = (root / "etc/environment").read_text().splitlines()
    assert env[0] == 'PATH="/usr/bin:/bin"' and f'WEIRD="{WEIRD}"' in env

    # boot/20: linger, delegation, sysctls, subordinate ids, PATH in the rc files
    user, uid = cfg["user"]["name"], int(cfg["user"]["uid"])
    assert (root / "var/lib/systemd/linger" / user).exists()
    assert (root / "etc/systemd/system/user@.service.d/lima.conf").read_text() == (
        "[Service]\nDelegate=yes\n")
    sysctl = (root / "etc/sysctl.d/99-lima.conf").read_text().splitlines()
    assert "net.ipv4.ip_unprivileged_port_start=0" in sysctl
    assert "net.ipv4.ping_group_range = 0 2147483647" in sysctl
    first = 524288 if uid < 524288 else uid + 1
    for f in ("subuid", "subgid"):
        assert (root / "etc" / f).read_text() == f"{user}:{first}:1073741824\n"
    home = root / cfg["user"]["home"].lstrip("/")
    for f in (".profile", ".bashrc", ".zshrc"):
        rc = (home / f).read_text()
        assert rc.startswith("# Lima BEGIN\n") and 'PATH="$PATH:/usr/sbin:/sbin"\n' in rc
    # the home by Lima's old name too
    assert home.name.endswith(".guest")
    alias = home.with_name(home.name.removesuffix(".guest") + ".linux")
    assert alias.is_symlink() and os.readlink(alias) == home.name

    data = root / "etc/pylima-test/data.conf"
    assert data.read_text() == "key=value\n"
    assert stat.S_IMODE(data.stat().st_mode) == 0o600
    assert (root / "mnt/share").is_dir()

    # A second boot replaces the blocks instead of adding to them, and keeps the
    # data file (overwrite: false).
    data.write_text("changed\n")
    (root / "run").joinpath("lima-boot-errors").unlink()
    files = render(cfg, instance_id="iid-2")
    write_cidata_dir(files, seed)
    res = _boot(seed, root)
    assert (root / "run/lima-boot-done").read_text() == "iid-2\n"
    assert sorted(p.name for p in (root / "run").iterdir()) == [
        "host-services", "lima-boot-done", "lima-boot-errors", "lima-ssh-ready"]  # no leftovers
    assert not list((root / "etc").glob("*.lima-new"))
    assert (root / "etc/hosts").read_text().count("#LIMA-START") == 1
    assert (root / "etc/environment").read_text().count("#LIMA-START") == 1
    assert (root / "etc/subuid").read_text().count("\n") == 1
    assert (home / ".profile").read_text().count("# Lima BEGIN") == 1
    assert data.read_text() == "changed\n"


def test_boot_sh_skips_the_steps_pylima_init_ran_in_this_boot(tmp_path: Path) -> None:
    cfg = filled({"provision": []})
    cfg["mounts"] = []
    seed, root = tmp_path / "seed", tmp_path / "root"
    write_cidata_dir(render(cfg), seed)
    done = root / "run/pylima-init/early-boot-scripts"
    done.parent.mkdir(parents=True)
    # boot/07 ran early in this boot, boot/20 in an earlier boot only
    done.write_text(f"{IID} boot/07-etc-environment.sh\niid-older boot/20-rootless-base.sh\n")
    res = _boot(seed, root)
    assert res.returncode == 0, res.stderr
    assert "run by pylima-init earlier in this boot: boot/07-etc-environment.sh\n" in res.stdout
    assert "running boot/07-etc-environment.sh" not in res.stdout
    assert "running boot/06-etc-hosts.sh" in res.stdout
    assert "running boot/20-rootless-base.sh" in res.stdout
    assert not (root / "etc/environment").exists()  # boot/07 really did not run again
    assert (root / "run/lima-boot-done").read_text() == IID + "\n"


def test_boot_done_even_when_every_step_fails(tmp_path: Path) -> None:
    cfg = filled({"provision": [{"mode": "system", "script": "exit 1"},
                                {"mode": "dependency", "script": "exit 2"}]})
    cfg["mounts"] = []
    seed, root = tmp_path / "seed", tmp_path / "root"
    write_cidata_dir(render(cfg), seed)
    res = _boot(seed, root)
    assert res.returncode == 1
    assert (root / "run/lima-boot-done").read_text() == IID + "\n"
    errors = (root / "run/lima-boot-errors").read_text().splitlines()
    assert "provision.dependency/00000001 failed" in errors
    assert "provision.system/00000000 failed with exit code 1" in errors


def test_plain_boot_skips_the_boot_scripts_but_marks_ssh_ready(tmp_path: Path) -> None:
    # The host agent waits for lima-ssh-ready before anything else: plain mode, which
    # skips the boot scripts (as Lima), must still write it.
    cfg = filled({"plain": True, "provision": [{"mode": "system", "script": "echo prov"}]})
    cfg["mounts"] = []
    seed, root = tmp_path / "seed", tmp_path / "root"
    write_cidata_dir(render(cfg), seed)
    res = _boot(seed, root)
    assert res.returncode == 0, res.stderr
    assert "plain mode" in res.stdout and "prov" in res.stdout
    assert "running boot/" not in res.stdout
    assert (root / "run/lima-ssh-ready").read_text() == IID + "\n"
    assert (root / "run/lima-boot-done").read_text() == IID + "\n"


# -- the ISO ---------------------------------------------------------------------------

def test_iso_round_trip(files: dict[str, bytes], tmp_path: Path) -> None:
    files = dict(files, **{"lima-guestagent": b"agent"})
    out = tmp_path / "inst" / "cidata.iso"
    out.parent.mkdir()
    out.write_bytes(b"old")
    write_cidata_iso(files, out)
    assert [p.name for p in out.parent.iterdir()] == ["cidata.iso"]  # no temp left

    iso = pycdlib.PyCdlib()
    iso.open(str(out))
    try:
        assert iso.pvd.volume_identifier.decode().strip() == "cidata"
        assert iso.has_rock_ridge() and iso.has_joliet()
        for name, content in files.items():
            buf = io.BytesIO()
            iso.get_file_from_iso_fp(buf, rr_path="/" + name)
            assert buf.getvalue() == content, name
            buf = io.BytesIO()
            iso.get_file_from_iso_fp(buf, joliet_path="/" + name)
            assert buf.getvalue() == content, name
            rec = iso.get_record(rr_path="/" + name)
            mode = rec.rock_ridge.get_file_mode()
            assert stat.S_ISREG(mode) and stat.S_IMODE(mode) == file_mode(name), name
        assert stat.S_IMODE(iso.get_record(rr_path="/boot.sh").rock_ridge.get_file_mode()) \
            == 0o755
        assert stat.S_IMODE(iso.get_record(rr_path="/user-data").rock_ridge.get_file_mode()) \
            == 0o644
    finally:
        iso.close()


@pytest.mark.skipif(shutil.which("isoinfo") is None, reason="isoinfo not installed")
def test_iso_read_by_isoinfo(files: dict[str, bytes], tmp_path: Path) -> None:
    out = tmp_path / "cidata.iso"
    write_cidata_iso(files, out)
    info = subprocess.run(["isoinfo", "-d", "-i", str(out)], capture_output=True, text=True,
                          check=True).stdout
    assert "Volume id: cidata" in info
    assert "Rock Ridge signatures version 1 found" in info
    listing = subprocess.run(["isoinfo", "-R", "-l", "-i", str(out)], capture_output=True,
                             text=True, check=True).stdout
    assert "-rwxr-xr-x" in listing and " 05-mounts.sh" in listing
    body = subprocess.run(["isoinfo", "-R", "-x", "/provision.data/00000004", "-i", str(out)],
                          capture_output=True, check=True).stdout
    assert body == b"key=value\n"


def test_iso_names_are_unique(tmp_path: Path) -> None:
    files = {"a-b.sh": b"1", "a_b.sh": b"2", "x" * 40: b"3", "x" * 41: b"4",
             "dir.with.dots/file.tar.gz": b"5"}
    out = tmp_path / "t.iso"
    write_cidata_iso(files, out)
    iso = pycdlib.PyCdlib()
    iso.open(str(out))
    try:
        for name, content in files.items():
            buf = io.BytesIO()
            iso.get_file_from_iso_fp(buf, rr_path="/" + name)
            assert buf.getvalue() == content
    finally:
        iso.close()


def test_guest_setup_step_in_a_scratch_root(tmp_path: Path) -> None:
    """boot/00: sshd accepts COLORTERM, /run/host-services exists, and the instance
    named `default` gets Lima's lime-green prompt once (a Debian-style .bashrc only)."""
    cfg = filled({"provision": []})
    cfg["mounts"] = []
    seed, root = tmp_path / "seed", tmp_path / "root"
    home = root / cfg["user"]["home"].lstrip("/")
    home.mkdir(parents=True)
    (root / "etc/ssh/sshd_config.d").mkdir(parents=True)
    (home / ".bashrc").write_text('case $- in *i*) ;; *) return;; esac\n'
                                  'if [ "$color_prompt" = yes ]; then :; fi\n')
    write_cidata_dir(render(cfg, instance_name="default"), seed)
    for _ in range(2):
        res = _boot(seed, root)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "running boot/00-guest-setup.sh" in res.stdout
    conf = root / "etc/ssh/sshd_config.d/10-acceptenv-colorterm.conf"
    assert conf.read_text() == "AcceptEnv COLORTERM\n"
    assert stat.S_IMODE((root / "run/host-services").stat().st_mode) == 0o700
    bashrc = (home / ".bashrc").read_text()
    assert bashrc.count("# Lima PS1") == 1 and "38;2;50;205;50" in bashrc
    # the prompt is valid shell, and in a 256-colour terminal it takes colour 77
    ps1 = subprocess.run(["bash", "-c", f'set -- ; {bashrc.split("# Lima BEGIN")[0]}'
                          'printf %s "$PS1"'], env={"TERM": "xterm-256color", "PS1": "$ "},
                         capture_output=True, text=True)
    assert ps1.returncode == 0 and "38;5;77m" in ps1.stdout, ps1.stderr

    # other instances keep the distribution's prompt
    seed2, root2 = tmp_path / "seed2", tmp_path / "root2"
    home2 = root2 / cfg["user"]["home"].lstrip("/")
    home2.mkdir(parents=True)
    (home2 / ".bashrc").write_text("color_prompt=yes\n")
    write_cidata_dir(render(cfg, instance_name="dev"), seed2)
    assert _boot(seed2, root2).returncode == 0
    assert (home2 / ".bashrc").read_text().startswith("color_prompt=yes\n# Lima BEGIN")
    assert "# Lima PS1" not in (home2 / ".bashrc").read_text()
