"""The one adapter over MLflow tracking.

One experiment per pipeline, one parent run per pipeline run and one child run per step.
Scraps go in batches: numbers as metrics, short strings and flags as tags, everything in
``scraps.json``. Every MLflow error is wrapped in :class:`TrackingError` here.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from runner.errors import TrackingError

MAX_PARAM_LENGTH = 6000
MAX_TAG_LENGTH = 250
_STATUS = {"succeeded": "FINISHED", "failed": "FAILED", "interrupted": "KILLED", "skipped": "KILLED"}


class Tracker:
    def __init__(self, tracking_uri: str, artifact_root: str):
        self.tracking_uri = tracking_uri
        self.artifact_root = artifact_root
        with self._wrapped("connect to"):
            from mlflow.tracking import MlflowClient

            self.client = MlflowClient(tracking_uri=tracking_uri)

    @contextmanager
    def _wrapped(self, doing: str) -> Iterator[None]:
        try:
            yield
        except TrackingError:
            raise
        except Exception as exc:  # MLflow raises MlflowException, requests and SQLAlchemy errors
            raise TrackingError(
                f"could not {doing} MLflow at {self.tracking_uri}: {exc}; "
                "check RUNNER_TRACKING_URI (or stores.tracking in runner.yaml) and that the server is up"
            ) from exc

    def experiment(self, name: str) -> str:
        """The experiment's id, created on first use with its artifacts under the artifact root."""
        with self._wrapped("open the experiment of"):
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
        with self._wrapped("start a run in"):
            run = self.client.create_run(experiment_id, run_name=name, tags=_clean_tags(tags))
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
        with self._wrapped("log to"):
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

    def end_run(self, run_id: str, status: str) -> None:
        with self._wrapped("end a run in"):
            self.client.set_terminated(run_id, _STATUS.get(status, "FINISHED"))


def _as_uri(location: str) -> str:
    return location if "://" in location else Path(location).resolve().as_uri()


def _text(value: Any, limit: int) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _clean_tags(tags: Mapping[str, Any]) -> dict[str, str]:
    return {key: _text(value, 5000) for key, value in tags.items() if value is not None}
