"""`limactl help [COMMAND | TOPIC]`, as cobra's: a command's help, or a help topic."""

from __future__ import annotations

import click

YQ_RESTRICTIONS = """\
yq expressions in pylima, as in Lima

`--set` on create, start, edit and clone, `--yq` and `--filter` on list, `--yq` on
info, `template yq` and provisioning scripts of `mode: yq` take mikefarah yq (v4)
expressions. Such expressions may come from templates you did not write, so in all
of them pylima refuses, with yq's own errors:

  env, strenv, envsubst, and jq's env and $ENV   (the host's environment variables)
      -> "env operations have been disabled"
  load, load_str, load_base64, include, import   (reading files on the host)
      -> "file operations have been disabled"
  system                                         (running commands; yq refuses it too)
      -> "system operations are disabled, ..."

`limactl yq` (and limactl run as `yq`) is yq's own command line and allows env and
file operations; --security-disable-env-ops and --security-disable-file-ops turn
them off there.

pylima evaluates yq expressions on libjq. Where yq and jq differ it follows yq:
`==` and `!=` compare scalars by their text (a number equals the string of its
digits), env(NAME) parses the variable's value as YAML, strenv(NAME) keeps it a
string. yq operators that jq lacks and pylima does not bridge fail with
`invalid input text`.

yq's documentation: https://mikefarah.gitbook.io/yq/
"""

TOPICS = {"yq-restrictions": ("Restrictions on yq expressions in Lima", YQ_RESTRICTIONS)}


@click.command("help", context_settings={"ignore_unknown_options": True},
               add_help_option=False)
@click.argument("topic", nargs=-1)
@click.pass_context
def help_cmd(ctx: click.Context, topic: tuple[str, ...]) -> None:
    """Help about any command"""
    root = ctx.find_root()
    group = root.command
    if not topic:
        click.echo(root.get_help())
        return
    if topic[0] in TOPICS:
        click.echo(TOPICS[topic[0]][1], nl=False)
        return
    cmd: click.Command | None = group
    sub_ctx = root
    for name in topic:
        if not isinstance(cmd, click.Group):
            cmd = None
            break
        nxt = cmd.get_command(sub_ctx, name)
        if nxt is None:
            cmd = None
            break
        cmd = nxt
        sub_ctx = click.Context(cmd, info_name=name, parent=sub_ctx)
    if cmd is None:
        click.echo(f"Unknown help topic {list(topic)!r}".replace("'", "`"), err=True)
        click.echo(root.get_help())
        return
    click.echo(cmd.get_help(sub_ctx))


@click.command("yq-restrictions", context_settings={"help_option_names": ["-h", "--help"]})
def yq_restrictions() -> None:
    """Restrictions on yq expressions in Lima"""
    click.echo(YQ_RESTRICTIONS, nl=False)
