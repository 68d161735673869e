"""Containers: script `file:` embedding, the host side of yq provisioning, the
containerd seed step, the image variant rule, the docker templates and the colima
front end's naming (pure parts; tests/vm/test_containers.py boots the real thing)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.unit.test_cidata import filled, render, text

from pylima.api import local_image_variant, prepare_template
from pylima.cidata.iso import write_cidata_dir
from pylima.cli import colima
from pylima.errors import TemplateError
from pylima.hostagent.provision import yq_apply_text, yq_format
from pylima.images.builder import VARIANTS, make_recipe
from pylima.templates.locator import embed_scripts, read_template

# -- provision/probe `file:` --------------------------------------------------------------

def test_file_references_are_embedded_relative_to_the_template(tmp_path: Path) -> None:
    (tmp_path / "setup.sh").write_text("#!/bin/sh\necho from-file\n")
    (tmp_path / "conf.txt").write_text("k=v\n")
    (tmp_path / "expr.jq").write_text(".a = 1\n")
    (tmp_path / "probe.sh").write_text("#!/bin/sh\ntrue\n")
    doc = {"provision": [{"mode": "system", "file": "setup.sh"},
                         {"mode": "data", "path": "/etc/c", "file": {"url": "conf.txt"}},
                         {"mode": "yq", "path": "/etc/y.json", "file": "expr.jq"},
                         {"mode": "user", "script": "echo kept", "file": "setup.sh"}],
           "probes": [{"file": str(tmp_path / "probe.sh")}]}
    out = embed_scripts(doc, str(tmp_path / "t.yaml"))
    p = out["provision"]
    assert p[0] == {"mode": "system", "script": "#!/bin/sh\necho from-file\n"}
    assert p[1]["content"] == "k=v\n" and "file" not in p[1]
    assert p[2]["expression"] == ".a = 1\n"
    assert p[3]["script"] == "echo kept"
    assert out["probes"][0]["script"] == "#!/bin/sh\ntrue\n"
    assert embed_scripts({"provision": [{"script": "x"}]}, "") == {"provision": [{"script": "x"}]}


def test_file_reference_digest_is_checked(tmp_path: Path) -> None:
    (tmp_path / "s.sh").write_text("echo hi\n")
    doc = {"provision": [{"file": {"url": "s.sh", "digest": "sha256:" + "0" * 64}}]}
    with pytest.raises(TemplateError, match="does not match its digest"):
        embed_scripts(doc, str(tmp_path / "t.yaml"))


# -- yq provisioning, applied by the host -------------------------------------------------

def test_yq_format_follows_the_file_name() -> None:
    assert yq_format("/a/daemon.json", "auto") == "json"
    assert yq_format("/a/b.yml", "auto") == "yaml"
    assert yq_format("/a/b", "auto") == "yaml"
    assert yq_format("/a/b.json", "yaml") == "yaml"


def test_yq_creates_and_updates_json_and_yaml() -> None:
    expr = '.features["containerd-snapshotter"] = false'
    assert json.loads(yq_apply_text(None, expr, "json")) == {
        "features": {"containerd-snapshotter": False}}
    updated = yq_apply_text('{"debug": true}', ".features.cdi = true", "json")
    assert json.loads(updated) == {"debug": True, "features": {"cdi": True}}
    assert yaml.safe_load(yq_apply_text("a: 1\n", ".b = .a + 1", "yaml")) == {"a": 1, "b": 2}
    with pytest.raises(ValueError, match="toml"):
        yq_apply_text(None, ".a = 1", "toml")


# -- containerd on the seed -----------------------------------------------------------------

def test_containerd_step_only_with_an_archive_or_for_system() -> None:
    user_only = filled({"containerd": {"user": True, "system": False}})
    files = render(user_only)
    assert "boot/40-containerd.sh" not in files
    assert "LIMA_CIDATA_CONTAINERD_ARCHIVE" not in text(files, "lima.env")
    files = render(user_only, containerd_archive=b"tgz")
    assert files["nerdctl-full.tgz"] == b"tgz" and "boot/40-containerd.sh" in files
    assert "LIMA_CIDATA_CONTAINERD_ARCHIVE=nerdctl-full.tgz" in text(files, "lima.env")
    system = render(filled({"containerd": {"system": True, "user": False}}))
    assert "boot/40-containerd.sh" in system and "nerdctl-full.tgz" not in system
    none = render(filled({"containerd": {"system": False, "user": False}}),
                  containerd_archive=b"tgz")
    assert "boot/40-containerd.sh" not in none


def test_yq_count_reaches_the_guest_and_boot_sh_parses(tmp_path: Path) -> None:
    files = render(filled())
    assert "LIMA_CIDATA_YQ_PROVISIONS=1" in text(files, "lima.env")
    files = render(filled({"containerd": {"system": True, "user": True}}),
                   containerd_archive=b"x")
    write_cidata_dir(files, tmp_path)
    for name in ("boot.sh", "boot/40-containerd.sh"):
        res = subprocess.run(["sh", "-n", str(tmp_path / name)], capture_output=True)
        assert res.returncode == 0, res.stderr


# -- the image variant and the templates ------------------------------------------------------

def _template_config(name: str) -> dict[str, Any]:
    return prepare_template(read_template(f"template:{name}"), []).doc


@pytest.mark.parametrize("name", ["docker", "docker-rootful", "podman", "podman-rootful"])
def test_engine_templates_pick_the_docker_variant(name: str) -> None:
    cfg = _template_config(name)
    assert local_image_variant(cfg) == "docker"
    assert cfg["containerd"] == {"system": False, "user": False}
    sock = cfg["portForwards"][0]["hostSocket"]
    assert sock.startswith("{{.Dir}}/sock/") and sock.endswith(".sock")


def test_variant_rule() -> None:
    assert local_image_variant(_template_config("default")) == ""
    assert local_image_variant(_template_config("debian-12")) == ""
    assert local_image_variant({"containerd": {"system": True}}) == "docker"
    assert local_image_variant({"portForwards": [{"guestSocket": "/x/other.sock"}]}) == ""


def test_docker_variant_bakes_the_engines() -> None:
    assert {"docker.io", "podman", "rootlesskit", "uidmap"} <= set(VARIANTS["docker"])
    base, docker = make_recipe(), make_recipe(variant="docker")
    assert base.digest() != docker.digest() and "docker.io" in docker.packages
    assert "docker.io" not in base.packages


def test_docker_template_message_and_params() -> None:
    cfg = _template_config("docker")
    assert "docker context use lima-{{.Name}}" in cfg["message"]
    yq = [p for p in cfg["provision"] if p.get("mode") == "yq"]
    assert yq and "{{.Param.containerdSnapshotter}}" in yq[0]["expression"]
    assert "containerdSnapshotter" in cfg["param"]


# -- colima ---------------------------------------------------------------------------------

def test_colima_names() -> None:
    assert colima.instance_name("default") == "colima"
    assert colima.instance_name("") == "colima"
    assert colima.instance_name("dev") == "colima-dev"
    assert colima.instance_name("colima-dev") == "colima-dev"


def test_colima_start_expressions(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("COLIMA_HOME", str(tmp_path))
    exprs = colima.start_expressions("dev", "docker", rosetta=False)
    assert f'"hostSocket": "{tmp_path}/dev/docker.sock"' in " ".join(exprs)
    exprs = colima.start_expressions("default", "containerd", rosetta=True)
    assert ".containerd.system = true" in exprs
    assert ".vmOpts.vz.rosetta.enabled = true" in exprs
    assert f"{tmp_path}/default/containerd.sock" in " ".join(exprs)
