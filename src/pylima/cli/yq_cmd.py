"""`limactl yq`: a YAML processor on the same jq engine as `--set`."""

from __future__ import annotations

import json
import sys
from typing import Any

import click


def print_results(results: list[Any], output: str, raw: bool) -> None:
    from pylima.config.yamlio import dump_yaml

    for r in results:
        if raw and isinstance(r, str):
            click.echo(r)
        elif output == "json":
            click.echo(json.dumps(r, indent=2, ensure_ascii=False))
        elif isinstance(r, (dict, list)):
            click.echo(dump_yaml(r), nl=False)
        else:
            click.echo(json.dumps(r) if r is None or isinstance(r, bool) else r)


@click.command("yq", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("expr")
@click.argument("files", nargs=-1)
@click.option("-o", "--output-format", "output", type=click.Choice(["yaml", "json", "y", "j"]),
              default="yaml", help="Output format")
@click.option("-r", "--unwrapScalar", "raw", is_flag=True, default=True,
              help="Print scalars without quotes (default)")
@click.option("-i", "--inplace", is_flag=True, help="Update the file in place (comments kept)")
def yq_cmd(expr: str, files: tuple[str, ...], output: str, raw: bool, inplace: bool) -> None:
    """Use the builtin YAML processor (jq expression syntax) on FILES or stdin."""
    from pylima.config.yamlio import apply_changes, dump_roundtrip, load_roundtrip
    from pylima.config.yq import evaluate, evaluate_one
    from pylima.errors import LimaError

    output = {"y": "yaml", "j": "json"}.get(output, output)
    if inplace:
        if not files:
            raise LimaError("--inplace needs a file")
        for path in files:
            data = open(path, "rb").read()
            doc = load_roundtrip(data, path)
            from pylima.config.yamlio import to_plain

            new = evaluate_one(expr, to_plain(doc))
            with open(path, "w") as f:
                f.write(dump_roundtrip(apply_changes(doc, new)))
        return
    import yaml

    sources = [(p, open(p, "rb").read()) for p in files] if files else \
        [("-", sys.stdin.buffer.read())]
    for name, data in sources:
        try:
            docs = list(yaml.safe_load_all(data))
        except yaml.YAMLError as e:
            raise LimaError(f"failed to parse `{name}`: {' '.join(str(e).split())}") from e
        for doc in docs or [None]:
            print_results(evaluate(expr, doc), output, raw)
