#!/usr/bin/env python3
"""Write docs/api.md, the reference of pylima's Python API and pytest plugin, from
the docstrings (`--check`: fail when the file is out of date)."""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parents[1] / "docs" / "api.md"

HEADER = """\
# pylima Python API

Generated from the docstrings by `scripts/gen_api_docs.py`; do not edit by hand.

```python
import pylima

with pylima.vm("template:debian-12", cpus=2) as vm:
    print(vm.run(["uname", "-a"]).stdout)
```

Every name below is importable from `pylima` (imported on first use, so
`import pylima` stays fast). Errors are the `LimaError` tree that `limactl`
prints: `err.message`, `err.hint`.
"""

PLUGIN_HEADER = """
## pytest plugin (`pylima.pytest_plugin`)

Installed with pylima (entry point `pytest11`: `pylima`).
"""


def _doc(obj: Any) -> str:
    doc = inspect.getdoc(obj)
    if not doc:
        raise SystemExit(f"{getattr(obj, '__qualname__', obj)} has no docstring")
    return doc


def _sig(obj: Any) -> str:
    try:
        try:
            sig = inspect.signature(obj, eval_str=True)
        except NameError:  # a name imported for type checking only
            sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return ""
    params = [p for p in sig.parameters.values() if p.name not in ("self", "cls")]
    text = str(sig.replace(parameters=params))
    # names as users write them
    for long, short in (("collections.abc.", ""), ("typing.", ""), ("_pytest.config.", "pytest."),
                        ("_pytest.mark.structures.", "pytest."), ("pathlib.", ""),
                        ("pylima.machine.", "")):
        text = text.replace(long, short)
    return text.replace("'", "") if "'" in text and "= '" not in text else text


def _members(cls: type) -> list[tuple[str, Any]]:
    out = []
    for name, value in cls.__dict__.items():
        if name.startswith("_") and name not in ("__enter__", "__exit__"):
            continue
        out.append((name, value))
    return out


def render() -> str:
    import pylima
    from pylima import pytest_plugin

    parts = [HEADER]
    for name in pylima.__all__:
        obj = getattr(pylima, name)
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue
        if inspect.isclass(obj):
            parts.append(f"\n## class `pylima.{name}{_sig(obj.__init__)}`\n\n{_doc(obj)}\n")
            if issubclass(obj, BaseException):
                continue
            for mname, member in _members(obj):
                if isinstance(member, property):
                    parts.append(f"\n### property `{name}.{mname}`\n\n{_doc(member)}\n")
                elif isinstance(member, classmethod):
                    fn = member.__func__
                    parts.append(f"\n### classmethod `{name}.{mname}{_sig(fn)}`\n\n"
                                 f"{_doc(fn)}\n")
                elif inspect.isfunction(member):
                    if mname in ("__enter__", "__exit__", "__eq__", "__hash__", "__repr__"):
                        continue
                    kind = "async method" if inspect.iscoroutinefunction(member) else "method"
                    parts.append(f"\n### {kind} `{name}.{mname}{_sig(member)}`\n\n"
                                 f"{_doc(member)}\n")
        else:
            parts.append(f"\n## function `pylima.{name}{_sig(obj)}`\n\n{_doc(obj)}\n")
    parts.append(PLUGIN_HEADER)
    parts.append("\n" + _doc(pytest_plugin) + "\n")
    for name in ("lima_vm", "lima_vm_pool"):
        fixture = getattr(pytest_plugin, name)
        fn = getattr(fixture, "__wrapped__", None) or getattr(fixture, "_fixture_function",
                                                                  fixture)
        parts.append(f"\n### fixture `{name}`\n\n{_doc(fn)}\n")
    for name in ("VMPool", "vm_spec", "spec_key", "create_vm", "existing_instance",
                 "log_tail"):
        obj = getattr(pytest_plugin, name)
        parts.append(f"\n### `pytest_plugin.{name}{_sig(obj)}`\n\n{_doc(obj)}\n")
    return "".join(parts)


def main() -> int:
    text = render()
    if "--check" in sys.argv:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is out of date: run scripts/gen_api_docs.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
