"""Scheduling commands: schedule list, scheduler, backfill, resume, rerun, export."""

from __future__ import annotations

import json
import signal
import sys
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from runner.cli.group import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    config_option,
    duration,
    err,
    group_config,
    handles_errors,
    interrupted_by_signals,
    json_option,
    main,
    out,
    run_and_report,
    status_text,
    usage_error,
)


@main.group()
@config_option
@click.pass_context
def schedule(ctx: click.Context, config_path: str | None) -> None:
    """The pipelines' cron schedules (runner.yaml `schedule:`)."""
    ctx.obj = {"config_path": config_path}


@schedule.command("list")
@click.option("--count", type=click.IntRange(1, 50), default=3, show_default=True, help="Next due times to show.")
@json_option
@config_option
@handles_errors
def schedule_list(count: int, as_json: bool, config_path: str | None) -> None:
    """Each scheduled pipeline's cron, timezone, misfire policy, next due times and last scheduled run."""
    from runner.store.records import RunStore
    from runner.scheduling.ticks import last_scheduled_run, next_ticks, scheduled

    config = group_config(config_path)
    store = RunStore(config.stores.runs)
    now = datetime.now().astimezone()
    rows = []
    for name, pipeline in config.pipelines.items():
        if pipeline.schedule is None:
            continue
        sched = pipeline.schedule
        last = last_scheduled_run(store, name)
        rows.append({
            "pipeline": name, "cron": sched.cron, "timezone": sched.timezone, "misfire": sched.misfire,
            "enabled": sched.enabled,
            "next": [t.isoformat() for t in next_ticks(sched, now, count)] if sched.enabled else [],
            "last_run": {"run_id": last.run_id, "scheduled_for": last.scheduled_for,
                         "status": last.effective_status} if last else None,
        })
    if as_json:
        out.print_json(json.dumps(rows))
        return
    if not rows:
        out.print(f"no pipeline in {escape(str(config.source))} has a schedule; add "
                  "`schedule: {cron: \"0 6 * * *\", timezone: UTC}` to one (docs/guides/scheduling.md)")
        return
    table = Table(box=None, header_style="bold")
    for column in ("pipeline", "cron / timezone", "misfire", "next due", "last scheduled run"):
        table.add_column(column, no_wrap=column != "last scheduled run", overflow="fold")
    for row in rows:
        zone = ZoneInfo(row["timezone"])
        due = "\n".join(datetime.fromisoformat(t).astimezone(zone).strftime("%Y-%m-%d %H:%M %Z") for t in row["next"]) \
            if row["enabled"] else "[dim]disabled[/]"
        last = row["last_run"]
        table.add_row(row["pipeline"], f"{row['cron']}\n[dim]{row['timezone']}[/]", row["misfire"], due,
                      f"{last['run_id']}\n{status_text(last['status'])}" if last else "-")
    scheduled_count = len(scheduled(config))
    out.print(table)
    out.print(f"[dim]{scheduled_count} enabled; `runner scheduler` runs them, or `runner export crontab|systemd`[/]")


@main.command()
@click.option("--once", is_flag=True, help="Run what is due now, wait for it, and exit (for cron or a systemd timer).")
@click.option("--grace", default="10m", show_default=True, callback=duration,
              help="On SIGTERM, how long running steps may take to finish before they are stopped.")
@click.option("--max-runs", type=click.IntRange(min=1), default=2, show_default=True,
              help="Pipelines running at once (each pipeline runs one tick at a time).")
@click.option("--poll", default="30s", show_default=True, callback=duration,
              help="How often a waiting scheduler looks again (edits to runner.yaml, busy pipelines).")
@config_option
@handles_errors
def scheduler(once: bool, grace: float, max_runs: int, poll: float, config_path: str | None) -> None:
    """Start each scheduled pipeline when its cron tick comes (trigger=schedule, as_of = the tick's date)."""
    from runner.config import load_config
    from runner.scheduling.scheduler import Scheduler
    from runner.scheduling.ticks import scheduled

    config = load_config(config_path)
    if not scheduled(config):
        err.print(f"[yellow]warning:[/] no pipeline in {escape(str(config.source))} has an enabled schedule")
    sched = Scheduler(config, max_runs=max_runs, grace=grace, poll=poll, on_notice=_show_notice)

    def stop(signum: int, frame: Any) -> None:
        err.print(f"received {signal.Signals(signum).name}: starting nothing new, draining")
        sched.request_stop()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        if not once:
            err.print(f"scheduler started for {', '.join(scheduled(config)) or 'no pipeline'}; SIGTERM or Ctrl-C "
                      f"drains (grace {grace:g}s)")
        records = sched.run_once() if once else sched.serve()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if once and not records:
        upcoming = sched.next_due(datetime.now().astimezone())
        later = f"; next: {upcoming[1]} at {upcoming[0].strftime('%Y-%m-%d %H:%M %Z')}" if upcoming else ""
        err.print(f"nothing was due{later}")
    if any(r.status == "interrupted" for r in records):
        sys.exit(EXIT_INTERRUPTED)
    if sched.errors or any(r.status != "succeeded" for r in records):
        sys.exit(EXIT_FAILED)


def _show_notice(notice) -> None:
    tick = f" {notice.tick}" if notice.tick else ""
    run = f" run {notice.run_id}" if notice.run_id else ""
    status = f" {status_text(notice.status)}" if notice.status else ""
    detail = f": {escape(notice.detail)}" if notice.detail else ""
    style = {"error": "bold red", "busy": "yellow", "skipped": "yellow"}.get(notice.kind, "bold")
    name = f" {notice.pipeline}" if notice.pipeline else ""
    err.print(f"[{style}]{notice.kind}[/]{name}{tick}{run}{status}{detail}")


@main.command()
@click.argument("pipeline")
@click.option("--from", "first", required=True, type=click.DateTime(["%Y-%m-%d"]), help="First day (YYYY-MM-DD).")
@click.option("--to", "last", required=True, type=click.DateTime(["%Y-%m-%d"]), help="Last day, inclusive.")
@click.option("--max-workers", type=click.IntRange(min=1), default=1, show_default=True, help="Ticks run at once.")
@config_option
@handles_errors
def backfill(pipeline: str, first, last, max_workers: int, config_path: str | None) -> None:
    """One run of PIPELINE per schedule tick from --from to --to (trigger=backfill); ticks that succeeded are skipped."""
    from runner.scheduling.backfill import backfill as run_backfill
    from runner.scheduling.backfill import plan_backfill
    from runner.config import load_config

    if first > last:
        usage_error(f"--from {first.date()} is after --to {last.date()}; give the range oldest first")
    config = load_config(config_path)
    plan = plan_backfill(config, pipeline, first.date(), last.date())
    todo = len(plan.ticks) - len(plan.done_before)
    err.print(f"backfill {pipeline}: {len(plan.ticks)} tick(s) from {first.date()} to {last.date()}, "
              f"{len(plan.done_before)} already succeeded, {todo} to run, {max_workers} at a time")
    for tick, run_id in plan.done_before.items():
        out.print(f"  {tick} [dim]done before[/] ({run_id})")
    finished = []

    def report(tick, record) -> None:
        finished.append(record)
        out.print(f"[{len(finished)}/{todo}] {tick.isoformat()} run {record.run_id} {status_text(record.status)} "
                  f"{record.duration_s:.1f}s")

    with interrupted_by_signals():
        plan = run_backfill(config, plan, max_workers, on_run=report)
    out.print(f"backfill {pipeline}: {len(plan.records) - len(plan.failed)} succeeded, {len(plan.failed)} not, "
              f"{len(plan.done_before)} skipped as done")
    for record in plan.failed:
        out.print(f"[bold red]{record.status.upper()}[/] {record.scheduled_for}: `runner show {record.run_id}`, "
                  f"`runner resume {record.run_id}`")
    if plan.interrupted:
        sys.exit(EXIT_INTERRUPTED)
    if plan.failed:
        sys.exit(EXIT_FAILED)


@main.command()
@click.argument("run_id")
@config_option
@handles_errors
def resume(run_id: str, config_path: str | None) -> None:
    """Continue a failed or interrupted run from its failed steps, reusing the steps that succeeded."""
    from runner.config import load_config
    from runner.run.reruns import resume_request

    config = load_config(config_path)
    request = resume_request(config, run_id)
    err.print(f"resuming {run_id}: keeping {', '.join(request.reuse) or 'no step'}; today's notebooks for the rest")
    run_and_report(config, request)


@main.command()
@click.argument("run_id")
@config_option
@handles_errors
def rerun(run_id: str, config_path: str | None) -> None:
    """Run RUN_ID again as it was: its recorded notebook bytes, parameters and as_of."""
    from runner.config import load_config
    from runner.run.reruns import rerun_request

    config = load_config(config_path)
    request = rerun_request(config, run_id)
    err.print(f"rerunning {run_id} (as_of {request.as_of}) from the notebooks it recorded")
    run_and_report(config, request)


@main.command()
@click.argument("kind", type=click.Choice(["crontab", "systemd"]))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="systemd: folder to write the units into (default: print them).")
@config_option
@handles_errors
def export(kind: str, out_dir: str | None, config_path: str | None) -> None:
    """Write the schedules for another scheduler: a crontab, or systemd service + timer units."""
    from runner.config import load_config
    from runner.scheduling.export import crontab, systemd

    config = load_config(config_path)
    executable = str(Path(sys.argv[0]).resolve()) if Path(sys.argv[0]).name == "runner" else "runner"
    if kind == "crontab":
        out.print(crontab(config, executable), markup=False, end="")
        return
    units = systemd(config, executable)
    if out_dir is None:
        for name, text in units.items():
            out.print(f"# --- {name} ---", markup=False)
            out.print(text, markup=False, end="")
        return
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in units.items():
        (folder / name).write_text(text, encoding="utf-8")
        out.print(f"wrote {escape(str(folder / name))}")
    timers = " ".join(name for name in units if name.endswith(".timer"))
    out.print(f"install: cp {escape(str(folder))}/* ~/.config/systemd/user/ && systemctl --user daemon-reload && "
              f"systemctl --user enable --now {timers}")
