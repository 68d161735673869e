"""`limactl list` output (tables, JSON, YAML, Go templates), free of click so that the
common forms start fast."""

from __future__ import annotations

import json
import os
import sys

TYPE_CHECKING = False  # typing itself costs start-up time on this path

if TYPE_CHECKING:
    from typing import Any

def _log() -> Any:
    """The logger, set up on first use: `limactl list` usually logs nothing, and the
    logging package is not free to import."""
    import logging

    if not logging.getLogger().handlers:
        from pylima import log as pylog

        pylog.setup()
    return logging.getLogger("pylima")


def _is_tty() -> bool:
    """Lima's OutputIsTTY: a terminal, or `_LIMA_OUTPUT_IS_TTY` set (for tests)."""
    if os.environ.get("_LIMA_OUTPUT_IS_TTY"):
        return True
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False

LIST_HELP = """List instances of Lima.

\b
The output can be presented in one of several formats, using the --format <format> flag.
\b
  --format json  - Output in JSON format
  --format yaml  - Output in YAML format
  --format table - Output in table format
  --format '{{ <go template> }}' - If the format begins and ends with '{{ }}', then it is
                                   used as a go template.
\b
Filtering instances:
  --filter EXPR  - Filter instances using yq expression (this is equivalent to
                   --yq 'select(EXPR)'). Can be specified multiple times (AND).
\b
The following legacy flags continue to function:
  --json - equal to '--format json'
"""


def tabwrite(rows: list[list[str]], minwidth: int = 4, padding: int = 4) -> str:
    """Go's text/tabwriter with Lima's settings: every cell but the last of a line
    is padded to its column's width plus `padding`."""
    ncols = max(len(r) for r in rows)
    widths = [0] * ncols
    for r in rows:
        for i, cell in enumerate(r[:-1]):
            widths[i] = max(widths[i], max(len(cell) + padding, minwidth))
    lines = []
    for r in rows:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(r[:-1])] + [r[-1]]
        lines.append("".join(cells))
    return "\n".join(lines) + "\n"


def format_table(instances: list[Any], width: int, all_fields: bool) -> str:
    from pylima.config.units import format_size
    from pylima.hostinfo import host_arch

    types = {i.vm_type for i in instances}
    archs = {i.arch for i in instances}
    col_w = 8
    columns = 5
    hide_type = hide_arch = hide_dir = False
    if width and (columns + 7) * col_w > width and not all_fields:
        hide_type = len(types) == 1
    if not hide_type:
        columns += 1
    if width and (columns + 6) * col_w > width and not all_fields:
        hide_arch = len(archs) == 1 and instances[0].arch == host_arch()
    if not hide_arch:
        columns += 1
    columns += 3
    if width and (columns + 2) * col_w > width and not all_fields:
        hide_dir = True
    # pylima: where an instance runs, when any runs on another host
    show_host = any(i.remote_host for i in instances)
    header = ["NAME", "STATUS", "SSH"] + (["HOST"] if show_host else []) + \
        ([] if hide_type else ["VMTYPE"]) + \
        ([] if hide_arch else ["ARCH"]) + ["CPUS", "MEMORY", "DISK"] + \
        ([] if hide_dir else ["DIR"])
    rows = [header]
    home = os.path.expanduser("~")
    for inst in instances:
        d = str(inst.dir)
        if d.startswith(home):
            d = d.replace(home, "~", 1)
        addr = "127.0.0.1" if inst.config is not None else ""
        row = [inst.name, inst.status, f"{addr}:{inst.ssh_local_port}"]
        if show_host:
            row.append(inst.remote_host or "localhost")
        if not hide_type:
            row.append(inst.vm_type)
        if not hide_arch:
            row.append(inst.arch)
        row += [str(inst.cpus), format_size(inst.memory), format_size(inst.disk)]
        if not hide_dir:
            row.append(d)
        rows.append(row)
    return tabwrite(rows)


def drop_empty_maps(value: Any) -> Any:
    """Lima pipes JSON through yq deleting empty objects (Go's omitempty can't); unset
    (null) fields are omitted as Go's `omitempty` pointers are."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            v = drop_empty_maps(v)
            if v is None or (isinstance(v, dict) and not v):
                continue
            out[k] = v
        return out
    if isinstance(value, list):
        return [drop_empty_maps(v) for v in value]
    return value


def instance_json(inst: Any) -> dict[str, Any]:
    from pylima.store.instance import global_fields

    data = inst.to_json()
    if inst.message:
        data["message"] = inst.message.rstrip("\n")
    data.update(global_fields())
    return data


def run_list(instances: tuple[str, ...] = (), fmt: str | None = None,
             list_fields: bool = False, json_: bool = False, quiet: bool = False,
             all_fields: bool = False, yq_exprs: tuple[str, ...] = (),
             filters: tuple[str, ...] = ()) -> int:
    """`limactl list`; shared by the click command and the fast start-up path."""
    from pylima.errors import LimaError

    format_given = fmt is not None
    fmt = fmt or "table"
    if json_ and format_given:
        raise LimaError("option --json conflicts with option --format")
    if json_:
        fmt = "json"
    if list_fields and format_given:
        raise LimaError("option --list-fields conflicts with option --format")
    if yq_exprs:
        if format_given and fmt not in ("json", "yaml"):
            raise LimaError("option --yq only works with --format json or yaml")
        if list_fields:
            raise LimaError("option --list-fields conflicts with option --yq")
    if filters and list_fields:
        raise LimaError("option --list-fields conflicts with option --filter")
    if quiet and fmt != "table":
        raise LimaError("option --quiet can only be used with '--format table'")

    if list_fields:
        from pylima.store.instance import FORMAT_FIELDS

        print("\n".join(sorted(FORMAT_FIELDS)))
        return 0

    from pylima.store.instance import inspect, instance_names

    all_names = instance_names()
    if not instances and not all_names:
        _log().warning("No instance found. Run `limactl create` to create an instance.")
        return 0
    names: list[str] = []
    unmatched = False
    if instances:
        for arg in instances:
            if arg in all_names:
                names.append(arg)
            else:
                _log().warning("No instance matching %s found.", arg)
                unmatched = True
    else:
        names = all_names

    def finish() -> int:
        if unmatched:
            raise LimaError("unmatched instances")
        return 0

    if quiet and not yq_exprs and not filters:
        for n in names:
            print(n)
        return finish()

    insts = [inspect(n) for n in names]
    if filters:
        from pylima.config.yq import evaluate

        kept = []
        for inst in insts:
            expr = " | ".join(f"select({f})" for f in filters)
            if evaluate(expr, drop_empty_maps(instance_json(inst)), what="filter"):
                kept.append(inst)
        insts = kept
    if quiet and not yq_exprs:
        for inst in insts:
            print(inst.name)
        return finish()
    for inst in insts:
        if inst.errors:
            _log().warning("instance `%s` has errors", inst.name,
                           extra={"fields": {"errors": inst.errors}})

    tty = _is_tty()
    if yq_exprs and not format_given:
        fmt = "json"
    out: list[str] = []
    if fmt == "table":
        try:
            width = os.get_terminal_size().columns if tty else 0
        except OSError:
            width = 0
        if insts:
            out.append(format_table(insts, width, all_fields))
        else:
            out.append(tabwrite([["NAME", "STATUS", "SSH", "VMTYPE", "ARCH", "CPUS", "MEMORY",
                                  "DISK", "DIR"]]))
    elif fmt in ("json", "yaml"):
        expr = " | ".join(yq_exprs) if yq_exprs else "."
        if quiet:
            expr += " | .name"
        for inst in insts:
            data = drop_empty_maps(instance_json(inst))
            if expr == ".":
                results = [data]
            else:
                from pylima.config.yq import evaluate

                results = evaluate(expr, data, what="yq expression")
            for result in results:
                result = drop_empty_maps(result)
                if fmt == "json":
                    if isinstance(result, str):  # yq unwraps scalars
                        out.append(result + "\n")
                    elif tty:
                        from pylima.cli.colour import colorize

                        out.append(colorize(json.dumps(result, indent=4,
                                                       ensure_ascii=False)) + "\n")
                    else:
                        out.append(json.dumps(result, separators=(",", ":"),
                                              ensure_ascii=False) + "\n")
                elif isinstance(result, (dict, list)):
                    from pylima.config.yamlio import dump_yaml

                    text = dump_yaml(result)
                    if tty:
                        from pylima.cli.colour import colorize

                        text = colorize(text)
                    out.append(("---\n" if out or len(insts) > 1 else "") + text)
                else:
                    out.append(f"{result}\n")
    else:
        from pylima.gotemplate import GoTemplateError, parse, render

        try:
            parse(fmt)
        except GoTemplateError as e:
            raise LimaError(f"invalid go template: {e}") from e
        for inst in insts:
            try:
                out.append(render(fmt, inst.format_data()) + "\n")
            except GoTemplateError as e:
                raise LimaError(str(e)) from e
    sys.stdout.write("".join(out))
    return finish()


def fast_list(argv: list[str]) -> int | None:
    """Parse the common `limactl list` forms without click (start-up time matters: tools
    poll `limactl list --json`). Returns None when argv needs the full parser."""
    names: list[str] = []
    kw: dict[str, Any] = {}
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("-q", "--quiet"):
            kw["quiet"] = True
        elif a == "--json":
            kw["json_"] = True
        elif a == "--all-fields":
            kw["all_fields"] = True
        elif a in ("-f", "--format") and i + 1 < len(argv) and "fmt" not in kw:
            kw["fmt"] = argv[i + 1]
            i += 1
        elif a.startswith("--format=") and "fmt" not in kw:
            kw["fmt"] = a[len("--format="):]
        elif a.startswith("-"):
            return None
        else:
            names.append(a)
        i += 1
    return run_list(tuple(names), **kw)
