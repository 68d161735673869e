"""Lima's `base:` merge rules (limatmpl embed), one test per rule."""

import pytest

from pylima.config.merge import combine_list_entries, merge_base


def test_template_scalars_and_maps_win_over_base():
    out = merge_base({"cpus": 2, "env": {"A": "t"}}, {"cpus": 4, "memory": "8GiB",
                                                      "env": {"A": "b", "B": "b"}})
    assert out == {"cpus": 2, "memory": "8GiB", "env": {"A": "t", "B": "b"}}


def test_explicit_null_in_template_is_kept_like_lima():
    assert merge_base({"cpus": None}, {"cpus": 4})["cpus"] is None


def test_lists_appended_after_template():
    out = merge_base({"images": [{"location": "a"}], "portForwards": [{"guestPort": 1}]},
                     {"images": [{"location": "b"}], "portForwards": [{"guestPort": 2}]})
    assert [i["location"] for i in out["images"]] == ["a", "b"]
    assert [p["guestPort"] for p in out["portForwards"]] == [1, 2]


def test_provision_and_probes_prepended():
    out = merge_base({"provision": [{"script": "t"}], "probes": [{"script": "t"}]},
                     {"provision": [{"script": "b"}], "probes": [{"script": "b"}]})
    assert [p["script"] for p in out["provision"]] == ["b", "t"]
    assert [p["script"] for p in out["probes"]] == ["b", "t"]


def test_dns_only_from_base_when_template_has_none():
    assert merge_base({"dns": ["1.1.1.1"]}, {"dns": ["8.8.8.8"]})["dns"] == ["1.1.1.1"]
    assert merge_base({}, {"dns": ["8.8.8.8"]})["dns"] == ["8.8.8.8"]
    assert merge_base({"dns": []}, {"dns": ["8.8.8.8"]})["dns"] == ["8.8.8.8"]


def test_mount_types_unsupported_unique():
    out = merge_base({"mountTypesUnsupported": ["9p"]}, {"mountTypesUnsupported": ["9p", "x"]})
    assert out["mountTypesUnsupported"] == ["9p", "x"]


def test_higher_minimum_lima_version_wins():
    assert merge_base({"minimumLimaVersion": "1.0.0"},
                      {"minimumLimaVersion": "2.0.0"})["minimumLimaVersion"] == "2.0.0"
    assert merge_base({"minimumLimaVersion": "2.1.0"},
                      {"minimumLimaVersion": "2.0.0"})["minimumLimaVersion"] == "2.1.0"


def test_base_key_of_base_is_not_copied():
    assert "base" not in merge_base({}, {"base": ["x"], "cpus": 1})


def test_mounts_combined_by_mount_point():
    doc = {"mounts": [{"location": "/a", "writable": True},
                      {"location": "/a", "writable": False, "9p": {"cache": "none"}},
                      {"location": "/b", "mountPoint": "/mnt/b"},
                      {"location": "/c", "mountPoint": "/mnt/b", "writable": True}]}
    out = combine_list_entries(doc)["mounts"]
    assert out == [{"location": "/a", "writable": True, "9p": {"cache": "none"}},
                   {"location": "/b", "mountPoint": "/mnt/b", "writable": True}]


def test_wildcard_mount_fills_every_earlier_entry():
    doc = {"mounts": [{"location": "/a"}, {"location": "/b", "writable": True},
                      {"location": "*", "writable": False, "sshfs": {"cache": False}}]}
    out = combine_list_entries(doc)["mounts"]
    assert out == [{"location": "/a", "writable": False, "sshfs": {"cache": False}},
                   {"location": "/b", "writable": True, "sshfs": {"cache": False}}]


def test_additional_disks_combined_by_name():
    out = combine_list_entries({"additionalDisks": ["data", {"name": "data", "format": False},
                                                    "other"]})
    assert out["additionalDisks"] == [{"name": "data", "format": False}, "other"]


def test_networks_combined_by_interface():
    out = combine_list_entries({"networks": [
        {"interface": "lima0", "lima": "shared"},
        {"interface": "lima0", "socket": "/x", "metric": 50},
        {"lima": "bridged"}]})
    assert out["networks"] == [{"interface": "lima0", "lima": "shared", "metric": 50},
                               {"lima": "bridged"}]


@pytest.mark.parametrize("a,b,expect", [("2.0.0", "1.9.9", True), ("2.0.0-rc.1", "2.0.0", False),
                                         ("x", "2.0.0", True), ("2.0.0", "x", False)])
def test_version_ordering(a, b, expect):
    from pylima.config.versions import version_greater

    assert version_greater(a, b) is expect
