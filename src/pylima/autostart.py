"""Starting instances when the user logs in (`limactl autostart`, `start-at-login`).

On Linux Lima uses a systemd user unit, `lima-vm@NAME.service` in
`$XDG_CONFIG_HOME/systemd/user/` (default `~/.config/systemd/user/`), whose ExecStart
runs `limactl start %i --foreground`, enabled with `systemctl --user enable`. Where
systemd is not the running init (no `/run/systemd/system`), autostart is not
supported, with Lima's error. The unit's text is a pure function (`render_unit`).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

from pylima.errors import LimaError

# systemd creates this directory when it boots as init (sd_booted(3))
SYSTEMD_RUN_DIR = "/run/systemd/system"


class AutostartError(LimaError):
    """Autostart cannot be registered, checked or removed."""


NOT_SUPPORTED = f"autostart is not supported on {sys.platform}"


def unit_name(instance: str) -> str:
    return f"lima-vm@{instance}.service"


def unit_path(instance: str, env: dict[str, str] | None = None) -> Path:
    env = dict(os.environ) if env is None else env
    config_home = env.get("XDG_CONFIG_HOME") or os.path.join(env.get("HOME", ""), ".config")
    return Path(config_home) / "systemd" / "user" / unit_name(instance)


def _systemd_quote(word: str) -> str:
    """A word of a systemd command line: double-quoted when it needs to be."""
    if word and not any(c in word for c in " \t\"'\\;$%"):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%") \
        .replace("$", "$$") + '"'


def render_unit(limactl: list[str]) -> str:
    """The systemd user unit that starts instance %i; `limactl` is how to run
    limactl (the program, maybe with its interpreter)."""
    exec_start = " ".join(_systemd_quote(w) for w in limactl) + " start %i --foreground"
    return (
        "[Unit]\n"
        "Description=Lima instance %i (pylima), started at login\n"
        "\n"
        "[Service]\n"
        f"ExecStart={exec_start}\n"
        "WorkingDirectory=%h\n"
        "Type=simple\n"
        "TimeoutSec=10\n"
        "Restart=on-failure\n"
        "\n"
        "[Install]\n"
        "WantedBy=default.target\n"
    )


def limactl_command() -> list[str]:
    """How this limactl runs: its script's absolute path, or the interpreter and the
    module when run as `python -m pylima`."""
    prog = sys.argv[0] if sys.argv else ""
    if os.path.basename(prog) == "limactl" and os.path.isfile(prog):
        return [os.path.abspath(prog)]
    return [sys.executable, "-m", "pylima"]


def systemd_running(run_dir: str | None = None) -> bool:
    return os.path.isdir(run_dir or SYSTEMD_RUN_DIR)


def _systemctl(*args: str) -> None:
    argv = ["systemctl", "--user", *args]
    try:
        r = subprocess.run(argv, stdin=subprocess.DEVNULL, check=False)
    except OSError as e:
        raise AutostartError(f"exec: {shlex.quote(argv[0])}: {e.strerror}") from e
    if r.returncode != 0:
        raise AutostartError(f"exit status {r.returncode}")


def is_registered(instance: str) -> bool:
    if not systemd_running():
        raise AutostartError(NOT_SUPPORTED)
    return unit_path(instance).exists()


def register(instance: str) -> None:
    """Write the unit and enable it (`systemctl --user enable`)."""
    if not systemd_running():
        raise AutostartError(NOT_SUPPORTED)
    path = unit_path(instance)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render_unit(limactl_command()))
        path.chmod(0o644)
    except OSError as e:
        raise AutostartError(f"failed to write the autostart entry for instance "
                             f"`{instance}`: {e}") from e
    _systemctl("enable", unit_name(instance))


def unregister(instance: str) -> None:
    """Disable the unit and remove it; nothing to do when there is none."""
    if not is_registered(instance):
        return
    try:
        _systemctl("disable", unit_name(instance))
    except AutostartError as e:
        raise AutostartError(f"failed to disable the autostart entry for instance "
                             f"`{instance}`: {e.message}") from e
    try:
        unit_path(instance).unlink()
    except OSError as e:
        raise AutostartError(f"failed to remove the autostart entry for instance "
                             f"`{instance}`: {e}") from e
