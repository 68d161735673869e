"""Built-in templates shipped with pylima as package data.

The YAML files next to this module follow Lima's layout, so that
``base: template:NAME`` references written for Lima resolve the same way:

* top-level ``NAME.yaml`` files are user-facing templates (``template:debian``);
* ``experimental/NAME.yaml`` would hold templates listed with their prefix;
* ``_images/`` and ``_default/`` hold building blocks that templates pull in
  through ``base:``.  They can be read by name but are never listed.

Some names are aliases of others (``ubuntu`` for the current LTS, ``debian``
for the current stable release, ...). In the source tree they are symlinks;
an installed wheel carries plain copies, which reads the same.
"""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable

__all__ = ["BUILTIN_ROOT", "builtin_template_names", "read_builtin_template"]

BUILTIN_ROOT: Traversable = files(__name__)

_SUFFIX = ".yaml"


def _walk(node: Traversable, prefix: str) -> list[str]:
    """Template names (path relative to the root, minus ".yaml") under NODE."""
    names: list[str] = []
    for child in node.iterdir():
        if child.is_dir():
            names.extend(_walk(child, f"{prefix}{child.name}/"))
            continue
        base = child.name
        # Hidden files and anything that is not YAML are not templates.
        if base.startswith(".") or not base.endswith(_SUFFIX):
            continue
        names.append(prefix + base[: -len(_SUFFIX)])
    return names


def builtin_template_names() -> list[str]:
    """Names printed by ``limactl create --list-templates`` for built-ins.

    Every non-hidden ``*.yaml`` file, searched recursively, is named by its
    path relative to the template root without the extension (so nested
    templates keep their directory, e.g. ``experimental/foo``). Names are
    sorted by plain string comparison, and names starting with ``_`` (the
    ``_images/`` and ``_default/`` building blocks) are left out.
    """
    names = sorted(set(_walk(BUILTIN_ROOT, "")))
    return [name for name in names if not name.startswith("_")]


def _file_name(name: str) -> str:
    """Append ".yaml" the way template names are resolved.

    The extension is added when NAME has none, or when what looks like an
    extension starts with a digit ("ubuntu-24.04" is not a ".04" file).
    """
    last = name.rsplit("/", 1)[-1]
    dot = last.rfind(".")
    ext = last[dot:] if dot >= 0 else ""
    if len(ext) < 2 or ext[1].isdigit():
        return name + _SUFFIX
    return name


def read_builtin_template(name: str) -> bytes | None:
    """Return the bytes of built-in template NAME, or None if there is none.

    NAME uses forward slashes ("default", "_images/ubuntu",
    "experimental/foo") and may end in ".yaml". Names containing ".." or
    starting with "/" are refused, so nothing outside the package is read,
    and so are names of files that are not YAML.
    """
    if not name or ".." in name or name.startswith(("/", "\\")) or "\\" in name:
        return None
    file_name = _file_name(name)
    # Only YAML is package data; the module's own sources are not templates.
    if not file_name.endswith(_SUFFIX):
        return None
    parts = [part for part in file_name.split("/") if part not in ("", ".")]
    if not parts:
        return None
    node = BUILTIN_ROOT
    for part in parts:
        node = node.joinpath(part)
    try:
        if not node.is_file():
            return None
        return node.read_bytes()
    except OSError:
        return None
