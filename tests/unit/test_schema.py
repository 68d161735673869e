from pylima.config.schema import TOP_LEVEL_FIELDS, check

ISSUE_FIELDS = """vmType vmOpts os arch images cpus memory disk mounts mountType
mountTypesUnsupported mountInotify additionalDisks ssh caCerts upgradePackages containerd
provision probes portForwards copyToHost message networks env param dns hostResolver
propagateProxyEnv plain timezone firmware audio video nestedVirtualization user
minimumLimaVersion base""".split()


def test_every_lima_v2_top_level_field_is_known():
    for f in ISSUE_FIELDS:
        assert f in TOP_LEVEL_FIELDS, f


def test_unknown_fields_are_reported_with_their_path():
    errors, unknown = check({"cpus": 2, "foo": 1, "mounts": [{"location": "~", "wrt": True}],
                             "ssh": {"localport": 1}})
    assert errors == []
    assert unknown == ["foo", "mounts[0].wrt", "ssh.localport"]


def test_wrong_types_name_the_field_path():
    errors, _ = check({"cpus": "four", "mounts": [{"location": "~", "writable": "yes"}],
                       "portForwards": [{"guestPort": "x"}], "env": {"A": {"b": 1}}})
    assert "field `cpus` must be an integer, got `four`" in errors
    assert "field `mounts[0].writable` must be a boolean, got `yes`" in errors
    assert "field `portForwards[0].guestPort` must be an integer, got `x`" in errors
    assert "field `env.A` must be a string, got a map" in errors


def test_null_is_unset_and_base_accepts_all_forms():
    assert check({"cpus": None, "base": "template:x"}) == ([], [])
    assert check({"base": ["template:x", {"url": "y"}]}) == ([], [])
    assert check({"memory": 4294967296, "disk": "100GiB"}) == ([], [])
    errors, _ = check({"base": 3})
    assert errors
