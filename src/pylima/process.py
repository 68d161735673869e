"""The one subprocess wrapper: argument lists only, stdin closed by default,
the command logged at debug level, failures raised as CommandError."""

from __future__ import annotations

import logging
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence

from pylima.errors import CommandError, LimaError

log = logging.getLogger(__name__)


def run(argv: Sequence[str], *, input: bytes | str | None = None, check: bool = True,
        capture: bool = True, env: Mapping[str, str] | None = None,
        cwd: str | None = None, timeout: float | None = None,
        hint: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run `argv` and return its result with text stdout/stderr.

    stdin is /dev/null unless `input` is given. With `check`, a non-zero exit raises
    CommandError carrying argv, the exit code and the tail of stderr.
    """
    argv = [str(a) for a in argv]
    log.debug("running %s", shlex.join(argv))
    if isinstance(input, bytes):
        input = input.decode()
    try:
        proc = subprocess.run(
            argv,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.PIPE if capture else None,
            text=True,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as e:
        raise LimaError(f"command {argv[0]!r} not found", hint=hint) from e
    except subprocess.TimeoutExpired as e:
        raise LimaError(f"command {argv[0]!r} timed out after {timeout} s", hint=hint) from e
    if check and proc.returncode != 0:
        raise CommandError(argv, proc.returncode, proc.stderr or "", hint=hint)
    return proc


def which(name: str) -> str | None:
    return shutil.which(name)
