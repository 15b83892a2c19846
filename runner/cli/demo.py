"""`runner demo`: the reference pipelines replayed over months of generated data."""

from __future__ import annotations

import re
import sys

import click
from rich.markup import escape

from runner.cli.group import (
    EXIT_FAILED,
    config_option,
    err,
    handles_errors,
    interrupted_by_signals,
    main,
    out,
    status_text,
    verdict_text,
)

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
        judged = f" {verdict_text(record.verdict)}" if record.verdict else ""
        out.print(f"[{len(done):>2}/{total}] {record.as_of} {record.pipeline:<14} {status_text(record.status)}{judged} "
                  f"{record.duration_s:5.1f}s  {escape(detail)}")

    with interrupted_by_signals():  # a run stopped by SIGTERM or SIGHUP records its end, as after Ctrl-C
        records = replay(config, plan, on_run=report)
    facts = summary(config, records)
    out.print(f"\n[bold]Demo finished:[/] {facts['succeeded']}/{facts['runs']} runs succeeded")
    out.print(f"  champion      {MODEL} v{facts['champion_version']} ({escape(str(facts['champion_reason']))})")
    out.print(f"  latest AUC    {facts['latest_auc']}")
    drift = ", ".join(f"{month} {status_text(state or '-')}" for month, state, _ in facts["drift_by_month"])
    out.print(f"  monitoring    {drift}")
    if facts["backtests"]:
        backtests = ", ".join(f"{month} {status_text(state)} (AUC {auc})" for month, state, auc in facts["backtests"])
        out.print(f"  backtests     {backtests}")
    out.print(f"  notebooks     {facts['run_store']}/<pipeline>/<run_id>/<step>.ipynb and .html (`runner runs`)")
    out.print(f"  MLflow        {facts['mlflow_ui']}")
    out.print("  schedules     `runner schedule list`; `runner scheduler` runs the pipelines at month-end")
    if facts["failed"]:
        out.print(f"[bold red]failed run:[/] {facts['failed'][0]} (`runner show {facts['failed'][0]}`)")
        sys.exit(EXIT_FAILED)
