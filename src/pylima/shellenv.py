"""`limactl shell --preserve-env`: which host environment variables reach the guest
shell, as Lima decides it (its default block list, LIMA_SHELLENV_BLOCK with its `+`
form, LIMA_SHELLENV_ALLOW, `*` wildcards). Pure: the caller passes the environment."""

from __future__ import annotations

import re
from collections.abc import Mapping

DEFAULT_BLOCK_LIST = (
    "BASH*", "DISPLAY", "DYLD_*", "EUID", "FPATH", "GID", "GROUP", "HOME", "HOSTNAME",
    "LD_*", "LOGNAME", "OLDPWD", "PATH", "PWD", "SHELL", "SHLVL", "SSH_*", "TERM",
    "TERMINFO", "TMPDIR", "UID", "USER", "XAUTHORITY", "XDG_*", "ZDOTDIR", "ZSH*",
    "_*",  # internal variables, by convention
)

_INVALID = re.compile(r"[^a-zA-Z0-9_*]")


class PatternError(ValueError):
    pass


def _patterns(value: str, variable: str) -> list[str]:
    out = [p.strip() for p in value.split(",") if p.strip()]
    for p in out:
        m = _INVALID.search(p)
        if m:
            raise PatternError(f"Invalid {variable} pattern: pattern `{p}` contains invalid "
                               f"character `{m.group()}` at position {m.start()}")
    return out


def block_list(environ: Mapping[str, str]) -> list[str]:
    value = environ.get("LIMA_SHELLENV_BLOCK", "")
    if not value:
        return list(DEFAULT_BLOCK_LIST)
    patterns = _patterns(value.removeprefix("+"), "LIMA_SHELLENV_BLOCK")
    return [*DEFAULT_BLOCK_LIST, *patterns] if value.startswith("+") else patterns


def allow_list(environ: Mapping[str, str]) -> list[str]:
    return _patterns(environ.get("LIMA_SHELLENV_ALLOW", ""), "LIMA_SHELLENV_ALLOW")


def _matches(name: str, patterns: list[str]) -> bool:
    return any(p == name or re.fullmatch(re.escape(p).replace(r"\*", ".*"), name)
               for p in patterns)


def preserved(environ: Mapping[str, str]) -> list[tuple[str, str]]:
    """The variables --preserve-env passes, in the environment's order: allowed ones,
    then every one that no block pattern matches."""
    allow, block = allow_list(environ), block_list(environ)
    return [(k, v) for k, v in environ.items()
            if (allow and _matches(k, allow)) or not _matches(k, block)]
