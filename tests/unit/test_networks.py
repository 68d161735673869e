"""networks.yaml and `networks[].lima` validation, with Lima's messages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def limactl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pylima", *args], capture_output=True,
                          text=True, timeout=60)


def test_named_networks_are_checked_against_networks_yaml(lima_home: Path,
                                                          tmp_path: Path) -> None:
    y = tmp_path / "n.yaml"
    y.write_text("images: [{location: /etc/profile}]\nnetworks: [{lima: nope}]\n")
    r = limactl("validate", str(y))
    assert r.returncode == 1 and ("field `networks[0].lima` references network `nope` "
                                  "which is not defined in networks.yaml") in r.stderr
    nets = (lima_home / "_config" / "networks.yaml").read_text()  # written, as Lima
    assert "user-v2:\n    mode: user-v2\n    gateway: 192.168.104.1" in nets
    y.write_text("images: [{location: /etc/profile}]\nnetworks: [{lima: shared}]\n")
    r = limactl("create", "--name=n", str(y))
    assert r.returncode == 1
    assert "field `networks[0].lima` is only supported on macOS right now" in r.stderr
    assert not (lima_home / "n").exists()
    y.write_text("images: [{location: /etc/profile}]\nnetworks: [{lima: user-v2}]\nfoo: 1\n")
    r = limactl("validate", str(y))
    assert r.returncode == 0, r.stderr
    assert "Non-strict YAML detected; please check for typos: unknown field `foo`" in r.stderr
