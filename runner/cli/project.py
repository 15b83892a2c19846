"""Project commands: `runner init` (a working starter project), `runner new` (a step from a template), and for
authoring in JupyterLab `runner kernel install` (the project's kernel) and `runner lab`."""

from __future__ import annotations

import os
import shlex
import sys

import click
from rich.markup import escape

from runner.cli.group import config_option, err, handles_errors, main, out
from runner.errors import RunnerError


@main.command()
@click.argument("directory", default=".", type=click.Path(file_okay=False))
@handles_errors
def init(directory: str) -> None:
    """Create a working project in DIRECTORY (default: here): runner.yaml, a data dictionary, example data and
    notebooks for its ingest, train, score, monitor and backtest pipelines."""
    from runner.project.scaffold import init_project
    from runner.project.starter import STEPS

    from runner.project.authoring import install_kernel

    written = init_project(directory)
    root = written[0].parent
    for path in written:
        out.print(f"  created {escape(str(path.relative_to(root)))}")
    try:
        _print_kernel(install_kernel(root))
    except RunnerError as error:  # the project is there all the same: say how to get the kernel later
        err.print(f"[yellow]warning:[/] {escape(str(error))}; later: runner kernel install")
    cd = "" if directory == "." else f"cd {shlex.quote(directory)} && "
    pipelines = list(dict.fromkeys(pipeline for pipeline, _, _ in STEPS))
    out.print(f"\nA project in {escape(str(root))}. Next: {escape(cd)}runner validate, then in this order:")
    for pipeline in pipelines:
        out.print(f"  runner run {pipeline}")
    out.print("and look: runner runs, runner models churn, runner review build. Make it yours: "
              "data/dictionary.yaml, runner.yaml, `runner new KIND NAME`; author in JupyterLab: runner lab.")


def _print_kernel(installed) -> None:
    done = "installed" if installed.changed else "up to date"
    out.print(f"  kernel {installed.name} ({escape(installed.display_name)}) {done} in {escape(str(installed.path))}")
    if installed.replaced:
        err.print(f"[yellow]warning:[/] kernel {installed.name} was the kernel of {escape(installed.replaced)}, another "
                  "project of the same name; JupyterLab now runs that project's notebooks with this interpreter")


_sys_prefix_option = click.option(
    "--sys-prefix", is_flag=True,
    help="Install the kernel in this Python environment's share/jupyter (only its JupyterLab sees it) instead of "
         "the user's Jupyter data folder.")


@main.group()
def kernel() -> None:
    """The project's Jupyter kernel, "Notebook Runner (<project>)": what JupyterLab runs its notebooks with."""


@kernel.command("install")
@_sys_prefix_option
@config_option
@handles_errors
def kernel_install(sys_prefix: bool, config_path: str | None) -> None:
    """Install (or update) the project's kernelspec runner-<project> where JupyterLab finds it: it runs this
    runner's Python, with its packages. Safe to run again; `runner init` and `runner lab` run it too."""
    from runner.project.authoring import install_kernel, project_root

    _print_kernel(install_kernel(project_root(config_path), sys_prefix=sys_prefix))
    out.print("  JupyterLab lists it (`jupyter kernelspec list`); `jupyter kernelspec uninstall NAME` removes it")


@main.command(context_settings={"ignore_unknown_options": True})
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="Port to listen on at 127.0.0.1 (default: the first free one from 8888).")
@click.option("--no-browser", is_flag=True, help="Do not open a browser; open the printed URL yourself.")
@_sys_prefix_option
@config_option
@click.argument("jupyter_args", nargs=-1, type=click.UNPROCESSED, metavar="[-- JUPYTER_LAB_OPTIONS]")
@handles_errors
def lab(port: int | None, no_browser: bool, sys_prefix: bool, config_path: str | None,
        jupyter_args: tuple[str, ...]) -> None:
    """Open JupyterLab on the project, with its kernel installed and the default for new notebooks.

    JupyterLab runs in place of this command (this Python's `jupyter lab`, on the project's folder) until Ctrl-C.
    The token in the printed URL is $JUPYTER_TOKEN when set, else a new one. Options after `--` go to
    `jupyter lab` as they are (e.g. `runner lab -- --allow-root` in a container running as root)."""
    from runner.project.authoring import lab as lab_command, project_root

    root = project_root(config_path)
    started = lab_command(root, port=port, open_browser=not no_browser, sys_prefix=sys_prefix,
                          extra=list(jupyter_args))
    _print_kernel(started.kernel)
    out.print(f"JupyterLab on {escape(str(root))}: {started.url}")
    out.print("  stop it with Ctrl-C; before committing a notebook: runner validate NOTEBOOK.ipynb")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(started.argv[0], started.argv, started.env)  # JupyterLab's own signals, output and exit code


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
