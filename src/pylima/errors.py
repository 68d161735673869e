"""The one error tree of pylima.

Library code raises these; only `pylima.cli` turns them into a message and an exit
code. Messages quote values Lima-style, e.g. field `cpus` must be at least 1.
"""

from __future__ import annotations

from collections.abc import Sequence


class LimaError(Exception):
    """Base of every error pylima reports to a user."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class ConfigError(LimaError):
    """A lima.yaml (or template, or --set expression) is invalid."""


class ValidationError(ConfigError):
    """One or more fields failed validation; each message names its field path."""

    def __init__(self, errors: Sequence[str], hint: str | None = None) -> None:
        self.errors = list(errors)
        super().__init__("; ".join(self.errors), hint)


class TemplateError(LimaError):
    """A template locator cannot be resolved or read."""


class InstanceError(LimaError):
    """An instance is missing, in the wrong state, or cannot be changed."""


class InstanceNotFound(InstanceError):
    """No instance of that name exists in `$LIMA_HOME`."""


class LockError(InstanceError):
    """Another limactl command holds the instance lock."""


class CommandError(LimaError):
    """An external command failed. Carries argv, exit code and the tail of stderr."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str = "",
                 hint: str | None = None) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        tail = "\n".join(stderr.strip().splitlines()[-5:])
        self.stderr_tail = tail
        msg = f"command {self.argv[0]!r} failed with exit code {returncode}"
        if tail:
            msg += f": {tail}"
        super().__init__(msg, hint)


class GuestCommandError(LimaError):
    """A command run in a guest (`pylima.Instance.run`) exited non-zero. Carries argv,
    the exit code and the command's stdout and stderr."""

    def __init__(self, argv: Sequence[str] | str, returncode: int,
                 stdout: str | bytes = "", stderr: str | bytes = "",
                 hint: str | None = None) -> None:
        self.argv = argv if isinstance(argv, str) else list(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        err = stderr.decode(errors="replace") if isinstance(stderr, bytes) else stderr
        tail = "\n".join(err.strip().splitlines()[-5:])
        shown = argv if isinstance(argv, str) else " ".join(self.argv)
        msg = f"command `{shown}` failed in the guest with exit code {returncode}"
        if tail:
            msg += f": {tail}"
        super().__init__(msg, hint)
