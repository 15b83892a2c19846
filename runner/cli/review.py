"""Review commands: the review site (build, diff, serve) and `runner debug`."""

from __future__ import annotations

import signal
import sys

import click
from rich.markup import escape

from runner.cli.group import raise_keyboard_interrupt, config_option, group_config, handles_errors, main, out
from runner.errors import NotFound, RunnerError


@main.group()
@config_option
@click.pass_context
def review(ctx: click.Context, config_path: str | None) -> None:
    """The review site: every run's pages, trends per pipeline, diffs between runs."""
    ctx.obj = {"config_path": config_path}


@review.command("build")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Folder to write the site into (default: <RUNNER_HOME>/review).")
@click.option("--page-size", type=click.IntRange(min=1), default=None,
              help="Runs per page of the index (default: 50).")
@config_option
@handles_errors
def review_build(out_dir: str | None, page_size: int | None, config_path: str | None) -> None:
    """Write the review site (index, a page per run, trends, diffs) from the run store.

    Into a folder built before, only the pages that changed since are written, and those of runs gone from
    the store removed."""
    from pathlib import Path

    from runner.review.site import build

    result = build(group_config(config_path), Path(out_dir) if out_dir else None, page_size=page_size)
    out.print(f"wrote the review site of {result.runs} run(s) to {escape(str(result.out / 'index.html'))} "
              f"({len(result.written)} file(s) written, {result.kept} unchanged, {len(result.removed)} removed; "
              f"{result.notebooks} notebook(s) copied, {result.diffs} diff(s) rendered)")


@review.command("diff")
@click.argument("run_a")
@click.argument("run_b")
@click.option("--out", "out_file", type=click.Path(dir_okay=False), default=None,
              help="HTML file to write, a page of its own without links (default: "
                   "<RUNNER_HOME>/review/diffs/RUN_A__RUN_B.html, inside the review site, which is brought up to date "
                   "so that the page's links work).")
@config_option
@handles_errors
def review_diff(run_a: str, run_b: str, out_file: str | None, config_path: str | None) -> None:
    """Compare two runs: parameters, scraps and each step's executed notebook (nbdime), as HTML."""
    from pathlib import Path

    from runner.review.pages import write
    from runner.review.site import Site, default_out
    from runner.review.views import safe_name

    config = group_config(config_path)
    for run_id in (run_a, run_b):
        if not safe_name(run_id):
            raise NotFound(f"{run_id!r} is not a run id; `runner runs` lists them")
    site = Site(config)
    page = site.render_diff(run_a, run_b, root=None if out_file else "../")
    if out_file:
        target = Path(out_file)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(page, encoding="utf-8")
        out.print(f"wrote {escape(str(target))}")
        return
    result = site.build(default_out(config))  # the pages it links to: only what changed since the last build
    target = result.out / "diffs" / f"{run_a}__{run_b}.html"
    write(target, page.encode("utf-8"))
    out.print(f"wrote {escape(str(target))} (the review site of {result.runs} run(s) brought up to date: "
              f"{len(result.written)} file(s) written)")


@review.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind; 0.0.0.0 exposes the site.")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True, help="0 picks a free port.")
@config_option
@handles_errors
def review_serve(host: str, port: int, config_path: str | None) -> None:
    """Serve the review site, rendered from the run store on each request (new runs show at once)."""
    from runner.review.site import Site
    from runner.review.serve import make_server

    config = group_config(config_path)
    server = make_server(Site(config), host, port)
    out.print(f"serving the review site of {escape(config.stores.runs)} at {server.url}  (Ctrl-C stops)")
    previous = signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.server_close()


@main.command()
@click.argument("run_id")
@click.argument("step", required=False)
@click.option("--open", "open_lab", is_flag=True, help="Start JupyterLab on the notebook now.")
@config_option
@handles_errors
def debug(run_id: str, step: str | None, open_lab: bool, config_path: str | None) -> None:
    """Write STEP's notebook (default: the first failed step) with the run's parameters, to re-run by hand."""
    import subprocess

    from runner.config import load_config
    from runner.review.debug import environment, write_debug_notebook

    made = write_debug_notebook(load_config(config_path), run_id, step)
    for warning in made.warnings:
        out.print(f"[yellow]warning:[/] {escape(warning)}")
    error = f" ({escape(made.step.error.ename)}: {escape(made.step.error.evalue)})" if made.step.error else ""
    out.print(f"wrote {escape(str(made.path))}: step {made.step.name} of run {run_id}{error}, "
              "with the parameters the run injected; MLFLOW_RUN_ID unset, so MLflow starts its own run")
    if not open_lab:
        out.print(f"open it in JupyterLab: {escape(made.shell_command)}")
        return
    out.print(f"starting JupyterLab: {escape(made.shell_command)}")
    try:
        done = subprocess.run(made.command, env=environment())
    except KeyboardInterrupt:
        return
    except OSError as exc:
        raise RunnerError(f"cannot start JupyterLab ({exc}); install it: pip install jupyterlab") from None
    if done.returncode:
        sys.exit(done.returncode)
