"""`limactl template copy|validate|yq` and `limactl validate`."""

from __future__ import annotations

import logging
import os
from typing import Any

import click

log = logging.getLogger("pylima")


def _read(locator: str) -> tuple[Any, dict[str, Any]]:
    from pylima.config.yamlio import parse_yaml
    from pylima.errors import LimaError
    from pylima.templates.locator import read_template

    tmpl = read_template(locator, name="-")
    if not tmpl.data:
        raise LimaError(f"don't know how to interpret `{locator}` as a template locator")
    return tmpl, parse_yaml(tmpl.data, f"template `{tmpl.locator}`")


def filled_config(locator: str) -> dict[str, Any]:
    """Embed all bases and fill in defaults (as `template copy --fill` does)."""
    return filled_loaded(locator).config


def filled_loaded(locator: str) -> Any:
    """`filled_config`, with the loader's warnings (non-strict YAML)."""
    from pylima import api
    from pylima.store import dirs
    from pylima.templates.locator import embed_bases, inst_name_from_yaml_path

    tmpl, doc = _read(locator)
    doc = embed_bases(doc, tmpl.locator)
    name = "default"
    try:
        name = inst_name_from_yaml_path(locator.split(":", 1)[-1])
    except Exception:  # noqa: BLE001 - a name is only cosmetic here
        pass
    return api.load_config(doc, str(dirs.instance_dir(name) / "lima.yaml"),
                           what=f"file `{tmpl.locator}`")


def validate_locators(locators: tuple[str, ...], fill: bool) -> None:
    from pylima.config.load import validate_or_raise
    from pylima.config.yamlio import dump_yaml
    from pylima.errors import LimaError
    from pylima.hostinfo import path_kind
    from pylima.store.networks import network_modes
    from pylima.version import LIMA_COMPAT_VERSION

    for loc in locators:
        try:
            loaded = filled_loaded(loc)
            cfg = loaded.config
            for w in loaded.warnings:  # non-strict YAML, as create warns
                log.warning(w)
            for w in validate_or_raise(cfg, LIMA_COMPAT_VERSION, warn=True,
                                       path_kind=path_kind, network_modes=network_modes):
                log.warning(w)
        except LimaError as e:
            raise LimaError(f"failed to validate YAML file `{loc}`: {e.message}", e.hint) from e
        log.info("`%s`: OK", loc)
        if fill:
            click.echo(dump_yaml(cfg), nl=False)


@click.group("template", context_settings={"help_option_names": ["-h", "--help"]})
def template() -> None:
    """Lima template management (EXPERIMENTAL)."""
    log.warning("`limactl template` is experimental")


@template.command("copy")
@click.argument("source", metavar="TEMPLATE")
@click.argument("dest", required=False, default="-", metavar="[DEST]")
@click.option("--embed", is_flag=True, help="Embed external dependencies into template")
@click.option("--embed-all", is_flag=True, help="Embed all dependencies into template")
@click.option("--fill", is_flag=True, help="Fill defaults")
@click.option("--verbatim", is_flag=True, help="Don't make locators absolute")
def copy(source: str, dest: str, embed: bool, embed_all: bool, fill: bool,
         verbatim: bool) -> None:
    """Copy template."""
    from pylima.config.yamlio import apply_changes, dump_roundtrip, dump_yaml, load_roundtrip
    from pylima.errors import LimaError
    from pylima.templates.locator import _abs_locator, embed_bases

    if fill:
        embed_all = True
    if embed_all:
        embed = True
    if embed and verbatim:
        raise LimaError("--verbatim cannot be used with any of --embed, --embed-all, or --fill")
    tmpl, doc = _read(source)
    if fill:
        text = dump_yaml(filled_config(source))
    elif embed:
        merged = embed_bases(doc, tmpl.locator)
        text = dump_roundtrip(apply_changes(load_roundtrip(tmpl.data, source), merged))
    elif verbatim or not doc.get("base"):
        text = tmpl.data.decode()
    else:
        base = doc["base"]
        refs = [base] if isinstance(base, str) else list(base)
        new = dict(doc)
        new["base"] = [_abs_locator(r, tmpl.locator) if isinstance(r, str) else r for r in refs]
        text = dump_roundtrip(apply_changes(load_roundtrip(tmpl.data, source), new))
    if dest == "-":
        click.echo(text, nl=False)
    else:
        with open(dest, "w") as f:
            f.write(text)


@template.command("validate")
@click.argument("templates", nargs=-1, required=True, metavar="TEMPLATE [TEMPLATE, ...]")
@click.option("--fill", is_flag=True, help="Fill defaults")
def template_validate(templates: tuple[str, ...], fill: bool) -> None:
    """Validate YAML templates."""
    validate_locators(templates, fill)


@template.command("yq")
@click.argument("source", metavar="TEMPLATE")
@click.argument("expr", metavar="EXPR")
def template_yq(source: str, expr: str) -> None:
    """Query template expressions.

    External references are embedded and default values are filled in before the
    expression is evaluated, e.g. `limactl template yq template:default '.images[].location'`.
    """
    from pylima.cli.yq_cmd import render
    from pylima.config.yq import evaluate

    for result in evaluate(expr, filled_config(source)):
        click.echo(render(result, "yaml", 2, unwrap=True, colors=False), nl=False)


@template.command("url")
@click.argument("locator", metavar="CUSTOM_URL")
def template_url(locator: str) -> None:
    """Transform custom template URLs to regular file or https URLs."""
    from pylima.templates.locator import locator_url

    click.echo(locator_url(locator))


@click.command("validate", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("files", nargs=-1, required=True, metavar="FILE.yaml [FILE.yaml, ...]")
@click.option("--fill", is_flag=True, help="Fill defaults")
def validate(files: tuple[str, ...], fill: bool) -> None:
    """Validate YAML files."""
    for f in files:
        if not os.path.exists(f) and ":" not in f:
            from pylima.errors import LimaError

            raise LimaError(f"failed to validate YAML file `{f}`: open {f}: no such file or "
                            "directory")
    validate_locators(files, fill)
