"""`limactl shell --preserve-env` filtering, `lima`'s environment variables, and how
shell commands are quoted (no VM: the guest side is in tests/vm/test_shell.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pylima.shellenv import DEFAULT_BLOCK_LIST, PatternError, block_list, preserved
from pylima.sshutil import quote_command, remote_script

ENV = {"FOO": "foo", "FOOBAR": "foobar", "BAR": "bar", "BARFOO": "barfoo",
       "SSH_FOO": "s", "HOME": "/h", "PATH": "/bin", "_": "/usr/bin/x", "LD_UID": "u"}


def names(env: dict[str, str]) -> list[str]:
    return [k for k, _ in preserved(env)]


def test_default_block_list() -> None:
    assert names(ENV) == ["FOO", "FOOBAR", "BAR", "BARFOO"]
    assert block_list({}) == list(DEFAULT_BLOCK_LIST) and "SSH_*" in DEFAULT_BLOCK_LIST


@pytest.mark.parametrize(("block", "allow", "want"), [
    ("FOO", "", ["FOOBAR", "BAR", "BARFOO", "SSH_FOO", "HOME", "PATH", "_", "LD_UID"]),
    ("+FOO", "", ["FOOBAR", "BAR", "BARFOO"]),
    ("FOO*", "", ["BAR", "BARFOO", "SSH_FOO", "HOME", "PATH", "_", "LD_UID"]),
    ("*FOO", "", ["FOOBAR", "BAR", "HOME", "PATH", "_", "LD_UID"]),
    ("FOO*, , BAR", "", ["BARFOO", "SSH_FOO", "HOME", "PATH", "_", "LD_UID"]),
    ("", "SSH_FOO, , BAR*, LD_UID", ["FOO", "FOOBAR", "BAR", "BARFOO", "SSH_FOO", "LD_UID"]),
    ("*", "B*R", ["BAR"]),
])
def test_block_and_allow_lists(block: str, allow: str, want: list[str]) -> None:
    env = {**ENV, "LIMA_SHELLENV_BLOCK": block, "LIMA_SHELLENV_ALLOW": allow}
    got = [n for n in names(env) if not n.startswith("LIMA_SHELLENV")]
    assert got == want


def test_bad_pattern_names_the_character() -> None:
    with pytest.raises(PatternError) as e:
        preserved({"LIMA_SHELLENV_BLOCK": "FOO,BA-R"})
    assert str(e.value) == ("Invalid LIMA_SHELLENV_BLOCK pattern: pattern `BA-R` contains "
                            "invalid character `-` at position 2")
    with pytest.raises(PatternError, match="LIMA_SHELLENV_ALLOW"):
        preserved({"LIMA_SHELLENV_ALLOW": "A.B"})


def test_leading_assignments_stay_assignments() -> None:
    assert quote_command(["FOO=a b", "X=1", "printenv", "Y=2"]) == "FOO='a b' X=1 printenv Y=2"
    assert quote_command(["a-b=c d", "x"]) == "'a-b=c d' x"  # not a shell name: one word
    assert quote_command(["ls", "-l", "a b"]) == "ls -l 'a b'"


def test_preserved_env_comes_before_the_login_shell() -> None:
    cfg = {"user": {"shell": "/bin/bash"}, "mounts": []}
    script = remote_script(cfg, "printenv", "/tmp", None, [("FOO", "a b"), ("BAR", "$x")])
    assert script.endswith("; exec env 'FOO=a b' 'BAR=$x' /bin/bash -l -c printenv")


def run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env})


def test_lima_wrapper_honours_its_variables(tmp_path: Path, lima_home: Path) -> None:
    """LIMACTL runs another limactl, with LIMA_SHELL, LIMA_WORKDIR and LIMA_INSTANCE
    turned into `shell` flags as Lima's wrapper does."""
    fake = tmp_path / "fake-limactl"
    fake.write_text('#!/bin/sh\nfor a in "$@"; do echo "[$a]"; done\n')
    fake.chmod(0o755)
    lima = [sys.executable, "-c", "from pylima.cli.lima_cmd import main; main()"]
    r = run([*lima, "uname", "-a"], {"LIMACTL": str(fake), "LIMA_INSTANCE": "dev",
                                     "LIMA_SHELL": "/bin/zsh", "LIMA_WORKDIR": "/tmp"})
    assert r.stdout.split() == ["[shell]", "[--workdir]", "[/tmp]", "[--shell]", "[/bin/zsh]",
                                "[--instance]", "[dev]", "[uname]", "[-a]"]
    r = run([*lima, "-v"], {"LIMACTL": str(fake)})
    assert r.stdout.split() == ["[-v]"]
    r = run([*lima, "--help"], {"LIMA_INSTANCE": "dev"})
    assert r.returncode == 0 and '"limactl shell dev"' in r.stdout and "LIMA_WORKDIR" in r.stdout
    r = run([*lima, "--version"], {})
    assert r.returncode == 0 and r.stdout.startswith("limactl version 2.2.0\n")


def test_shell_warns_about_a_limactl_verb_and_checks_patterns(lima_home: Path) -> None:
    limactl = [sys.executable, "-m", "pylima"]
    r = run([*limactl, "shell", "nosuch", "start", "x"], {})
    assert r.returncode == 1
    assert 'level=warning msg="Perhaps you meant `limactl start x`?"' in r.stderr
    r = run([*limactl, "shell", "--preserve-env", "nosuch", "true"],
            {"LIMA_SHELLENV_BLOCK": "A:B"})
    assert r.returncode == 1 and "Invalid LIMA_SHELLENV_BLOCK pattern" in r.stderr
    r = run([*limactl, "info"], {})
    import json

    assert json.loads(r.stdout)["shellEnvBlock"] == list(DEFAULT_BLOCK_LIST)
    assert run([*limactl, "-v"], {}).stdout.startswith("limactl version 2.2.0\n")
