"""Checks on the built-in templates shipped as package data."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from pylima.templates import BUILTIN_ROOT, builtin_template_names, read_builtin_template

VALID_ARCHES = {"x86_64", "aarch64", "armv7l", "ppc64le", "riscv64", "s390x"}
DIGEST_RE = re.compile(r"^(sha256|sha512):([0-9a-f]+)$")
DIGEST_HEX_LEN = {"sha256": 64, "sha512": 128}

EXPECTED_LISTED = [
    "alpine",
    "alpine-3.23",
    "archlinux",
    "binfmt",
    "debian",
    "debian-12",
    "debian-13",
    "default",
    "docker",
    "docker-rootful",
    "fedora",
    "fedora-44",
    "podman",
    "podman-rootful",
    "ubuntu",
    "ubuntu-22.04",
    "ubuntu-24.04",
    "ubuntu-26.04",
    "ubuntu-lts",
]


def _all_names() -> list[str]:
    """Every YAML file under the template root, hidden ones included."""

    def walk(node: Any, prefix: str) -> Iterator[str]:
        for child in node.iterdir():
            if child.is_dir():
                yield from walk(child, f"{prefix}{child.name}/")
            elif child.name.endswith(".yaml"):
                yield prefix + child.name[: -len(".yaml")]

    return sorted(walk(BUILTIN_ROOT, ""))


ALL_NAMES = _all_names()


def _load(name: str) -> dict[str, Any]:
    data = read_builtin_template(name)
    assert data is not None, name
    doc = yaml.safe_load(data)
    assert isinstance(doc, dict), name
    return doc


def _bases(doc: dict[str, Any]) -> list[str]:
    base = doc.get("base")
    if base is None:
        return []
    entries = base if isinstance(base, list) else [base]
    refs: list[str] = []
    for entry in entries:
        refs.append(entry["url"] if isinstance(entry, dict) else entry)
    return refs


def _resolved_images(name: str, seen: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
    assert name not in seen, f"base cycle through {name}"
    doc = _load(name)
    images = list(doc.get("images") or [])
    for ref in _bases(doc):
        assert ref.startswith("template:"), ref
        images.extend(_resolved_images(ref.removeprefix("template:"), seen | {name}))
    return images


def test_layout_has_the_expected_files() -> None:
    for name in (
        "_default/mounts",
        "_images/ubuntu",
        "_images/ubuntu-lts",
        "_images/ubuntu-22.04",
        "_images/ubuntu-24.04",
        "_images/ubuntu-26.04",
        "_images/debian-12",
        "_images/debian-13",
        "_images/fedora",
        "_images/fedora-44",
        "_images/archlinux",
        "_images/alpine-3.23",
        *EXPECTED_LISTED,
    ):
        assert name in ALL_NAMES, name


@pytest.mark.parametrize("name", ALL_NAMES)
def test_parses_as_yaml_mapping(name: str) -> None:
    _load(name)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_base_references_resolve(name: str) -> None:
    for ref in _bases(_load(name)):
        assert ref.startswith("template:"), f"{name}: unexpected base {ref!r}"
        target = ref.removeprefix("template:")
        assert read_builtin_template(target) is not None, f"{name}: {ref} not found"


@pytest.mark.parametrize("name", [n for n in ALL_NAMES if n not in ("_default/mounts",)])
def test_image_entries_are_well_formed(name: str) -> None:
    for image in _load(name).get("images") or []:
        assert isinstance(image.get("location"), str) and image["location"], image
        assert image.get("arch") in VALID_ARCHES, image
        if "digest" in image:
            m = DIGEST_RE.match(image["digest"])
            assert m, image
            assert len(m.group(2)) == DIGEST_HEX_LEN[m.group(1)], image
        for extra in ("kernel", "initrd"):
            if extra in image:
                assert image[extra].get("location"), image


@pytest.mark.parametrize("name", [n for n in ALL_NAMES if n.startswith("_images/")])
def test_image_lists_cover_both_main_arches(name: str) -> None:
    arches = {image["arch"] for image in _load(name)["images"]}
    assert {"x86_64", "aarch64"} <= arches


@pytest.mark.parametrize("name", builtin_template_names())
def test_listed_templates_have_images(name: str) -> None:
    assert _resolved_images(name), name


@pytest.mark.parametrize("name", [n for n in ALL_NAMES if not n.startswith("_")])
def test_top_level_templates_start_with_a_comment(name: str) -> None:
    data = read_builtin_template(name)
    assert data is not None
    assert data.startswith(b"# "), name


def test_default_chains_to_ubuntu_for_both_arches() -> None:
    doc = _load("default")
    assert _bases(doc)[0] == "template:_images/ubuntu"
    assert "template:_default/mounts" in _bases(doc)
    arches = {image["arch"] for image in _resolved_images("default")}
    assert {"x86_64", "aarch64"} <= arches
    assert any("ubuntu" in image["location"] for image in _resolved_images("default"))


def test_default_mounts_home_read_only() -> None:
    mounts = _load("_default/mounts")["mounts"]
    assert mounts == [{"location": "~"}]


def test_aliases_match_their_targets() -> None:
    for alias, target in (
        ("ubuntu", "ubuntu-26.04"),
        ("ubuntu-lts", "ubuntu-26.04"),
        ("debian", "debian-13"),
        ("fedora", "fedora-44"),
        ("alpine", "alpine-3.23"),
        ("_images/ubuntu", "_images/ubuntu-26.04"),
        ("_images/ubuntu-lts", "_images/ubuntu-26.04"),
        ("_images/fedora", "_images/fedora-44"),
    ):
        assert read_builtin_template(alias) == read_builtin_template(target), alias


def test_list_names() -> None:
    names = builtin_template_names()
    assert names == EXPECTED_LISTED
    assert names == sorted(names)
    assert not any(name.startswith("_") for name in names)


def test_list_rules_on_a_fake_tree(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import pylima.templates as mod

    for rel in (
        "default.yaml",
        "zeta.yaml",
        ".hidden.yaml",
        "notes.md",
        "_images/ubuntu.yaml",
        "_default/mounts.yaml",
        "experimental/foo.yaml",
        "experimental/.bar.yaml",
        "Upper.yaml",
    ):
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}\n")
    monkeypatch.setattr(mod, "BUILTIN_ROOT", tmp_path)
    assert mod.builtin_template_names() == ["Upper", "default", "experimental/foo", "zeta"]
    assert mod.read_builtin_template("experimental/foo") == b"{}\n"
    assert mod.read_builtin_template("experimental/foo.yaml") == b"{}\n"


def test_read_with_and_without_suffix() -> None:
    plain = read_builtin_template("default")
    assert plain is not None
    assert read_builtin_template("default.yaml") == plain
    assert read_builtin_template("_images/ubuntu-24.04") is not None
    assert read_builtin_template("_images/ubuntu-24.04.yaml") is not None


@pytest.mark.parametrize(
    "name",
    [
        "",
        "../x",
        "..",
        "_images/../default",
        "/etc/passwd",
        "/default",
        "nonexistent",
        "_images",
        "experimental/nothing",
        "__init__.py",
    ],
)
def test_read_rejects_bad_or_unknown_names(name: str) -> None:
    assert read_builtin_template(name) is None
