"""Checks on the built-in templates shipped as package data.

tests/unit/data/lima_template_images.json holds, per template file of Lima v2.2.0,
the images it lists (location, arch, digest, variant, kernel/initrd), its `base:`
references and the `os`, `vmType` and `arch` it sets, extracted from Lima's
templates/ by `scripts/lima-template-images LIMA_GIT_DIR v2.2.0` (facts only). Every
Lima template exists here by the same name, validates, and lists the same images per
architecture once `base:` is resolved, except where KNOWN_IMAGE_DIFFERENCES says why.
"""

from __future__ import annotations

import json
import os
import re
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pylima.templates import BUILTIN_ROOT, builtin_template_names, read_builtin_template

VALID_ARCHES = {"x86_64", "aarch64", "armv7l", "ppc64le", "riscv64", "s390x"}
DIGEST_RE = re.compile(r"^(sha256|sha512):([0-9a-f]+)$")
DIGEST_HEX_LEN = {"sha256": 64, "sha512": 128}

LIMA = json.loads((Path(__file__).parent / "data" / "lima_template_images.json").read_text())
LIMA_TEMPLATES: dict[str, dict[str, Any]] = LIMA["templates"]

# Built-in templates that Lima does not have.
PYLIMA_ONLY = {"binfmt"}

EXPECTED_LISTED = sorted(
    {name for name in LIMA_TEMPLATES if not name.startswith("_")} | PYLIMA_ONLY)

# Where pylima's resolved images differ from Lima's on purpose.
KNOWN_IMAGE_DIFFERENCES = {
    # pylima's podman templates install podman with apt on the Ubuntu LTS image, so
    # that the local Debian image stands in for it offline; Lima's use Fedora.
    "podman": "Ubuntu LTS base instead of Fedora",
    "podman-rootful": "Ubuntu LTS base instead of Fedora",
}

# Images that come from a URL plugin at run time, not from a file.
PLUGIN_BASES = ("fedora-rawhide:",)

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
        if ref.startswith(PLUGIN_BASES):
            continue
        assert ref.startswith("template:"), ref
        images.extend(_resolved_images(ref.removeprefix("template:"), seen | {name}))
    return images


def test_every_lima_template_is_built_in() -> None:
    missing = [name for name in LIMA_TEMPLATES if name not in ALL_NAMES]
    assert not missing, f"Lima templates without a built-in: {missing}"
    assert "_default/mounts" in ALL_NAMES


def test_lima_aliases_are_aliases_here() -> None:
    for name, facts in LIMA_TEMPLATES.items():
        if "alias" in facts:
            assert read_builtin_template(name) == read_builtin_template(facts["alias"]), name


@pytest.mark.parametrize("name", ALL_NAMES)
def test_parses_as_yaml_mapping(name: str) -> None:
    _load(name)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_base_references_resolve(name: str) -> None:
    for ref in _bases(_load(name)):
        if ref.startswith(PLUGIN_BASES):
            continue
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
    lima_arches = {image["arch"] for image in LIMA_TEMPLATES[name]["images"]}
    # macOS guests are aarch64 only
    assert {"x86_64", "aarch64"} & lima_arches <= arches


@pytest.mark.parametrize("name", builtin_template_names())
def test_listed_templates_have_images(name: str) -> None:
    if any(ref.startswith(PLUGIN_BASES) for ref in _bases(_load(name))):
        return
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


# ---- against Lima's fact table ---------------------------------------------------


def _lima_resolved(name: str) -> dict[str, Any]:
    """Lima's template NAME with `base:` resolved as Lima merges it: its own images
    first, then each base's in order; the first `os`/`vmType`/`arch` set wins."""
    facts = LIMA_TEMPLATES[name]
    out: dict[str, Any] = {"images": list(facts["images"])}
    for key in ("os", "vmType", "arch"):
        if key in facts:
            out[key] = facts[key]
    for ref in facts.get("base", []):
        if ref.startswith(PLUGIN_BASES):
            continue
        assert ref.startswith("template:"), ref
        base = _lima_resolved(ref.removeprefix("template:"))
        out["images"] += base["images"]
        for key in ("os", "vmType", "arch"):
            if key in base:
                out.setdefault(key, base[key])
    return out


def _pylima_resolved(name: str) -> dict[str, Any]:
    """Built-in template NAME with `base:` resolved by pylima's locator."""
    from pylima.templates.locator import embed_bases

    doc = yaml.safe_load(read_builtin_template(name) or b"")
    return embed_bases(doc, f"template:{name}")


def _by_arch(images: list[dict[str, Any]]) -> dict[str, list[tuple[Any, ...]]]:
    out: dict[str, list[tuple[Any, ...]]] = {}
    for image in images:
        files = tuple((image.get(k) or {}).get("location") for k in ("kernel", "initrd"))
        digests = tuple((image.get(k) or {}).get("digest") for k in ("kernel", "initrd"))
        out.setdefault(image["arch"], []).append(
            (image["location"], image.get("digest"), *files, *digests))
    return out


def _comparable() -> list[str]:
    """Lima's templates whose images come from files (not from a URL plugin) and
    are not a known difference."""
    return [n for n in sorted(LIMA_TEMPLATES) if n not in KNOWN_IMAGE_DIFFERENCES
            and not any(ref.startswith(PLUGIN_BASES)
                        for ref in LIMA_TEMPLATES[n].get("base", []))]


@pytest.mark.parametrize("name", _comparable())
def test_images_per_arch_match_lima(name: str) -> None:
    lima = _lima_resolved(name)
    ours = _pylima_resolved(name)
    # `archVariant` entries (x86-64-v3 builds) are pylima's additions to Lima's lists.
    our_images = [i for i in ours.get("images") or [] if not i.get("archVariant")]
    assert _by_arch(our_images) == _by_arch(lima["images"])
    for key in ("os", "vmType", "arch"):
        assert ours.get(key) == lima.get(key), key


@pytest.mark.parametrize("name", sorted(KNOWN_IMAGE_DIFFERENCES))
def test_known_image_differences_still_differ(name: str) -> None:
    ours = _by_arch(_pylima_resolved(name).get("images") or [])
    assert ours != _by_arch(_lima_resolved(name)["images"]), (
        f"{name} now matches Lima: drop it from KNOWN_IMAGE_DIFFERENCES")


# ---- validation -----------------------------------------------------------------


@pytest.fixture
def rawhide_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in `limactl-url-fedora-rawhide` first on $PATH (the real one asks
    dl.fedoraproject.org for the current compose)."""
    bindir = tmp_path / "plugin-bin"
    bindir.mkdir()
    listing = tmp_path / "fedora-rawhide.yaml"
    listing.write_text(
        "images:\n"
        "- location: https://example.org/Fedora-Cloud-Base-Generic-Rawhide-1.n.0.x86_64.qcow2\n"
        "  arch: x86_64\n"
        "- location: https://example.org/Fedora-Cloud-Base-Generic-Rawhide-1.n.0.aarch64.qcow2\n"
        "  arch: aarch64\n")
    plugin = bindir / "limactl-url-fedora-rawhide"
    plugin.write_text(f"#!/bin/sh\necho {listing}\n")
    plugin.chmod(plugin.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    return plugin


def test_every_builtin_template_validates(rawhide_plugin: Path, tmp_path: Path) -> None:
    """What `limactl template validate template:NAME` checks, for all of them at once."""
    from pylima import api
    from pylima.templates.locator import read_template

    start = time.monotonic()
    failures = {}
    for name in builtin_template_names():
        try:
            prepared = api.prepare_template(read_template(f"template:{name}"), [])
            api.check_config(prepared.doc, str(tmp_path / name / "lima.yaml"), warn=False)
        except Exception as e:  # noqa: BLE001 - collect them all
            failures[name] = str(e)
    assert not failures
    assert time.monotonic() - start < 10


def test_rawhide_template_takes_its_images_from_the_plugin(rawhide_plugin: Path) -> None:
    images = _pylima_resolved("experimental/fedora-rawhide")["images"]
    assert [i["arch"] for i in images] == ["x86_64", "aarch64"]
    assert all("Rawhide-1.n.0" in i["location"] for i in images)


# ---- guests this host cannot run --------------------------------------------------


def _unsupported_guests() -> list[str]:
    out = []
    for name in builtin_template_names():
        if name in PYLIMA_ONLY:
            continue
        facts = _lima_resolved(name)
        if facts.get("os", "Linux") != "Linux" or facts.get("vmType") in ("vz", "wsl2"):
            out.append(name)
    return out


UNSUPPORTED = _unsupported_guests()


def test_the_unsupported_guests_are_the_expected_ones() -> None:
    assert set(UNSUPPORTED) == {
        "experimental/freebsd-16", "experimental/freebsd-current", "experimental/wsl2",
        "freebsd", "freebsd-15", "homebrew-macos", "macos", "macos-15", "macos-26",
        "windows", "windows-11", "windows-2025"}


@pytest.mark.parametrize("name", UNSUPPORTED)
def test_unsupported_guest_is_refused_at_create(name: str, lima_home: Path) -> None:
    from pylima import api
    from pylima.errors import LimaError
    from pylima.templates.locator import read_template

    with pytest.raises(LimaError) as info:
        api.create_instance(read_template(f"template:{name}", name="x"))
    message = info.value.message
    assert "\n" not in message and "\n" not in (info.value.hint or "")
    assert ("currently only Linux guest is supported by pylima" in message
            or "requires" in message), message
    assert not lima_home.exists() or not any(lima_home.iterdir())


@pytest.mark.parametrize("verb", ["create", "start"])
def test_unsupported_guest_refusal_is_one_line_from_the_cli(verb: str, lima_home: Path) -> None:
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "pylima", verb, "--name=f", "template:freebsd"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    problems = [line for line in r.stderr.splitlines()
                if "level=info" not in line and line.strip()]
    assert len(problems) == 1, r.stderr
    assert "level=fatal" in problems[0]
    assert "currently only Linux guest is supported by pylima; got `os: FreeBSD`" in problems[0]
    assert not lima_home.exists() or not any(lima_home.iterdir())
