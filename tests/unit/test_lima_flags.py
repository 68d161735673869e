"""Every `limactl` command and flag of Lima v2.2.0 exists in pylima, or is listed
below as missing with the reason.

tests/unit/data/lima_flags.json holds Lima v2.2.0's flag set per command, extracted
from Lima's cmd/limactl sources by `scripts/lima-flags LIMA_GIT_DIR v2.2.0` (facts:
names, shorthands, hidden or not). A flag Lima has and pylima lacks fails this test
unless it is listed in MISSING; a listed gap that pylima has since filled fails it
too, so that the list stays true.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest

from pylima.cli.main import cli

LIMA = json.loads((Path(__file__).parent / "data" / "lima_flags.json").read_text())

# Lima commands pylima does not have (yet), with the reason.
MISSING_COMMANDS = {
    "limactl debug": "Lima's hidden developer command",
    "limactl debug dns": "Lima's hidden developer command (its DNS server is vz/macOS-side)",
    "limactl generate-doc": "Lima's build-time documentation generator",
    "limactl generate-jsonschema": "Lima's build-time schema generator",
    "limactl guest-install": "Lima's developer command (installs its Go guest agent)",
}

# (command, flag) Lima has and pylima lacks (yet), with the reason.
MISSING = {
    ("limactl hostagent", "guestagent"): "pylima's guest agent travels in the cidata",
    ("limactl hostagent", "nerdctl-archive"): "pylima's host agent reads lima.yaml itself",
    ("limactl hostagent", "run-gui"): "vz's GUI (macOS only)",
}

# (command, flag) pylima has and Lima's command lacks, with the reason.
EXTRA = {
    ("limactl", "version"): "cobra's --version, which the extraction does not list",
    ("limactl create", "tty"): "Lima's global --tty, declared on create itself",
    ("limactl create", "yes"): "Lima's global -y, declared on create itself",
    ("limactl start", "tty"): "Lima's global --tty, declared on start itself",
    ("limactl start", "yes"): "Lima's global -y, declared on start itself",
    ("limactl edit", "tty"): "Lima's global --tty, declared on edit itself",
    ("limactl restart", "timeout"): "pylima: the same limit as start --timeout",
    ("limactl hostagent", "lock-fd"): "pylima's host agent inherits the start lock",
}


def pylima_command(path: str) -> click.Command | None:
    cmd: click.Command = cli
    ctx = click.Context(cli)
    for name in path.split()[1:]:
        if not isinstance(cmd, click.Group):
            return None
        sub = cmd.get_command(ctx, name)
        if sub is None:
            return None
        ctx = click.Context(sub, parent=ctx, info_name=name)
        cmd = sub
    return cmd


def long_flags(cmd: click.Command) -> dict[str, click.Option]:
    """A command's --flags; the hidden twins of tri-state flags (`--NAME=false`) are
    the same flag."""
    from pylima.cli.common import FALSE_PREFIX

    return {o[2:]: p for p in cmd.params if isinstance(p, click.Option)
            for o in (*p.opts, *p.secondary_opts)
            if o.startswith("--") and not o.startswith(FALSE_PREFIX)} | \
        {"help": None}  # type: ignore[dict-item]


def test_the_fact_table_is_lima_v2_2() -> None:
    assert "limactl shell" in LIMA and LIMA["limactl"]["yes"]["short"] == "y"
    assert LIMA["limactl shell"]["instance"]["hidden"] is True
    assert len(LIMA) > 50


@pytest.mark.parametrize("path", sorted(LIMA))
def test_every_lima_command_and_flag(path: str) -> None:
    cmd = pylima_command(path)
    if path in MISSING_COMMANDS:
        assert cmd is None, f"`{path}` exists now: remove it from MISSING_COMMANDS"
        return
    assert cmd is not None, f"Lima's `{path}` is missing from pylima"
    ours = long_flags(cmd)
    for flag, facts in LIMA[path].items():
        if (path, flag) in MISSING:
            assert flag not in ours, f"`{path} --{flag}` exists now: remove it from MISSING"
            continue
        assert flag in ours, f"Lima's `{path} --{flag}` is missing from pylima"
        option = ours[flag]
        if facts["short"] and option is not None:
            assert f"-{facts['short']}" in option.opts, f"`{path} --{flag}`: -{facts['short']}"
        if facts["hidden"] and option is not None:
            assert option.hidden, f"`{path} --{flag}` is hidden in Lima"
    for flag in ours:
        if flag != "help" and flag not in LIMA[path]:
            assert (path, flag) in EXTRA, f"`{path} --{flag}` is not Lima's: list it in EXTRA"


def test_gap_lists_name_real_entries() -> None:
    assert all(p in LIMA for p in MISSING_COMMANDS)
    assert all(p in LIMA and f in LIMA[p] for p, f in MISSING)
    assert all(p in LIMA for p, _ in EXTRA)
