"""jq/yq expressions (`--set`, `limactl yq`, `list --yq/--filter`) on a real jq engine.

The `jq` package binds libjq, so expressions mean exactly what they mean in jq; yq's
syntax for the updates Lima's docs use (`.cpus = 2`, `.mounts[0].writable = true`,
`.images |= ...`) is the same.
"""

from __future__ import annotations

from typing import Any

from pylima.errors import ConfigError


def evaluate(expr: str, value: Any, *, what: str = "expression") -> list[Any]:
    """All outputs of `expr` applied to `value`."""
    import jq

    try:
        program = jq.compile(expr)
    except ValueError as e:
        raise ConfigError(f"invalid {what} `{expr}`: {_clean(e)}") from e
    try:
        return list(program.input_value(value).all())
    except ValueError as e:
        raise ConfigError(f"failed to evaluate {what} `{expr}`: {_clean(e)}") from e


def evaluate_one(expr: str, value: Any, *, what: str = "expression") -> Any:
    """The single output of an update expression such as `.cpus = 2`."""
    out = evaluate(expr, value, what=what)
    if len(out) != 1:
        raise ConfigError(f"{what} `{expr}` must produce exactly one document, "
                          f"got {len(out)}")
    return out[0]


def _clean(e: Exception) -> str:
    return " ".join(str(e).split())
