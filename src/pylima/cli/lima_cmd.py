"""`lima [COMMAND...]`: `limactl shell $LIMA_INSTANCE COMMAND...` (default instance `default`)."""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing itself costs start-up time on this path

if TYPE_CHECKING:
    from typing import Any

USAGE = """Usage: lima [COMMAND...]

Runs COMMAND in the instance $LIMA_INSTANCE (default: "default"), or opens a
login shell there. The same as `limactl shell $LIMA_INSTANCE COMMAND...`; the
working directory follows the host's when it is inside a mount.
"""


def main(argv: list[str] | None = None) -> Any:
    from pylima.errors import LimaError

    argv = sys.argv[1:] if argv is None else argv
    name = os.environ.get("LIMA_INSTANCE") or "default"
    if argv and argv[0] in ("-h", "--help"):
        sys.stdout.write(USAGE)
        return sys.exit(0)
    if argv[:1] == ["--"]:
        argv = argv[1:]  # `lima -- CMD`: Lima's wrapper passes it to `limactl shell NAME`
    elif argv and argv[0].startswith("-"):
        # flags before the command (`lima --workdir=/tmp pwd`, `lima --tty=false ls`):
        # Lima's wrapper hands them to `limactl shell --instance NAME`; so does this
        from pylima.cli.main import cli, run

        return sys.exit(run(cli, ["shell", "--instance", name, *argv], prog_name="limactl"))
    try:
        from pylima.cli.shellrun import run_shell

        return sys.exit(run_shell(name, argv))
    except LimaError as e:
        from pylima.cli.listing import _log

        _log().critical(e.message + (f" (Hint: {e.hint})" if e.hint else ""))
        return sys.exit(e.exit_code)
