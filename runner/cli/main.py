"""The ``runner`` command line: the only module that prints or exits.

Exit codes: 0 all good; 1 a step failed (or the run could not be tracked); 2 usage, config or
parameter errors (nothing ran); 130 the run was interrupted.
"""

from __future__ import annotations

import functools
import json
import re
import signal
import sys
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from runner.errors import ConfigError, NotFound, ParameterError, RunnerError
from runner.secrets import strip_userinfo

EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130
STATUS_STYLE = {
    "succeeded": "green",
    "failed": "bold red",
    "running": "cyan",
    "interrupted": "yellow",
    "ok": "green",
    "warn": "yellow",
    "alert": "bold red",
    "skipped": "dim",
    "pending": "dim",
}



class _Masked:
    """sys.stdout or sys.stderr (whichever is current: tests swap them), with the credentials of every
    URL written through it masked: whatever the CLI prints, a password in a URL is not shown."""

    def __init__(self, name: str):
        self._name = name

    def write(self, text: str) -> int:
        return getattr(sys, self._name).write(strip_userinfo(text))

    def __getattr__(self, attribute: str) -> Any:
        return getattr(getattr(sys, self._name), attribute)


out = Console(file=_Masked("stdout"), highlight=False, soft_wrap=True)
err = Console(file=_Masked("stderr"), highlight=False, soft_wrap=True)


def _fail(error: RunnerError) -> None:
    err.print(f"[bold red]error:[/] {escape(str(error))}")
    sys.exit(EXIT_USAGE if isinstance(error, (ConfigError, ParameterError, NotFound)) else EXIT_FAILED)


def usage_error(message: str) -> NoReturn:
    """A mistake on the command line that click's own checks do not catch: one line on stderr, exit 2."""
    err.print(f"[bold red]error:[/] {escape(message)}")
    sys.exit(EXIT_USAGE)


def handles_errors(command):
    """Turn a RunnerError into one line on stderr and the right exit code; refuse undecodable arguments first."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        undecodable = _undecodable(kwargs)
        if undecodable:
            usage_error(undecodable)
        try:
            return command(*args, **kwargs)
        except RunnerError as error:
            _fail(error)

    return wrapper


def _undecodable(values: dict[str, Any]) -> str | None:
    """Why a command-line value is not text, or None. Python keeps argument bytes that are not UTF-8 as
    lone surrogates, which no record, notebook or message could hold; file paths (click.Path) may be any
    bytes and are left alone."""
    context = click.get_current_context(silent=True)
    params = {param.name: param for param in context.command.params} if context else {}
    for name, value in values.items():
        param = params.get(name)
        if param is None or isinstance(param.type, click.Path):
            continue
        for item in value if isinstance(value, (tuple, list)) else (value,):
            if not isinstance(item, str):
                continue
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                try:
                    shown = item.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
                except UnicodeEncodeError:
                    shown = item.encode("utf-8", "backslashreplace").decode("utf-8")
                label = "/".join(param.opts) if isinstance(param, click.Option) else param.human_readable_name
                return (f"{label} '{shown}': not UTF-8 text; give it as UTF-8 (check the encoding of the terminal "
                        "or script that passes it)")
    return None


config_option = click.option(
    "--config", "config_path", type=click.Path(dir_okay=False), default=None,
    help="runner.yaml to use (default: ./runner.yaml or $RUNNER_CONFIG).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


def _status(status: str) -> str:
    return f"[{STATUS_STYLE.get(status, 'white')}]{status}[/]"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="notebook-runner")
def main() -> None:
    """Run parameterized Jupyter notebooks as production pipelines."""


@main.command()
@click.argument("pipeline")
@click.option("-p", "--param", "params", multiple=True, metavar="STEP.NAME=VALUE",
              help="Set a step's parameter; repeatable. The value is coerced to the parameter's type.")
@click.option("--as-of", help="The run's logical date (ISO, e.g. 2026-07-01); default today.")
@click.option("--max-workers", type=click.IntRange(min=1), default=None,
              help="Run up to N independent steps at once (default: defaults.max_workers, 1).")
@click.option("--executor", metavar="NAME", default=None,
              help="Where the steps run: local, or an executor a plugin provides (default: defaults.executor, local).")
@click.option("--trigger", type=click.Choice(["manual", "schedule"]), default="manual", show_default=True,
              help="Recorded with the run; `runner export` writes 'schedule' for cron and systemd.")
@config_option
@handles_errors
def run(pipeline: str, params: tuple[str, ...], as_of: str | None, max_workers: int | None, executor: str | None,
        trigger: str, config_path: str | None) -> None:
    """Run PIPELINE: check everything, then execute its steps in dependency order."""
    from runner.config import load_config
    from runner.notebook.contract import parse_assignments
    from runner.run.executors import choose as choose_executor
    from runner.run.plan import RunRequest

    config = load_config(config_path)
    executor = choose_executor(executor, config)  # an unknown name or a broken plugin stops here: nothing ran
    run_and_report(config, RunRequest(pipeline, parse_assignments(params), as_of=as_of, max_workers=max_workers,
                                      executor=executor, trigger=trigger))


def run_and_report(config, request) -> None:
    """Run with a progress display; print the outcome and exit 1 (failed) or 130 (interrupted) if not ok."""
    from runner.run.pipeline import run as run_pipeline
    from runner.store.records import RunStore

    progress = _Progress()
    previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        with progress:
            record = run_pipeline(config, request, observer=progress)
    except KeyboardInterrupt:
        # Once steps run, the run itself handles an interrupt and returns its record: this one came
        # before (while the notebooks' parameters were checked), or again while the steps were stopped.
        if progress.tasks:
            err.print(f"interrupted again while the steps of {escape(request.pipeline)} were stopped; "
                      "`runner runs` shows the run as interrupted")
        else:
            err.print(f"interrupted before any step of {escape(request.pipeline)} started; nothing ran")
        sys.exit(EXIT_INTERRUPTED)
    finally:
        signal.signal(signal.SIGTERM, previous)
    store = RunStore(config.stores.runs)
    run_dir = store.run_dir(record.pipeline, record.run_id)
    out.print(f"run {record.run_id} {_status(record.status)} in {record.duration_s:.1f}s  ({run_dir})")
    for step in record.failed_steps():
        cell = f" in cell {step.error.cell_index}" if step.error and step.error.cell_index is not None else ""
        what = f"{step.error.ename}: {step.error.evalue}" if step.error else "failed"
        where = f"{run_dir}/{step.output}" if step.output else step.notebook
        out.print(f"[bold red]FAILED[/] {step.name}{cell}: {escape(what)} -> {where}")
    for warning in record.warnings:
        err.print(f"[yellow]warning:[/] {escape(warning)}")
    if record.status == "interrupted":
        sys.exit(EXIT_INTERRUPTED)
    if record.status != "succeeded":
        sys.exit(EXIT_FAILED)


def _raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


class _Progress:
    """Steps and cells as they run: a live display on a terminal, one line per event elsewhere."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.live = err.is_terminal
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("cells"),
            TimeElapsedColumn(), console=err, disable=not self.live,
        )
        self.tasks: dict[str, Any] = {}

    def __enter__(self) -> _Progress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def run_started(self, record) -> None:
        err.print(f"run {record.run_id}: pipeline {record.pipeline}, as_of {record.as_of}, "
                  f"{len(record.steps)} step(s)")

    def step_started(self, step: str) -> None:
        self.tasks[step] = self.progress.add_task(step, total=None)
        if not self.live:
            err.print(f"  {step}: started")

    def cell_started(self, step: str, index: int, total: int) -> None:
        self.progress.update(self.tasks[step], completed=index, total=total)

    def step_retrying(self, step: str, attempt: int, delay: float, why: str) -> None:
        err.print(f"  {step}: [yellow]attempt {attempt} in {delay:g}s[/] after {escape(why)}")

    def step_finished(self, step) -> None:
        if step.name in self.tasks:
            task = self.tasks[step.name]
            self.progress.update(task, description=f"{step.name} {_status(step.status)}",
                                 completed=self.progress.tasks[task].total or 0)
        if not self.live or step.name not in self.tasks:
            took = f" in {step.duration_s:.1f}s" if step.duration_s is not None else ""
            err.print(f"  {step.name}: {_status(step.status)}{took}")


@main.command()
@click.argument("pipelines", nargs=-1)
@config_option
@handles_errors
def validate(pipelines: tuple[str, ...], config_path: str | None) -> None:
    """Check runner.yaml, every step's notebook and parameters, without starting a kernel.

    Also: the data dictionary loads and declares each pipeline's purpose and every table the notebooks
    name; every code cell parses; every name imported from runner exists."""
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
    out.print(_runs_table(entries, out.width))
    for entry in entries:
        if isinstance(entry, Unreadable):
            err.print(f"[yellow]warning:[/] {escape(entry.message)}")


RUNS_LEFT_OUT = ("trigger", "duration", "steps", "as_of")  # `runner runs` drops these first, in this order
RUNS_FOLDED = {"pipeline": 8, "steps": 24}  # columns that fold, and at most the width they keep at least


def _runs_table(records, width: int) -> Table:
    """The runs as a table within ``width`` columns. A run id is never cut or folded: the pipeline and
    steps columns fold, the columns of RUNS_LEFT_OUT are left out in turn, and on the narrowest
    terminals the pipeline moves under the run id, until the rest fits. An unreadable record's row
    shows its file where the steps go."""
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
        "status": Text.from_markup(_status(record.effective_status)),
        "duration": Text(f"{record.duration_s:.1f}s" if record.duration_s is not None else "-"),
        "steps": Text.from_markup(" ".join(f"{escape(s.name)}:{_status(s.status)}" for s in record.steps.values())),
    } for record in records]
    natural = {name: max(len(name), *(row[name].cell_len for row in rows)) for name in rows[0]}
    longest_step = max((len(word) for row in rows for word in row["steps"].plain.split()), default=1)
    keeps = {**RUNS_FOLDED, "steps": min(longest_step, RUNS_FOLDED["steps"])}  # one step:status a line
    least = {name: min(natural[name], keeps.get(name, natural[name])) for name in natural}

    def needs(names) -> int:  # columns are two spaces apart (no padding at the edges)
        return sum(least[name] for name in names) + 2 * (len(names) - 1)

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

    table = Table(box=None, header_style="bold", pad_edge=False)
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
    return data


@main.command()
@click.argument("run_id")
@json_option
@config_option
@handles_errors
def show(run_id: str, as_json: bool, config_path: str | None) -> None:
    """Show one run: its steps, parameters, scraps and where its notebooks are."""
    from runner.config import load_config
    from runner.store.records import RunStore

    store = RunStore(load_config(config_path).stores.runs)
    record = store.read(run_id)
    if as_json:
        out.print_json(json.dumps(_with_status(record)))
        return
    run_dir = store.run_dir(record.pipeline, record.run_id)
    dirty = " (uncommitted changes)" if record.git.dirty else ""
    out.print(f"[bold]run {record.run_id}[/]  {_status(record.effective_status)}")
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
        out.print(f"\n  [bold]{step.name}[/] {_status(step.status)}{took}  {step.notebook} "
                  f"(sha256 {step.notebook_sha256[:12]})")
        if step.reused_from:
            out.print(f"    reused from run {step.reused_from} (not run again)")
        if step.error:
            cell = f" in cell {step.error.cell_index}" if step.error.cell_index is not None else ""
            out.print(f"    [red]error{cell}: {escape(step.error.ename)}: {escape(step.error.evalue)}[/]")
        for attempt in step.attempts[:-1] if len(step.attempts) > 1 else ():
            why = f"{attempt.error.ename}: {attempt.error.evalue}" if attempt.error else attempt.status
            out.print(f"    attempt {attempt.number} {_status(attempt.status)}: {escape(why)} -> {run_dir}/{attempt.output}")
        if step.parameters:
            out.print(f"    parameters: {escape(json.dumps(step.parameters, default=str))}")
        if step.scraps:
            out.print(f"    scraps:     {escape(json.dumps(step.scraps, default=str))[:500]}")
        if step.output:
            out.print(f"    notebook:   {run_dir}/{step.output}")
        if step.mlflow_run_id:
            out.print(f"    mlflow run: {step.mlflow_run_id}")
    for delivery in record.notifications:
        state = "[green]sent[/]" if delivery.get("ok") else f"[red]not sent[/] ({escape(str(delivery.get('detail')))})"
        out.print(f"  failure notice to {delivery.get('channel')} {escape(str(delivery.get('target')))}: {state}")
    for warning in record.warnings:
        out.print(f"[yellow]warning:[/] {escape(warning)}")


def _month(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """A YYYY-MM option, checked here: pandas would raise on 2026-13 only once the replay started."""
    match = re.fullmatch(r"(\d{4})-(\d{2})", value.strip())
    if not match or not 1 <= int(match.group(2)) <= 12:
        raise click.BadParameter(f"{value!r} is not a month; give it as YYYY-MM, e.g. 2026-01")
    return value.strip()


@main.command()
@click.option("--start", default="2026-01", show_default=True, callback=_month,
              help="First month of the replay (YYYY-MM).")
@click.option("--months", type=click.IntRange(min=1, max=36), default=12, show_default=True)
@click.option("--train-every", type=click.IntRange(min=1), default=3, show_default=True,
              help="Retrain every N months.")
@click.option("--reset/--keep", default=False, help="Empty the embedded stores first (.runner/).")
@config_option
@handles_errors
def demo(start: str, months: int, train_every: int, reset: bool, config_path: str | None) -> None:
    """Replay monthly batches through the reference credit pipelines: ingest, train, score, monitor."""
    from runner.config import load_config
    from runner.demo.replay import MODEL, DemoPlan, replay, steps, summary
    from runner.demo.replay import reset as reset_stores

    config = load_config(config_path)
    if reset:
        for path in reset_stores(config):
            err.print(f"removed {path}")
    plan = DemoPlan(start=start, months=months, train_every=train_every)
    total = len(steps(plan))
    done = []

    def report(record) -> None:
        done.append(record)
        scraps = {name: step.scraps for name, step in record.steps.items()}
        detail = ""
        if "train" in scraps:
            detail = f"auc {scraps['train'].get('auc', float('nan')):.3f}, v{scraps['train'].get('model_version')} " \
                     f"{scraps['train'].get('model_decision')}"
        elif "monitor" in scraps:
            detail = f"{scraps['score'].get('rows_scored')} scored, monitor {scraps['monitor'].get('status')} " \
                     f"(max PSI {scraps['monitor'].get('max_psi')})"
        elif "backtest" in scraps:
            backtest = scraps["backtest"]
            detail = f"{backtest.get('backtest_month')} labels: {backtest.get('backtest_status')}, " \
                     f"champion AUC {backtest.get('champion_auc')}"
        elif "ingest" in scraps:
            detail = f"{scraps['ingest'].get('rows_written')} rows in, {scraps['ingest'].get('rows_rejected')} rejected"
        out.print(f"[{len(done):>2}/{total}] {record.as_of} {record.pipeline:<14} {_status(record.status)} "
                  f"{record.duration_s:5.1f}s  {escape(detail)}")

    records = replay(config, plan, on_run=report)
    facts = summary(config, records)
    out.print(f"\n[bold]Demo finished:[/] {facts['succeeded']}/{facts['runs']} runs succeeded")
    out.print(f"  champion      {MODEL} v{facts['champion_version']} ({escape(str(facts['champion_reason']))})")
    out.print(f"  latest AUC    {facts['latest_auc']}")
    drift = ", ".join(f"{month} {_status(state or '-')}" for month, state, _ in facts["drift_by_month"])
    out.print(f"  monitoring    {drift}")
    if facts["backtests"]:
        backtests = ", ".join(f"{month} {_status(state)} (AUC {auc})" for month, state, auc in facts["backtests"])
        out.print(f"  backtests     {backtests}")
    out.print(f"  notebooks     {facts['run_store']}/<pipeline>/<run_id>/<step>.ipynb and .html (`runner runs`)")
    out.print(f"  MLflow        {facts['mlflow_ui']}")
    out.print("  schedules     `runner schedule list`; `runner scheduler` runs the pipelines at month-end")
    if facts["failed"]:
        out.print(f"[bold red]failed run:[/] {facts['failed'][0]} (`runner show {facts['failed'][0]}`)")
        sys.exit(EXIT_FAILED)


@main.command()
@click.argument("model")
@click.argument("version")
@click.option("--reason", required=True, help="Why: recorded with the promotion.")
@click.option("--by", default=None, help="Who (default: $RUNNER_USER or the login name).")
@config_option
@handles_errors
def promote(model: str, version: str, reason: str, by: str | None, config_path: str | None) -> None:
    """Make VERSION of MODEL the champion (an older version: a rollback). Records who and why."""
    from runner.config import load_config
    from runner.nb import user
    from runner.tracking.registry import Registry

    reason = reason.strip()
    if not reason:
        usage_error('--reason is empty; say why the champion changes, e.g. --reason "beats v3 on the March holdout": '
                    "it is kept with the promotion")
    registry = Registry(load_config(config_path).stores.tracking_uri)
    entry = registry.promote(model, version, by or user(), reason)
    was = f" (was v{entry['previous']})" if entry["previous"] else ""
    out.print(f"{model} v{version} is the champion{was}; by {entry['by']} at {entry['at']}: {escape(reason)}")


@main.command()
@click.argument("model")
@click.option("--all", "every", is_flag=True, help="Also versions trained by hand (namespaces user:<name>).")
@json_option
@config_option
@handles_errors
def models(model: str, every: bool, as_json: bool, config_path: str | None) -> None:
    """List MODEL's production versions with aliases, metrics and who trained or promoted them."""
    from runner.config import load_config
    from runner.tracking.registry import STATUS_TAG, Registry

    config = load_config(config_path)
    registry = Registry(config.stores.tracking_uri)
    versions = registry.versions(model, namespace=None if every else "production")
    if as_json:
        out.print_json(json.dumps({"versions": versions, "history": registry.history(model) if versions else []}))
        return
    if not versions:
        out.print(f"no {'' if every else 'production '}versions of model {escape(model)!r}"
                  + ("" if every else "; `--all` shows versions trained by hand too"))
        return
    metric = config.model_policy(model).metric
    table = Table(box=None, header_style="bold")
    for column in ("version", "aliases", metric, "trained by", "trained at", "training data", "status",
                   *(("namespace",) if every else ()), "promotion"):
        table.add_column(column, no_wrap=column in ("version", "aliases"), overflow="fold")
    for v in versions:
        tags = v["tags"]
        table.add_row(v["version"], ", ".join(v["aliases"]), tags.get(metric, "-"), escape(tags.get("trained_by", "-")),
                      tags.get("trained_at", "-")[:16].replace("T", " "), tags.get("training_data_digest", "-")[:12],
                      tags.get(STATUS_TAG, "-"), *((escape(v["namespace"]),) if every else ()),
                      escape(tags.get("promotion_reason", "")))
    out.print(table)


@main.group()
def data() -> None:
    """The warehouse and data snapshots."""


@data.command("snapshot")
@click.argument("digest")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), required=True, help="Parquet file to write.")
@config_option
@handles_errors
def data_snapshot(digest: str, out_path: str, config_path: str | None) -> None:
    """Write the data stored under DIGEST (e.g. a model's training frame) to a parquet file.

    DIGEST may be any unique prefix of at least 6 characters, such as the 12 `runner models` shows."""
    from runner.config import load_config
    from runner.data.snapshots import SnapshotStore

    written = SnapshotStore(load_config(config_path).stores.snapshots).export(digest, out_path)
    out.print(f"wrote {written}")


def group_config(config_path: str | None):
    """The config named on the subcommand, else on its group's ``--config``, else the default."""
    from runner.config import load_config

    context = click.get_current_context().find_object(dict) or {}
    return load_config(config_path or context.get("config_path"))
