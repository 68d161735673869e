"""`limactl completion bash|zsh|fish|powershell`.

bash, zsh and fish use click's completion scripts. click has none for PowerShell:
`PowerShellComplete` below is pylima's. Its script registers an argument completer
for `limactl` that runs `limactl` with `_LIMACTL_COMPLETE=powershell_complete` and
the command line up to the cursor in `COMP_LINE`; pylima answers one completion a
line, `VALUE<TAB>HELP`. Nothing comes back for file and directory arguments, so
that PowerShell completes paths itself.
"""

from __future__ import annotations

import os

import click
from click.shell_completion import (
    CompletionItem,
    ShellComplete,
    add_completion_class,
    split_arg_string,
)

_SOURCE_POWERSHELL = """\
# PowerShell completion for %(prog_name)s (pylima).
# Load it in the current shell (or add this line to your $PROFILE):
#   %(prog_name)s completion powershell | Out-String | Invoke-Expression
Register-ArgumentCompleter -Native -CommandName '%(prog_name)s' -ScriptBlock {
    param($wordToComplete, $commandAst, $cursorPosition)
    $start = $commandAst.Extent.StartOffset
    $line = $commandAst.Extent.Text
    if ($cursorPosition - $start -lt $line.Length) {
        $line = $line.Substring(0, [Math]::Max(0, $cursorPosition - $start))
    }
    if ($wordToComplete -eq '' -and -not $line.EndsWith(' ')) { $line += ' ' }
    $savedComplete = $env:%(complete_var)s
    $savedLine = $env:COMP_LINE
    try {
        $env:%(complete_var)s = 'powershell_complete'
        $env:COMP_LINE = $line
        $answers = & '%(prog_name)s' 2>$null
    } finally {
        $env:%(complete_var)s = $savedComplete
        $env:COMP_LINE = $savedLine
    }
    foreach ($answer in @($answers)) {
        if (-not $answer) { continue }
        $parts = $answer -split "`t", 2
        $value = $parts[0]
        $tip = $value
        if ($parts.Length -gt 1 -and $parts[1]) { $tip = $parts[1] }
        $text = $value
        if ($value -match '[\\s''"`$;&|(){}]') { $text = "'" + ($value -replace "'", "''") + "'" }
        [System.Management.Automation.CompletionResult]::new(
            $text, $value, 'ParameterValue', $tip)
    }
}
"""


class PowerShellComplete(ShellComplete):
    """Shell completion for PowerShell (pylima's; click ships none)."""

    name = "powershell"
    source_template = _SOURCE_POWERSHELL

    def get_completion_args(self) -> tuple[list[str], str]:
        line = os.environ.get("COMP_LINE", "")
        words = split_arg_string(line)
        if line and not line[-1].isspace() and words:
            return words[1:-1], words[-1]
        return words[1:], ""

    def format_completion(self, item: CompletionItem) -> str:
        if item.type in ("file", "dir"):
            return ""  # PowerShell completes paths itself
        help_text = " ".join((item.help or "").split())
        return f"{item.value}\t{help_text}" if help_text else str(item.value)

    def complete(self) -> str:
        args, incomplete = self.get_completion_args()
        lines = (self.format_completion(c) for c in self.get_completions(args, incomplete))
        return "\n".join(ln for ln in lines if ln)


add_completion_class(PowerShellComplete)

SHELLS = ("bash", "zsh", "fish", "powershell")


@click.group("completion", context_settings={"help_option_names": ["-h", "--help"]})
def completion() -> None:
    """Generate the autocompletion script for the specified shell."""


def _script(shell: str) -> str:
    from click.shell_completion import get_completion_class

    from pylima.cli.main import cli

    cls = get_completion_class(shell)
    assert cls is not None
    return cls(cli, {}, "limactl", "_LIMACTL_COMPLETE").source()


def _make(shell: str) -> click.Command:
    @click.command(shell, help=f"Generate the autocompletion script for {shell}.")
    def cmd() -> None:
        click.echo(_script(shell))
    return cmd


for _shell in SHELLS:
    completion.add_command(_make(_shell))
