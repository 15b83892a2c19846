"""Running and looking at runs: `runner run`, `runner validate`, `runner runs`, `runner show`."""

from __future__ import annotations

import json
import os
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from runner.cli.group import (
    config_option,
    err,
    handles_errors,
    json_option,
    main,
    out,
    run_and_report,
    status_text,
    verdict_text,
)

@main.command()
@click.argument("pipeline")
@click.option("-p", "--param", "params", multiple=True, metavar="STEP.NAME=VALUE",
              help="Set a step's parameter; repeatable. The value is coerced to the parameter's type.")
@click.option("--as-of", help="The run's logical date (ISO, e.g. 2026-07-01); default today.")
@click.option("--max-workers", type=click.IntRange(min=1), default=None,
              help="Run up to N independent steps at once (default: defaults.max_workers, 1).")
@click.option("--executor", metavar="NAME", default=None,
              help="Where the steps run: local, dask, or an executor a plugin provides (default: defaults.executor, local).")
@click.option("--address", metavar="URL", default=None,
              help="The executor's address, e.g. the Dask scheduler's tcp://host:8786 (default: executors.NAME.address).")
@click.option("--trigger", type=click.Choice(["manual", "schedule"]), default="manual", show_default=True,
              help="Recorded with the run; `runner export` writes 'schedule' for cron and systemd.")
@click.option("--allow-environment-drift", is_flag=True,
              help="Run steps even where the Python packages differ from those the run was planned with.")
@config_option
@handles_errors
def run(pipeline: str, params: tuple[str, ...], as_of: str | None, max_workers: int | None, executor: str | None,
        address: str | None, trigger: str, allow_environment_drift: bool, config_path: str | None) -> None:
    """Run PIPELINE: check everything, then execute its steps in dependency order."""
    from runner.config import load_config
    from runner.notebook.contract import parse_assignments
    from runner.run.plan import RunRequest

    config = load_config(config_path)
    run_and_report(config, RunRequest(pipeline, parse_assignments(params), as_of=as_of, max_workers=max_workers,
                                      executor=executor, executor_options={"address": address} if address else {},
                                      trigger=trigger, check_environment=not allow_environment_drift))


@main.command()
@click.argument("pipelines", nargs=-1, metavar="[PIPELINE|NOTEBOOK.ipynb]...")
@config_option
@handles_errors
def validate(pipelines: tuple[str, ...], config_path: str | None) -> None:
    """Check runner.yaml, every step's notebook and parameters, without starting a kernel.

    Also: the data dictionary loads and declares each pipeline's purpose and every table the notebooks
    name; every code cell parses; every name imported from runner exists.

    Given NOTEBOOK.ipynb files, checks each notebook on its own, in well under a second and without runner.yaml:
    lists its parameters (name, type, default, help) and every problem, one line each: no parameters cell, not
    Python, a cell that does not parse, a parameter used before the parameters cell, a name runner does not
    have (nb.lod). Exit code 2 on any problem."""
    notebooks = [name for name in pipelines if name.endswith(".ipynb")]
    if notebooks:
        _validate_notebooks(notebooks, exit_now=len(notebooks) == len(pipelines))
        pipelines = tuple(name for name in pipelines if not name.endswith(".ipynb"))
    from runner.project.checks import check_project
    from runner.config import load_config
    from runner.run.plan import validate as validate_pipelines

    config = load_config(config_path)
    plans = validate_pipelines(config, list(pipelines) or None)
    check_project(config, plans)
    for plan in plans:
        out.print(f"[green]ok[/] {plan.pipeline}: {len(plan.steps)} step(s)")
        for step in plan.steps.values():
            values = ", ".join(f"{k}={v!r}" for k, v in step.parameters.items())
            out.print(f"   {step.name}: {step.config.notebook}  {escape(values)}")


def _validate_notebooks(paths: list[str], exit_now: bool) -> None:
    """`runner validate NOTEBOOK.ipynb`: each notebook's parameters on stdout, its problems on stderr (one line
    each); exit 2 after the last if any had one, else 0 when ``exit_now`` (no pipeline to check after)."""
    import sys

    from runner.cli.group import EXIT_USAGE
    from runner.project.authoring import check_notebook

    failed = False
    for path in paths:
        checked = check_notebook(path)
        shown = escape(checked.notebook)
        if checked.parameters is not None:
            status = "[bold red]problems[/]" if checked.problems else "[green]ok[/]"
            out.print(f"{status} {shown}: {len(checked.parameters)} parameter(s)")
            rows = [(p.name, p.type, p.default, f"# {p.help}" if p.help else "") for p in checked.parameters]
            widths = [max((len(row[column]) for row in rows), default=0) for column in range(3)]
            for row in rows:  # one line each, never wrapped: name, type, default as written, help
                line = "  ".join(value.ljust(width) for value, width in zip(row, widths))
                out.print(f"   {escape(line)}  {escape(row[3])}".rstrip())
        for problem in checked.problems:
            err.print(f"[bold red]error:[/] {shown}: {escape(problem)}")
        failed = failed or bool(checked.problems)
    if failed:
        sys.exit(EXIT_USAGE)
    if exit_now:
        sys.exit(0)


@main.command()
@click.option("--pipeline", help="Only runs of this pipeline.")
@click.option("--status", type=click.Choice(["running", "succeeded", "failed", "interrupted", "unreadable"]))
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@json_option
@config_option
@handles_errors
def runs(pipeline: str | None, status: str | None, limit: int, as_json: bool, config_path: str | None) -> None:
    """List runs, newest first. A run whose run.json cannot be read is listed as unreadable, with the file."""
    from runner.config import load_config
    from runner.store.records import RunStore, Unreadable

    entries = RunStore(load_config(config_path).stores.runs).entries(pipeline, status, limit)
    if as_json:
        out.print_json(json.dumps([_with_status(entry) for entry in entries]))
        return
    if not entries:
        out.print("no runs yet; start one with `runner run PIPELINE`")
        return
    if out.is_terminal or os.environ.get("COLUMNS"):
        out.print(_runs_table(entries, out.width))
    else:  # piped (to grep, a file): every column, a run a line, however wide
        table = _runs_table(entries, None)
        Console(file=out.file, highlight=False, soft_wrap=True, width=table.width).print(table)
    for entry in entries:
        if isinstance(entry, Unreadable):
            err.print(f"[yellow]warning:[/] {escape(entry.message)}")


RUNS_LEFT_OUT = ("trigger", "duration", "steps", "as_of")  # `runner runs` drops these first, in this order
RUNS_FOLDED = {"pipeline": 8, "steps": 24}  # columns that fold, and at most the width they keep at least


def _runs_table(records, width: int | None) -> Table:
    """The runs as a table within ``width`` columns (None: as wide as they are; the table's ``width`` is then set
    to that). A run id is never cut or folded: the pipeline and steps columns fold, the columns of RUNS_LEFT_OUT
    are left out in turn, and on the narrowest terminals the pipeline moves under the run id, until the rest fits.
    An unreadable record's row shows its file where the steps go."""
    from rich.text import Text

    from runner.store.records import Unreadable

    rows = [{
        "run id": Text(record.run_id),
        "pipeline": Text(record.pipeline),
        "trigger": Text("-"),
        "as_of": Text("-"),
        "status": Text(record.status, style="bold magenta"),
        "duration": Text("-"),
        "steps": Text(record.path),
    } if isinstance(record, Unreadable) else {
        "run id": Text(record.run_id),
        "pipeline": Text(record.pipeline),
        "trigger": Text(record.trigger),
        "as_of": Text(record.as_of),
        "status": Text.from_markup(status_text(record.effective_status) + (
            f" {status_text(record.verdict.level)}" if record.verdict else "")),
        "duration": Text(f"{record.duration_s:.1f}s" if record.duration_s is not None else "-"),
        "steps": Text.from_markup(" ".join(f"{escape(s.name)}:{status_text(record.step_status(s))}"
                                           for s in record.steps.values())),
    } for record in records]
    natural = {name: max(len(name), *(row[name].cell_len for row in rows)) for name in rows[0]}
    longest_step = max((len(word) for row in rows for word in row["steps"].plain.split()), default=1)
    keeps = {**RUNS_FOLDED, "steps": min(longest_step, RUNS_FOLDED["steps"])}  # one step:status a line
    least = {name: min(natural[name], keeps.get(name, natural[name])) for name in natural}

    def needs(names) -> int:  # columns are two spaces apart (no padding at the edges)
        return sum(least[name] for name in names) + 2 * (len(names) - 1)

    unbounded = width is None
    if unbounded:
        least = natural
        width = needs(list(natural))

    shown = list(natural)
    for name in RUNS_LEFT_OUT:
        if needs(shown) > width:
            shown.remove(name)
    stacked = needs(shown) > width
    if stacked:
        shown.remove("pipeline")
    spare = width - needs([name for name in shown if name not in RUNS_FOLDED]) - 2 * sum(
        name in RUNS_FOLDED for name in shown)
    folded = {}
    if "pipeline" in shown:
        folded["pipeline"] = min(natural["pipeline"], spare - least["steps"] if "steps" in shown else spare)
    if "steps" in shown:
        folded["steps"] = spare - folded.get("pipeline", 0)

    table = Table(box=None, header_style="bold", pad_edge=False, width=width if unbounded else None)
    for name in shown:
        if name in folded:
            table.add_column(name, overflow="fold", max_width=max(1, folded[name]))
        elif name == "run id" and stacked:  # the pipeline folds under the id, which keeps its width
            table.add_column("run id\npipeline", overflow="fold", min_width=natural[name],
                             max_width=natural[name] + max(0, spare))
        else:
            table.add_column(name, no_wrap=True, min_width=natural[name])
    for row in rows:
        if stacked:
            row["run id"] = Text.assemble(row["run id"], "\n", (row["pipeline"].plain, "dim"))
        table.add_row(*(row[name] for name in shown))
    return table


def _with_status(record) -> dict[str, Any]:
    """A record as JSON with its effective status; an unreadable one as its file and what is wrong with it."""
    from runner.store.records import Unreadable

    if isinstance(record, Unreadable):
        return {"run_id": record.run_id, "pipeline": record.pipeline, "status": record.status, "path": record.path,
                "reason": record.reason}
    data = record.model_dump(mode="json")
    data["status"] = record.effective_status
    verdict = record.verdict
    data["verdict"] = verdict.model_dump(mode="json") if verdict else None
    for name, step in record.steps.items():
        data["steps"][name]["status"] = record.step_status(step)
    return data


@main.command()
@click.argument("run_id")
@json_option
@config_option
@handles_errors
def show(run_id: str, as_json: bool, config_path: str | None) -> None:
    """Show one run: its steps, parameters, scraps and where its notebooks are."""
    from runner.config import load_config
    from runner.store.records import VERDICT_SCRAP, RunStore

    store = RunStore(load_config(config_path).stores.runs)
    record = store.read(run_id)
    if as_json:
        out.print_json(json.dumps(_with_status(record)))
        return
    run_dir = store.run_dir(record.pipeline, record.run_id)
    dirty = " (uncommitted changes)" if record.git.dirty else ""
    out.print(f"[bold]run {record.run_id}[/]  {status_text(record.effective_status)}")
    if record.verdict:
        out.print(f"  {verdict_text(record.verdict)}")
        for reason in record.verdict.reasons:
            out.print(f"    - {escape(reason)}")
    if record.effective_status in ("failed", "interrupted"):
        out.print(f"  continue it with `runner resume {record.run_id}` (its steps that succeeded are reused)")
    for label, value in (
        ("pipeline", record.pipeline), ("trigger", record.trigger), ("as_of", record.as_of),
        *((("scheduled", record.scheduled_for),) if record.scheduled_for else ()),
        *((("from run", f"{record.origin} ({record.trigger} of it)"),) if record.origin else ()),
        ("started", record.created_at), ("ended", record.ended_at or "-"),
        ("duration", f"{record.duration_s:.1f}s" if record.duration_s is not None else "-"),
        ("git", f"{record.git.commit or '-'}{dirty}"), ("mlflow run", record.mlflow_run_id or "-"),
        ("folder", run_dir),
    ):
        out.print(f"  {label:<10} {escape(str(value))}")
    for step in record.steps.values():
        took = f" {step.duration_s:.1f}s" if step.duration_s is not None else ""
        judged = f" {verdict_text(step.verdict, reasons=True)}" if step.verdict else ""
        out.print(f"\n  [bold]{step.name}[/] {status_text(record.step_status(step))}{took}{judged}  {step.notebook} "
                  f"(sha256 {step.notebook_sha256[:12]})")
        if step.reused_from:
            out.print(f"    reused from run {step.reused_from} (not run again)")
        if step.error:
            cell = f" in {escape(step.error.where())}" if step.error.where() else ""
            out.print(f"    [red]error{cell}: {escape(step.error.ename)}: {escape(step.error.evalue)}[/]")
        for attempt in step.attempts[:-1] if len(step.attempts) > 1 else ():
            why = f"{attempt.error.ename}: {attempt.error.evalue}" if attempt.error else attempt.status
            out.print(f"    attempt {attempt.number} {status_text(attempt.status)}: {escape(why)} -> {run_dir}/{attempt.output}")
        if step.parameters:
            out.print(f"    parameters: {escape(json.dumps(step.parameters, default=str))}")
        scraps = {name: value for name, value in step.scraps.items() if name != VERDICT_SCRAP}  # shown above
        if scraps:
            out.print(f"    scraps:     {escape(json.dumps(scraps, default=str))[:500]}")
        if step.output:
            out.print(f"    notebook:   {run_dir}/{step.output}")
        if step.mlflow_run_id:
            out.print(f"    mlflow run: {step.mlflow_run_id}")
    for delivery in record.notifications:
        state = "[green]sent[/]" if delivery.get("ok") else f"[red]not sent[/] ({escape(str(delivery.get('detail')))})"
        out.print(f"  failure notice to {delivery.get('channel')} {escape(str(delivery.get('target')))}: {state}")
    for warning in record.warnings:
        out.print(f"[yellow]warning:[/] {escape(warning)}")
