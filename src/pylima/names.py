"""Lima's identifier rules for instance and disk names (import-light: on the
`limactl list` path)."""

from __future__ import annotations

import re

_IDENTIFIER = re.compile(r"^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$")
IDENTIFIER_MAX = 76


def validate_identifier(s: str) -> str | None:
    """Lima's identifiers.Validate: None when valid, else the reason."""
    if not s:
        return "identifier must not be empty"
    if len(s) > IDENTIFIER_MAX:
        return f"identifier `{s}` greater than maximum length ({IDENTIFIER_MAX} characters)"
    if not _IDENTIFIER.match(s):
        return f"identifier `{s}` must match {_IDENTIFIER.pattern}"
    return None


def validate_instance_name(name: str) -> str | None:
    reason = validate_identifier(name)
    if reason:
        return f"instance name `{name}` is not a valid identifier: {reason}"
    if name.lower().endswith((".yml", ".yaml")):
        return f"instance name `{name}` must not end with .yml or .yaml suffix"
    return None


def hostname_for(instance_name: str) -> str:
    """The guest's host name: lima-NAME, with dots and underscores made DNS-safe."""
    return "lima-" + re.sub(r"[._]", "-", instance_name)
