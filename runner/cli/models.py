"""Models and data: `runner promote`, `runner models`, `runner data snapshot`."""

from __future__ import annotations

import json

import click
from rich.markup import escape
from rich.table import Table

from runner.cli.group import config_option, group_config, handles_errors, json_option, main, out, usage_error

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
@config_option
@click.pass_context
def data(ctx: click.Context, config_path: str | None) -> None:
    """The warehouse and data snapshots."""
    ctx.obj = {"config_path": config_path}


@data.command("snapshot")
@click.argument("digest")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), required=True, help="Parquet file to write.")
@config_option
@handles_errors
def data_snapshot(digest: str, out_path: str, config_path: str | None) -> None:
    """Write the data stored under DIGEST (e.g. a model's training frame) to a parquet file.

    DIGEST may be any unique prefix of at least 6 characters, such as the 12 `runner models` shows."""
    from runner.data.snapshots import SnapshotStore

    written = SnapshotStore(group_config(config_path).stores.snapshots).export(digest, out_path)
    out.print(f"wrote {written}")
