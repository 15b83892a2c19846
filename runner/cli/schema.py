"""`runner schema`: the JSON Schema of runner.yaml or of the data dictionary, for editors."""

from __future__ import annotations

import click
from rich.markup import escape

from runner.cli.group import handles_errors, main, out


@main.command()
@click.argument("kind", type=click.Choice(["config", "dictionary"]))
@click.option("--out", "out_file", type=click.Path(dir_okay=False), default=None,
              help="File to write the schema to (default: print it).")
@handles_errors
def schema(kind: str, out_file: str | None) -> None:
    """Print (or write) the JSON Schema of runner.yaml (config) or of the data dictionary (dictionary).

    Editors check and complete the YAML with it: put
    `# yaml-language-server: $schema=<the file>` on the YAML file's first line.
    """
    from pathlib import Path

    from runner.project.schemas import text

    content = text(kind)
    if out_file is None:
        click.echo(content, nl=False)
        return
    target = Path(out_file)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(content, encoding="utf-8")
    out.print(f"wrote {escape(str(target))}")
