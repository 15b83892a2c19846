"""The one adapter over MLflow tracking.

One experiment per pipeline, one parent run per pipeline run and one child run per step.
Scraps go in batches: numbers as metrics, short strings and flags as tags, everything in
``scraps.json``. Every MLflow error is wrapped in :class:`TrackingError` here.

A request to an MLflow server takes at most ``RUNNER_MLFLOW_TIMEOUT``, its retries included
(:func:`http_settings`): MLflow's own client retries an unreachable server for 4 min 10 s.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from runner.config import ENV_MLFLOW_TIMEOUT, parse_duration
from runner.errors import ConfigError, RunnerError, TrackingError
from runner.secrets import strip_userinfo

# MLflow's warnings for situations that are not ours, which would only clutter executed notebooks: tqdm
# without ipywidgets, integer columns in a signature (ours come from the data dictionary), a local
# dataset source that two source types claim.
NOISE = ("IProgress not found", "Hint: Inferred schema contains integer",
         "The specified dataset source can be interpreted")
MAX_PARAM_LENGTH = 6000
MAX_TAG_LENGTH = 250
_STATUS = {"succeeded": "FINISHED", "failed": "FAILED", "interrupted": "KILLED", "skipped": "KILLED"}
_HTTP_SET: dict[str, str] = {}  # the MLflow variables this process set itself (any other value is the user's)


def http_settings() -> dict[str, str]:
    """MLflow's HTTP client settings that keep one request, retries included, within ``RUNNER_MLFLOW_TIMEOUT``.

    Three attempts, the third 2 s after the second, each waiting at most (budget - 2 s) / 3 for an answer (under
    5 s: one attempt of the whole budget), and no wait for a server's Retry-After beyond that. A variable the user
    set keeps the user's value.
    """
    value = _budget_text()
    try:
        budget = parse_duration(value)
        if budget is None or budget <= 0:
            raise ValueError(f"expected more than 0 seconds, got {value!r}")
    except ValueError as exc:
        raise ConfigError(f"{exc}; unset it for the default ({ENV_MLFLOW_TIMEOUT.default}): "
                          f"{ENV_MLFLOW_TIMEOUT.meaning}", ENV_MLFLOW_TIMEOUT.name) from None
    retries, timeout = (2, int((budget - 2) // 3)) if budget >= 5 else (0, max(1, int(budget)))
    ours = {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(retries),
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",  # urllib3 waits 0 s, then 2 s
        "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(timeout),
        "MLFLOW_HTTP_RESPECT_RETRY_AFTER_HEADER": "false",
    }
    return {name: os.environ[name] if _users(name) else value for name, value in ours.items()}


def _budget_text() -> str:
    return ENV_MLFLOW_TIMEOUT.get() or ENV_MLFLOW_TIMEOUT.default


def _users(name: str) -> bool:
    return name in os.environ and os.environ[name] != _HTTP_SET.get(name)


def apply_http_settings() -> None:
    """Set :func:`http_settings` in this process's environment, where MLflow's client reads them per request."""
    for name, value in http_settings().items():
        if not _users(name):
            os.environ[name] = _HTTP_SET[name] = value


def unreachable(error: BaseException) -> bool:
    """Whether a tracking error came from a server that could not be reached or did not answer in time."""
    return _no_answer(error) is not None


def _no_answer(error: BaseException) -> str | None:
    """Why the server gave no answer (``connection refused``, ``timed out``), or None when it answered.
    MLflow wraps the HTTP client's error, sometimes only as the context of its own."""
    import requests
    import urllib3

    chain: list[BaseException] = []
    cause: BaseException | None = error
    while cause is not None and all(cause is not seen for seen in chain):
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    if not any(isinstance(cause, (requests.ConnectionError, requests.Timeout, requests.exceptions.RetryError))
               for cause in chain):
        return None
    root = next((cause for cause in reversed(chain) if isinstance(cause, OSError) and cause.strerror), None)
    if root is not None:  # connection refused, no route to host, name or service not known
        return root.strerror.lower()
    if any(isinstance(cause, (requests.Timeout, TimeoutError, urllib3.exceptions.ReadTimeoutError)) for cause in chain):
        return "timed out"
    if any(isinstance(cause, requests.exceptions.RetryError) for cause in chain):
        return "it kept answering with server errors"
    return "could not connect"


class Tracker:
    def __init__(self, tracking_uri: str, artifact_root: str):
        self.tracking_uri = tracking_uri
        self.artifact_root = artifact_root
        apply_http_settings()
        with self.wrapped("connect to"):
            from mlflow.tracking import MlflowClient

            self.client = MlflowClient(tracking_uri=tracking_uri)

    @contextmanager
    def wrapped(self, doing: str) -> Iterator[None]:
        try:
            yield
        except RunnerError:  # ours already says what to do
            raise
        except Exception as exc:  # MLflow raises MlflowException, requests and SQLAlchemy errors
            detail, why = str(exc), _no_answer(exc)
            if why is not None:  # MLflow's text holds the URL and its retries; say what happened, and the budget
                detail = f"no answer ({why}) within {ENV_MLFLOW_TIMEOUT.name}={_budget_text()}"
            raise TrackingError(
                f"could not {doing} MLflow at {strip_userinfo(f'{self.tracking_uri}: {detail}')}; "
                "check RUNNER_TRACKING_URI (or stores.tracking in runner.yaml) and that the server is up"
            ) from exc

    def experiment(self, name: str) -> str:
        """The experiment's id, created on first use with its artifacts under the artifact root."""
        with self.wrapped("open the experiment of"):
            found = self.client.get_experiment_by_name(name)
            if found is not None:
                return found.experiment_id
            location = None
            if not self.tracking_uri.startswith(("http:", "https:", "databricks")):
                location = _as_uri(self.artifact_root) + "/" + name
            try:
                return self.client.create_experiment(name, artifact_location=location)
            except Exception:  # created meanwhile by another run
                found = self.client.get_experiment_by_name(name)
                if found is None:
                    raise
                return found.experiment_id

    def start_run(self, experiment_id: str, name: str, tags: Mapping[str, str], parent: str | None = None) -> str:
        tags = dict(tags)
        if parent:
            tags["mlflow.parentRunId"] = parent
        with self.wrapped("start a run in"):
            run = self.client.create_run(experiment_id, run_name=name, tags=clean_tags(tags))
            return run.info.run_id

    def log_step(self, run_id: str, parameters: Mapping[str, Any], scraps: Mapping[str, Any], files: list[str]) -> None:
        """Parameters as params, scraps as metrics, tags and ``scraps.json``, files as artifacts."""
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        params = [Param(key, _text(value, MAX_PARAM_LENGTH)) for key, value in parameters.items()]
        metrics, tags = [], []
        for key, value in scraps.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                metrics.append(Metric(key, float(value), now, 0))
            elif isinstance(value, bool) or (isinstance(value, str) and len(value) <= MAX_TAG_LENGTH):
                tags.append(RunTag(f"scrap.{key}", str(value)))
        with self.wrapped("log to"):
            for start in range(0, max(len(params), len(metrics), len(tags)), 100):
                self.client.log_batch(
                    run_id,
                    metrics=metrics[start : start + 100],
                    params=params[start : start + 100],
                    tags=tags[start : start + 100],
                )
            with tempfile.TemporaryDirectory() as tmp:
                if scraps:
                    path = Path(tmp) / "scraps.json"
                    path.write_text(json.dumps(scraps, indent=2, default=str))
                    self.client.log_artifact(run_id, str(path))
                for file in files:
                    if Path(file).is_file():
                        self.client.log_artifact(run_id, file)

    def log_values(self, run_id: str, metrics: Mapping[str, float] | None = None,
                   tags: Mapping[str, Any] | None = None) -> None:
        """Metrics and tags of one run, in one batch."""
        from mlflow.entities import Metric, RunTag

        now = int(time.time() * 1000)
        with self.wrapped("log to"):
            self.client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in (metrics or {}).items()],
                                  tags=[RunTag(k, v) for k, v in clean_tags(tags or {}).items()])

    def log_dataset(self, run_id: str, frame, *, source: str, name: str, digest: str, targets: str | None = None) -> None:
        """``frame`` as a dataset input of the run (MLflow's dataset tracking), under the context ``name``."""
        import mlflow.data
        from mlflow.entities import Dataset, DatasetInput, InputTag

        with self.wrapped("log a dataset to"), warnings.catch_warnings():
            for noise in NOISE:
                warnings.filterwarnings("ignore", message=noise)
            dataset = mlflow.data.from_pandas(frame, source=source, name=name, targets=targets, digest=digest)
            entity = Dataset(**dataset.to_dict())
            self.client.log_inputs(run_id, [DatasetInput(entity, [InputTag("mlflow.data.context", name)])])

    def log_figure(self, run_id: str, figure, path: str) -> None:
        with self.wrapped("log a figure to"):
            self.client.log_figure(run_id, figure, path)

    def log_dict(self, run_id: str, data: Mapping[str, Any], path: str) -> str:
        """Store ``data`` as a JSON artifact of the run; returns its ``runs:/`` URI."""
        with self.wrapped("log an artifact to"):
            self.client.log_dict(run_id, dict(data), path)
        return f"runs:/{run_id}/{path}"

    def end_run(self, run_id: str, status: str) -> None:
        with self.wrapped("end a run in"):
            self.client.set_terminated(run_id, _STATUS.get(status, "FINISHED"))

    def end_if_running(self, run_id: str, status: str, end_ms: int | None = None) -> bool:
        """End the run as ``status`` (at ``end_ms``) if MLflow still has it RUNNING; whether it did."""
        with self.wrapped("end a run in"):
            if self.client.get_run(run_id).info.status != "RUNNING":
                return False
            self.client.set_terminated(run_id, _STATUS.get(status, "FINISHED"), end_time=end_ms)
            return True


@contextmanager
def quiet(logger: str) -> Iterator[None]:
    """Only warnings and errors from ``logger`` while the block runs (its INFO lines land in notebooks)."""
    import logging

    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        log.setLevel(level)


def _as_uri(location: str) -> str:
    return location if "://" in location else Path(location).resolve().as_uri()


def _text(value: Any, limit: int) -> str:
    """A param or tag value: text, the credentials of any URL in it masked, cut to MLflow's limit."""
    text = strip_userinfo(value if isinstance(value, str) else json.dumps(value, default=str))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def clean_tags(tags: Mapping[str, Any]) -> dict[str, str]:
    return {key: _text(value, 5000) for key, value in tags.items() if value is not None}
