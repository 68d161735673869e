"""Lima's FillDefault precedence (override > instance > default > builtin) and defaults."""

import pytest

from pylima.config.defaults import HostFacts, fill_defaults, mac_address

HOST = HostFacts(cpus=2, memory=24 << 30, arch="x86_64", user="alice", uid=1001,
                 home="/home/alice", comment="Alice", timezone="Europe/Paris",
                 lima_home="/home/alice/.lima", machine_id="m")
PATH = "/home/alice/.lima/test/lima.yaml"


def fill(y=None, d=None, o=None, host=HOST):
    return fill_defaults(y or {}, d or {}, o or {}, host, PATH).config


def test_builtin_defaults():
    c = fill()
    assert c["cpus"] == 2  # min(4, host cpus)
    assert c["memory"] == "4GiB"  # min(4GiB, half of host memory)
    assert c["disk"] == "100GiB"
    assert c["vmType"] == "qemu" and c["arch"] == "x86_64" and c["os"] == "Linux"
    assert c["mountType"] == "9p"
    assert c["user"] == {"name": "alice", "comment": "Alice", "home": "/home/alice.guest",
                         "shell": "/bin/bash", "uid": 1001, "passwordlessSudo": True}
    assert c["timezone"] == "Europe/Paris"
    assert c["ssh"] == {"localPort": 0, "loadDotSSHPubKeys": False, "forwardAgent": False,
                        "forwardX11": False, "forwardX11Trusted": False, "overVsock": False}
    assert c["containerd"]["system"] is False and c["containerd"]["user"] is True
    assert c["hostResolver"]["enabled"] is True and c["hostResolver"]["ipv6"] is False
    assert c["propagateProxyEnv"] is True and c["plain"] is False
    assert c["video"]["display"] == "none" and c["firmware"]["legacyBIOS"] is False
    assert c["upgradePackages"] is False and c["nestedVirtualization"] is False


def test_memory_default_is_half_of_a_small_host():
    small = HostFacts(cpus=8, memory=3 << 30, arch="x86_64", user="a", uid=1000, home="/h")
    c = fill(host=small)
    assert c["cpus"] == 4
    assert c["memory"] == "1.5GiB"


def test_root_host_user_becomes_lima_guest_user():
    root = HostFacts(cpus=2, memory=8 << 30, arch="x86_64", user="root", uid=0, home="/root")
    c = fill(host=root)
    assert c["user"]["name"] == "lima" and c["user"]["uid"] == 1000
    assert c["user"]["home"] == "/home/lima.guest"


def test_scalar_precedence_override_instance_default():
    assert fill({"cpus": 3}, {"cpus": 1})["cpus"] == 3
    assert fill({}, {"cpus": 1})["cpus"] == 1
    assert fill({"cpus": 3}, {"cpus": 1}, {"cpus": 4})["cpus"] == 4
    assert fill({"cpus": 0})["cpus"] == 2  # 0 means unset


def test_lists_concatenated_override_instance_default():
    c = fill({"portForwards": [{"guestPort": 2}]}, {"portForwards": [{"guestPort": 3}]},
             {"portForwards": [{"guestPort": 1}]})
    assert [r["guestPortRange"][0] for r in c["portForwards"]] == [1, 2, 3]
    c = fill({"provision": [{"script": "y"}]}, {"provision": [{"script": "d"}]},
             {"provision": [{"script": "o"}]})
    assert [p["script"] for p in c["provision"]] == ["o", "y", "d"]
    c = fill({"images": [{"location": "y"}]}, {"images": [{"location": "d"}]},
             {"images": [{"location": "o"}]})
    assert [i["location"] for i in c["images"]] == ["o", "y", "d"]
    assert all(i["arch"] == "x86_64" for i in c["images"])


def test_maps_merge_key_by_key():
    c = fill({"env": {"A": "y", "B": "y"}}, {"env": {"A": "d", "C": "d"}}, {"env": {"B": "o"}})
    assert c["env"] == {"A": "y", "B": "o", "C": "d"}


def test_dns_takes_highest_priority_non_empty_list():
    assert fill({"dns": ["1.1.1.1"]}, {"dns": ["2.2.2.2"]})["dns"] == ["1.1.1.1"]
    assert fill({}, {"dns": ["2.2.2.2"]})["dns"] == ["2.2.2.2"]
    assert fill({"dns": ["1.1.1.1"]}, {}, {"dns": ["3.3.3.3"]})["dns"] == ["3.3.3.3"]


def test_mounts_combined_by_mount_point_later_wins():
    c = fill({"mounts": [{"location": "/data", "writable": True}]},
             {"mounts": [{"location": "/data"}, {"location": "~"}]},
             {"mounts": [{"location": "/data", "writable": False}]})
    assert [(m["location"], m["writable"]) for m in c["mounts"]] == \
        [("/data", False), ("/home/alice", False)]
    m = c["mounts"][1]
    assert m["mountPoint"] == "/home/alice"
    assert m["9p"] == {"securityModel": "none", "protocolVersion": "9p2000.L",
                       "msize": "128KiB", "cache": "fscache"}
    assert m["sshfs"] == {"cache": True, "followSymlinks": False, "sftpDriver": ""}


def test_writable_9p_mount_uses_mmap_cache():
    c = fill({"mounts": [{"location": "/data", "writable": True}]})
    assert c["mounts"][0]["9p"]["cache"] == "mmap"


def test_mount_location_templates():
    c = fill({"mounts": [{"location": "{{.Home}}/src", "mountPoint": "/mnt/{{.User}}"},
                         {"location": "{{.Dir}}/shared"}]})
    assert c["mounts"][0]["location"] == "/home/alice/src"
    assert c["mounts"][0]["mountPoint"] == "/mnt/alice"
    assert c["mounts"][1]["location"] == "/home/alice/.lima/test/shared"


def test_networks_combined_by_interface_and_filled():
    c = fill({"networks": [{"lima": "shared", "interface": "lima0"}]},
             {"networks": [{"socket": "/tmp/x", "interface": "lima0", "metric": 50}]})
    assert c["networks"] == [{"lima": "shared", "socket": "", "interface": "lima0",
                              "metric": 50,
                              "macAddress": mac_address("m", f"{PATH}#0")}]
    assert c["networks"][0]["macAddress"].startswith("52:55:55:")


def test_ca_certs_deduplicated_default_instance_override():
    c = fill({"caCerts": {"certs": ["b", "a"]}}, {"caCerts": {"certs": ["a", "c"]}},
             {"caCerts": {"certs": ["d", "b"]}})
    assert c["caCerts"]["certs"] == ["a", "c", "b", "d"]


def test_port_forward_defaults():
    c = fill({"portForwards": [{"guestPort": 8080}, {"guestPortRange": [1000, 2000],
                                                     "hostPortRange": [3000, 4000]},
                               {"guestSocket": "/run/x.sock", "hostSocket": "x.sock"},
                               {"guestIPMustBeZero": True, "guestPort": 80, "hostPort": 8081}]})
    r0, r1, r2, r3 = c["portForwards"]
    assert r0 == {"guestPort": 8080, "proto": "any", "guestIP": "127.0.0.1",
                  "guestIPMustBeZero": False, "hostIP": "127.0.0.1",
                  "guestPortRange": [8080, 8080], "hostPortRange": [8080, 8080]}
    assert r1["hostPortRange"] == [3000, 4000]
    assert r2["hostSocket"] == "/home/alice/.lima/test/sock/x.sock"
    assert r3["guestIP"] == "0.0.0.0" and r3["hostPortRange"] == [8081, 8081]


def test_provision_and_probe_defaults():
    c = fill({"provision": [{"script": "echo {{.User}}"},
                            {"mode": "data", "path": "/etc/x", "content": "hi"}],
              "probes": [{"script": "#!/bin/sh\ntrue"}]})
    p0, p1 = c["provision"]
    assert p0 == {"mode": "system", "script": "echo alice"}
    assert p1["overwrite"] is True and p1["owner"] == "root:root"
    assert p1["permissions"] == "644"
    assert c["probes"][0]["mode"] == "readiness"
    assert c["probes"][0]["description"] == "user probe 1/1"


def test_plain_mode_drops_mounts_and_dynamic_forwards():
    c = fill({"plain": True, "mounts": [{"location": "~"}],
              "portForwards": [{"guestPort": 1}, {"guestPort": 2, "static": True}]})
    assert c["mounts"] == []
    assert [r["guestPort"] for r in c["portForwards"]] == [2]
    assert c["containerd"]["system"] is False and c["containerd"]["user"] is False


def test_containerd_archives_default_to_limas_pinned_nerdctl_full():
    archives = fill({})["containerd"]["archives"]
    assert [a["arch"] for a in archives] == ["x86_64", "aarch64"]
    assert all(a["location"].endswith(".tar.gz") and a["digest"].startswith("sha256:")
               for a in archives)
    own = [{"location": "http://127.0.0.1/n.tgz", "arch": "x86_64"}]
    assert fill({"containerd": {"archives": own}})["containerd"]["archives"] == own


def test_9p_unsupported_falls_back_to_reverse_sshfs():
    assert fill({"mountTypesUnsupported": ["9p"]})["mountType"] == "reverse-sshfs"


@pytest.mark.parametrize("arch", ["riscv64", "armv7l"])
def test_containerd_user_default_only_for_main_arches(arch):
    assert fill({"arch": arch})["containerd"]["user"] is False
