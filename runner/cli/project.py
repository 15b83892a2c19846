"""Project commands: `runner init` (a working starter project) and `runner new` (a step from a template)."""

from __future__ import annotations

import shlex

import click
from rich.markup import escape

from runner.cli.group import config_option, handles_errors, main, out


@main.command()
@click.argument("directory", default=".", type=click.Path(file_okay=False))
@handles_errors
def init(directory: str) -> None:
    """Create a working project in DIRECTORY (default: here): runner.yaml, a data dictionary, example data and
    notebooks for its ingest, train, score, monitor and backtest pipelines."""
    from runner.project.scaffold import init_project
    from runner.project.starter import STEPS

    written = init_project(directory)
    root = written[0].parent
    for path in written:
        out.print(f"  created {escape(str(path.relative_to(root)))}")
    cd = "" if directory == "." else f"cd {shlex.quote(directory)} && "
    pipelines = list(dict.fromkeys(pipeline for pipeline, _, _ in STEPS))
    out.print(f"\nA project in {escape(str(root))}. Next: {escape(cd)}runner validate, then in this order:")
    for pipeline in pipelines:
        out.print(f"  runner run {pipeline}")
    out.print("and look: runner runs, runner models churn, runner review build. Make it yours: "
              "data/dictionary.yaml, runner.yaml, `runner new KIND NAME`.")


@main.command()
@click.argument("kind")
@click.argument("name")
@click.option("--pipeline", default=None,
              help="Pipeline to add the step to; created if new (default: the config's only pipeline).")
@click.option("--purpose", default="analytics", show_default=True, help="Purpose of a newly created pipeline.")
@click.option("--table", default=None, help="Warehouse table the notebook reads (default: the data dictionary's only table).")
@click.option("--label", default="label", show_default=True, help="The 0/1 column a train or backtest notebook learns.")
@click.option("--model", default=None, help="Registered model name (default: the pipeline's name).")
@config_option
@handles_errors
def new(kind: str, name: str, pipeline: str | None, purpose: str, table: str | None, label: str, model: str | None,
        config_path: str | None) -> None:
    """Create step NAME's notebook from the KIND template (ingest, train, score, monitor, backtest) and add it to
    runner.yaml."""
    from runner.config import config_path as resolve_config_path
    from runner.project.scaffold import new_notebook

    notebook, step = new_notebook(config_path, kind, name, pipeline=pipeline, purpose=purpose, table=table,
                                  label=label, model=model)
    pipeline = notebook.parent.name  # notebooks/<pipeline>/<name>.ipynb
    config = f" --config {shlex.quote(config_path)}" if config_path else ""
    out.print(f"created {escape(str(notebook))}, step {step} of pipeline {pipeline} in "
              f"{escape(str(resolve_config_path(config_path)))}; fill in its parameters, then try "
              f"`runner validate {pipeline}{escape(config)}` and `runner run {pipeline}{escape(config)}`")
