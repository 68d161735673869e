"""Validation messages (each names its field path, Lima-style)."""

from pathlib import Path

from pylima.config.defaults import HostFacts, fill_defaults
from pylima.config.validate import validate, validate_instance_name, validate_param_is_used
from pylima.hostinfo import path_kind

HOST = HostFacts(cpus=2, memory=8 << 30, arch="x86_64", user="alice", uid=1001,
                 home="/home/alice", lima_home="/l")
IMG = [{"location": "https://example.com/x.img"}]


def errors_of(y):
    cfg = fill_defaults(y, {}, {}, HOST, "/l/test/lima.yaml").config
    return validate(cfg, "2.2.0", path_kind=path_kind)[0]


def test_valid_minimal_config():
    assert errors_of({"images": IMG}) == []


def test_images_must_be_set():
    assert "field `images` must be set" in errors_of({})


def test_bad_values_name_their_field():
    errs = errors_of({"images": IMG, "cpus": -1, "memory": "lots", "arch": "mips",
                      "mountType": "nfs", "vmType": "xen",
                      "mounts": [{"location": "relative/dir"}, {"location": "/x",
                                                               "mountPoint": "/etc"}],
                      "portForwards": [{"guestPort": 80, "proto": "sctp"}],
                      "provision": [{"mode": "shell", "script": "x"}],
                      "probes": [{"script": "true"}], "ssh": {"localPort": 22}})
    joined = "\n".join(errs)
    for needle in ["field `cpus` must be at least 1", "field `memory` has an invalid value",
                   "field `arch` must be one of", "field `mountType` must be",
                   "field `vmType` must be one of",
                   "field `mounts[0].location` must be an absolute path, got `relative/dir`",
                   "field `mounts[1].mountPoint` must not be a system path",
                   "field `portForwards[0].proto` must be",
                   "field `provision[0].mode` must one of",
                   "field `probe[0].script` must start with a '#!' line",
                   "field `ssh.localPort` must not be 22"]:
        assert needle in joined, needle


def test_minimum_lima_version():
    assert any("template requires Lima version `9.0.0`; this is only `2.2.0`" in e
               for e in errors_of({"images": IMG, "minimumLimaVersion": "9.0.0"}))
    assert errors_of({"images": IMG, "minimumLimaVersion": "2.0.0"}) == []


def test_mount_type_unsupported():
    errs = errors_of({"images": IMG, "mountType": "9p", "mountTypesUnsupported": ["9p"]})
    assert "field `mountType` must not be one of [9p] (`mountTypesUnsupported`), got `9p`" in errs


def test_dns_with_host_resolver():
    errs = errors_of({"images": IMG, "dns": ["1.1.1.1"]})
    assert "field `dns` must be empty when field `HostResolver.Enabled` is true" in errs


def test_instance_names():
    assert validate_instance_name("default") is None
    assert validate_instance_name("my-vm.1") is None
    assert "is not a valid identifier" in validate_instance_name("bad name")
    assert "is not a valid identifier" in validate_instance_name("-x")
    assert "must not end with .yml or .yaml" in validate_instance_name("x.yaml")
    assert "greater than maximum length" in validate_instance_name("a" * 77)


def test_param_must_be_used():
    assert validate_param_is_used({"param": {"X": "1"},
                                   "provision": [{"script": "echo {{.Param.X}}"}]}) is None
    assert validate_param_is_used({"param": {"X": "1"},
                                   "provision": [{"script": "echo $PARAM_X"}]}) is None
    assert "field `param` key `Y` is not used" in validate_param_is_used({"param": {"Y": "1"}})


def test_port_forward_port_and_range_must_agree():
    errs = errors_of({"images": IMG, "portForwards": [
        {"guestPort": 80, "guestPortRange": [81, 81], "hostPort": 8080,
         "hostPortRange": [8081, 8081]},
        {"guestPort": 80, "guestSocket": "/run/x.sock"},
        {"guestPort": 90, "hostPort": 9090, "hostSocket": "/tmp/x.sock"}]})
    assert "field `portForwards[0].guestPort` must match field " \
        "`portForwards[0].guestPortRange[0]`" in errs
    assert "field `portForwards[0].hostPort` must match field " \
        "`portForwards[0].hostPortRange[0]`" in errs
    assert "field `portForwards[1].guestPort` must be 0 when field " \
        "`portForwards[1].guestSocket` is set" in errs
    assert "field `portForwards[2].hostPort` must be 0 when field " \
        "`portForwards[2].hostSocket` is set" in errs


def test_mount_locations_are_checked_against_the_host(tmp_path: Path):
    (tmp_path / "file").write_text("")
    mounts = [{"location": str(tmp_path)}, {"location": str(tmp_path / "file")},
              {"location": str(tmp_path / "missing")}]
    cfg = fill_defaults({"images": IMG, "mounts": mounts}, {}, {}, HOST,
                        "/l/test/lima.yaml").config
    errs, warnings = validate(cfg, "2.2.0", warn=True, path_kind=path_kind)
    assert errs == [f"field `mounts[1].location` refers to a non-directory path: "
                    f"`{tmp_path / 'file'}`"]
    assert (f"field `mounts[2].location` refers to a non-existent directory: "
            f"`{tmp_path / 'missing'}`:") in warnings
    assert not any("mounts[0]" in w for w in warnings)
    # a missing directory is only a warning, and only when warnings are asked for
    assert validate(cfg, "2.2.0", path_kind=path_kind) == (errs, [])


def test_mount_location_checks_need_the_probe():
    """Without `path_kind` (pure use), nothing is decided from the host's file system."""
    cfg = fill_defaults({"images": IMG, "mounts": [{"location": "/etc/hostname"},
                                                    {"location": "/nonexistent/dir"}]},
                        {}, {}, HOST, "/l/test/lima.yaml").config
    errs, warnings = validate(cfg, "2.2.0", warn=True)
    assert not [m for m in errs + warnings if "location" in m]
    fake = {"/etc/hostname": "file", "/nonexistent/dir": None}
    errs, warnings = validate(cfg, "2.2.0", warn=True, path_kind=fake.get)
    assert errs == ["field `mounts[0].location` refers to a non-directory path: "
                    "`/etc/hostname`"]
    assert ("field `mounts[1].location` refers to a non-existent directory: "
            "`/nonexistent/dir`:") in warnings


def test_path_kind(tmp_path: Path):
    (tmp_path / "f").write_text("")
    (tmp_path / "link").symlink_to(tmp_path)
    assert path_kind(str(tmp_path)) == "dir"
    assert path_kind(str(tmp_path / "link")) == "dir"
    assert path_kind(str(tmp_path / "f")) == "file"
    assert path_kind(str(tmp_path / "missing")) is None
    assert path_kind("bad\0path") is None
