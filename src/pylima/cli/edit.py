"""`limactl edit`."""

from __future__ import annotations

import logging
import os
from typing import Any

import click

from pylima.cli.common import (
    START_OPTION,
    edit_flag_options,
    edit_flags_from,
    get_instance_or_fail,
    is_tty,
    start_if_asked,
)
from pylima.cli.create import TTY_OPTION

log = logging.getLogger("pylima")


@click.command("edit", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("target", required=False, metavar="INSTANCE|FILE.yaml")
@TTY_OPTION
@START_OPTION
@edit_flag_options(new_instance=False)
def edit(target: str | None, tty: bool | None, start: bool | None, **kwargs: Any) -> int:
    """Edit an instance of Lima or a template.

    With flags, the changes are applied without an editor (comments are kept);
    otherwise $EDITOR opens the YAML at a terminal.
    """
    from pylima import api
    from pylima.config.editflags import EditFlags
    from pylima.errors import LimaError

    target = target or os.environ.get("LIMA_INSTANCE") or "default"
    flags = edit_flags_from(kwargs)
    has_flags = flags != EditFlags()
    if target.endswith((".yaml", ".yml")) and os.path.exists(target):
        _edit_file(target, flags, has_flags, tty)
        return 0
    inst = get_instance_or_fail(target)
    if inst.status == "Running":
        raise LimaError("cannot edit a running instance",
                        hint=f"run `limactl stop {inst.name}` first")
    if has_flags:
        if api.edit_instance_with_flags(inst, flags):
            log.info("Instance `%s` configuration edited", inst.name)
        else:
            log.info("Aborting, no changes made to the instance")
            return 0
        return start_if_asked(inst.name, start, tty)
    if tty is None:
        tty = is_tty()
    if not tty:
        raise LimaError("no flags given and no terminal to open an editor on",
                        hint="pass flags such as --cpus or --set, or run at a terminal")
    path = inst.dir / "lima.yaml"
    before = path.read_text()
    after = click.edit(before, extension=".yaml")
    if after is None or after == before:
        log.info("Aborting, no changes made to the instance")
        return 0
    if not after.strip():
        log.info("Aborting, as requested by saving the file with empty content")
        return 0
    try:
        api.save_edited_yaml(inst, after)
    except LimaError as e:
        rejected = inst.dir / "lima.yaml.rejected"
        rejected.write_text(after)
        raise LimaError(f"the YAML is invalid, saved the buffer as `{rejected}`: {e.message}",
                        e.hint) from e
    log.info("Instance `%s` configuration edited", inst.name)
    return start_if_asked(inst.name, start, tty)


def _edit_file(path: str, flags: Any, has_flags: bool, tty: bool | None) -> None:
    from pylima.config.yamlio import apply_changes, dump_roundtrip, load_roundtrip, parse_yaml
    from pylima.config.yq import evaluate_one
    from pylima.errors import LimaError

    data = open(path, "rb").read()
    if has_flags:
        from pylima.config.editflags import yq_expressions
        from pylima.hostinfo import host_facts

        plain = parse_yaml(data, f"file `{path}`")
        exprs, warnings = yq_expressions(flags, new_instance=True,
                                         declared_params=plain.get("param") or {},
                                         home=host_facts().home, cwd=os.getcwd())
        for w in warnings:
            log.warning(w)
        new = evaluate_one(" | ".join(exprs), plain, what="yq expression")
        text = dump_roundtrip(apply_changes(load_roundtrip(data, path), new))
    else:
        if not (tty if tty is not None else is_tty()):
            raise LimaError("no flags given and no terminal to open an editor on")
        edited = click.edit(data.decode(), extension=".yaml")
        if edited is None:
            log.info("Aborting, no changes made")
            return
        text = edited
    parse_yaml(text, f"file `{path}`")
    with open(path, "w") as f:
        f.write(text)
    log.info("File `%s` edited", path)
