"""`lima [COMMAND...]`: `limactl shell $LIMA_INSTANCE COMMAND...` (default instance `default`)."""

from __future__ import annotations

import os
import sys
from typing import Any


def main(argv: list[str] | None = None) -> Any:
    from pylima import log as pylog
    from pylima.errors import LimaError

    argv = sys.argv[1:] if argv is None else argv
    pylog.setup()
    name = os.environ.get("LIMA_INSTANCE") or "default"
    if argv and argv[0] in ("-h", "--help"):
        print("Usage: lima [COMMAND...]\n\n"
              "Runs COMMAND in the instance $LIMA_INSTANCE (default: \"default\"),\n"
              "or opens a shell there. Same as `limactl shell $LIMA_INSTANCE COMMAND...`.")
        return sys.exit(0)
    try:
        sys.exit(shell(name, argv))
    except LimaError as e:
        import logging

        logging.getLogger("pylima").critical(e.message + (f" (Hint: {e.hint})" if e.hint else ""))
        sys.exit(e.exit_code)


def shell(name: str, argv: list[str]) -> int:
    """Run argv in instance NAME (the guest side arrives with the boot support)."""
    from pylima.errors import InstanceError, InstanceNotFound
    from pylima.store.instance import STATUS_RUNNING, inspect

    try:
        inst = inspect(name)
    except InstanceNotFound as e:
        raise InstanceNotFound(f"instance `{name}` does not exist, run `limactl create "
                               f"--name={name}` to create a new instance") from e
    if inst.status != STATUS_RUNNING:
        raise InstanceError(f"instance `{name}` status is not `Running` (`{inst.status}`)",
                            hint=f"run `limactl start {name}` to start the instance")
    raise InstanceError(f"instance `{name}` is running, but this pylima cannot open a shell "
                        "in it yet")
