"""`limactl completion bash|zsh|fish`."""

from __future__ import annotations

import click


@click.group("completion", context_settings={"help_option_names": ["-h", "--help"]})
def completion() -> None:
    """Generate the autocompletion script for the specified shell."""


def _script(shell: str) -> str:
    from click.shell_completion import get_completion_class

    from pylima.cli.main import cli

    cls = get_completion_class(shell)
    assert cls is not None
    return cls(cli, {}, "limactl", "_LIMACTL_COMPLETE").source()


for _shell in ("bash", "zsh", "fish"):
    def _make(shell: str) -> click.Command:
        @click.command(shell, help=f"Generate the autocompletion script for {shell}.")
        def cmd() -> None:
            click.echo(_script(shell))
        return cmd
    completion.add_command(_make(_shell))
