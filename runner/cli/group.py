"""The ``runner`` command group and what its commands share: the consoles (everything printed is masked, see
:mod:`runner.secrets`), shared options, running a pipeline with a progress display, and how a
:class:`~runner.errors.RunnerError` becomes one line on stderr and an exit code.

Exit codes: 0 all good; 1 a step failed, or the run could not be tracked or recorded; 2 usage, config or
parameter errors (nothing ran); 130 the run was interrupted.
"""

from __future__ import annotations

import contextlib
import functools
import signal
import sys
from collections.abc import Iterator
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.markup import escape

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
def duration(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """A click callback: an option's seconds from a number or a duration like '30s', '10m'."""
    from runner.config import parse_duration

    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


def status_text(status: str) -> str:
    return f"[{STATUS_STYLE.get(status, 'white')}]{status}[/]"


def verdict_text(verdict, reasons: bool = False) -> str:
    """A verdict (:class:`runner.store.records.Verdict`) in its colour, optionally with its reasons; '' for none."""
    if verdict is None:
        return ""
    text = f"verdict {status_text(verdict.level)}"
    return f"{text}: {escape('; '.join(verdict.reasons))}" if reasons and verdict.reasons else text


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="notebook-runner")
def main() -> None:
    """Run parameterized Jupyter notebooks as production pipelines."""


def run_and_report(config, request) -> None:
    """Run with a progress display; print the outcome and exit 1 (failed) or 130 (interrupted) if not ok."""
    from runner.run.pipeline import run as run_pipeline
    from runner.store.records import RunStore

    progress = _Progress()
    try:
        with progress, interrupted_by_signals():
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
    store = RunStore(config.stores.runs)
    run_dir = store.run_dir(record.pipeline, record.run_id)
    verdict = record.verdict
    judged = f", {verdict_text(verdict)}" if verdict else ""
    out.print(f"run {record.run_id} {status_text(record.status)}{judged} in {record.duration_s:.1f}s  ({run_dir})")
    for reason in verdict.reasons if verdict else ():
        out.print(f"  {status_text(verdict.level)}: {escape(reason)}")
    for step in record.failed_steps():
        cell = f" in {step.error.where()}" if step.error and step.error.where() else ""
        what = f"{step.error.ename}: {step.error.evalue}" if step.error else "failed"
        where = f"{run_dir}/{step.output}" if step.output else step.notebook
        out.print(f"[bold red]FAILED[/] {step.name}{escape(cell)}: {escape(what)} -> {where}")
    for warning in record.warnings:
        err.print(f"[yellow]warning:[/] {escape(warning)}")
    if record.status == "interrupted":
        sys.exit(EXIT_INTERRUPTED)
    if record.status != "succeeded":
        sys.exit(EXIT_FAILED)


def raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def interrupted_by_signals() -> Iterator[None]:
    """SIGTERM (a service manager, `kill`) and SIGHUP (the terminal closed) interrupt a run as Ctrl-C does, so it
    stops its steps and records its end: by default either would end the process with its record saying running
    and its MLflow runs RUNNING."""
    previous = {sig: signal.signal(sig, raise_keyboard_interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


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
            self.progress.update(task, description=f"{step.name} {status_text(step.status)}",
                                 completed=self.progress.tasks[task].total or 0)
        if not self.live or step.name not in self.tasks:
            took = f" in {step.duration_s:.1f}s" if step.duration_s is not None else ""
            err.print(f"  {step.name}: {status_text(step.status)}{took}")


def group_config(config_path: str | None):
    """The config named on the subcommand, else on its group's ``--config``, else the default."""
    from runner.config import load_config

    context = click.get_current_context().find_object(dict) or {}
    return load_config(config_path or context.get("config_path"))
