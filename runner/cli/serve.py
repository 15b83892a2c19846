"""The pull side: `runner serve MODEL[@ALIAS]` answers scoring requests with the version an alias points at."""

from __future__ import annotations

import copy
import logging.config
import os

import click

from runner.cli.group import config_option, duration, err, handles_errors, main, usage_error


@main.command()
@click.argument("model")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every interface).")
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Server processes, each with the model loaded and a request log of its own.")
@click.option("--refresh", default="30s", show_default=True, callback=duration,
              help="How often the alias is looked at; when `runner promote` moves it, the new version is served.")
@click.option("--sample", type=click.FloatRange(0.0, 1.0), default=1.0, show_default=True,
              help="Share of requests written to the warehouse's `requests` table (each request whole).")
@config_option
@handles_errors
def serve(model: str, host: str, port: int, workers: int, refresh: float, sample: float,
          config_path: str | None) -> None:
    """Serve MODEL[@ALIAS] (alias: champion) over HTTP: POST /invocations in MLflow's scoring formats,
    GET /health, GET /version. Every request is checked like batch inputs (signature, data dictionary,
    purpose) and logged to the warehouse's `requests` table, which monitoring reads. SIGTERM stops it
    gracefully: requests in flight are answered and the request log is written."""
    import uvicorn

    from runner.config import load_config
    from runner.serving.app import Settings, create_app

    name, _, alias = model.partition("@")
    if not name or (model.count("@") and not alias):
        usage_error(f"MODEL must be NAME or NAME@ALIAS (e.g. churn@champion), got {model!r}")
    if refresh <= 0:
        usage_error("--refresh must be more than 0 seconds")
    config = load_config(config_path)
    settings = Settings(model=name, alias=alias or "champion", config=str(config.source), refresh=refresh,
                        sample=sample)
    logs = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)  # uvicorn's, plus the server's own (alias switches, log)
    logs["loggers"]["runner.serve"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    logging.config.dictConfig(logs)
    options = {"host": host, "port": port, "log_config": logs, "timeout_graceful_shutdown": 30}
    app = create_app(settings)  # fails here, in one line, when the model or its stores cannot be reached
    err.print(f"runner serve {name}@{settings.alias} on http://{host}:{port} ({workers} worker(s)); "
              "SIGTERM or Ctrl-C stops it")
    if workers == 1:
        uvicorn.run(app, **options)
        return
    os.environ["RUNNER_SERVE_SETTINGS"] = settings.to_json()
    uvicorn.run("runner.serving.app:from_environment", factory=True, workers=workers, **options)
