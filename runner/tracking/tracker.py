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

from runner.config import ENV_MLFLOW_TIMEOUT, PRODUCTION, parse_duration
from runner.errors import ConfigError, NotFound, RunnerError, TrackingError
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
        with self._wrapped("connect to"):
            from mlflow.tracking import MlflowClient

            self.client = MlflowClient(tracking_uri=tracking_uri)

    @contextmanager
    def _wrapped(self, doing: str) -> Iterator[None]:
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

    def log_values(self, run_id: str, metrics: Mapping[str, float] | None = None,
                   tags: Mapping[str, Any] | None = None) -> None:
        """Metrics and tags of one run, in one batch."""
        from mlflow.entities import Metric, RunTag

        now = int(time.time() * 1000)
        with self._wrapped("log to"):
            self.client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in (metrics or {}).items()],
                                  tags=[RunTag(k, v) for k, v in _clean_tags(tags or {}).items()])

    def log_dataset(self, run_id: str, frame, *, source: str, name: str, digest: str, targets: str | None = None) -> None:
        """``frame`` as a dataset input of the run (MLflow's dataset tracking), under the context ``name``."""
        import mlflow.data
        from mlflow.entities import Dataset, DatasetInput, InputTag

        with self._wrapped("log a dataset to"), warnings.catch_warnings():
            for noise in NOISE:
                warnings.filterwarnings("ignore", message=noise)
            dataset = mlflow.data.from_pandas(frame, source=source, name=name, targets=targets, digest=digest)
            entity = Dataset(**dataset.to_dict())
            self.client.log_inputs(run_id, [DatasetInput(entity, [InputTag("mlflow.data.context", name)])])

    def log_figure(self, run_id: str, figure, path: str) -> None:
        with self._wrapped("log a figure to"):
            self.client.log_figure(run_id, figure, path)

    def log_dict(self, run_id: str, data: Mapping[str, Any], path: str) -> str:
        """Store ``data`` as a JSON artifact of the run; returns its ``runs:/`` URI."""
        with self._wrapped("log an artifact to"):
            self.client.log_dict(run_id, dict(data), path)
        return f"runs:/{run_id}/{path}"

    def end_run(self, run_id: str, status: str) -> None:
        with self._wrapped("end a run in"):
            self.client.set_terminated(run_id, _STATUS.get(status, "FINISHED"))


@contextmanager
def _quiet(logger: str) -> Iterator[None]:
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


def _clean_tags(tags: Mapping[str, Any]) -> dict[str, str]:
    return {key: _text(value, 5000) for key, value in tags.items() if value is not None}


CHAMPION, CHALLENGER = "champion", "challenger"
HISTORY_TAG = "runner.champion_history"
NAMESPACE_TAG = "runner.namespace"  # production, or user:<name> for work by hand (runner.config.PRODUCTION)
STATUS_TAG = "runner.step_status"  # running while the training step runs, then succeeded or failed


class Registry:
    """Model governance on the MLflow registry: versions, the champion and challenger aliases,
    and who moved the champion, when and why. Older versions stay registered as benchmarks."""

    def __init__(self, tracking_uri: str):
        self.tracker = Tracker(tracking_uri, "")
        self.client = self.tracker.client

    def version(self, name: str, version: str | int) -> dict[str, Any]:
        with self.tracker._wrapped(f"read version {version} of model {name!r} from"):
            try:
                found = self.client.get_model_version(name, str(version))
            except Exception as exc:  # a version that does not exist is a usage error; a dead server is not
                if getattr(exc, "error_code", "") not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                    raise
                raise NotFound(f"model {name!r} has no version {version}; `runner models {name}` lists its "
                               "versions") from None
            return _version_info(found)

    def by_alias(self, name: str, alias: str) -> dict[str, Any] | None:
        with self.tracker._wrapped(f"read alias {alias!r} of model {name!r} from"):
            try:
                return _version_info(self.client.get_model_version_by_alias(name, alias))
            except Exception as exc:
                if "RESOURCE_DOES_NOT_EXIST" in str(exc) or "not found" in str(exc).lower():
                    return None
                if "INVALID_PARAMETER_VALUE" in str(exc) and "alias" in str(exc).lower():
                    return None
                raise

    def versions(self, name: str, namespace: str | None = PRODUCTION) -> list[dict[str, Any]]:
        """Every version of ``namespace`` (all when None), newest first, with its aliases and tags.

        Versions trained by hand carry their author's namespace (``user:<name>``) and stay out of
        production's list; versions registered before namespaces existed count as production.
        """
        with self.tracker._wrapped(f"list versions of model {name!r} in"):
            found = self.client.search_model_versions(f"name = '{name}'")
            aliases = self.client.get_registered_model(name).aliases or {} if found else {}  # search results carry none
        versions = sorted((_version_info(v) for v in found), key=lambda v: int(v["version"]), reverse=True)
        for version in versions:
            version["aliases"] = sorted(alias for alias, number in aliases.items() if str(number) == version["version"])
        return [v for v in versions if namespace is None or v["namespace"] == namespace]

    def register_classifier(self, model, name: str, run_id: str, X_example, tags: Mapping[str, Any]) -> str:
        """Log a fitted binary classifier into MLflow run ``run_id`` and register it as a new version of
        ``name`` carrying ``tags``; returns the version.

        The logged model is a pyfunc whose ``predict`` is the positive class's probability
        (:mod:`runner.tracking.pyfunc_model`), with the estimator inside in the sklearn flavor (skops, trusting
        exactly the types of the model just trained). The version is created with its tags in one call,
        so no version ever exists without them.
        """
        import mlflow.pyfunc
        import mlflow.sklearn
        import skops.io
        from mlflow.models import Model, infer_signature

        from runner.tracking import pyfunc_model

        example = X_example.head(5)
        with warnings.catch_warnings():
            for noise in NOISE:
                warnings.filterwarnings("ignore", message=noise)
            signature = infer_signature(example, model.predict_proba(example)[:, 1])
        trusted = skops.io.get_untrusted_types(data=skops.io.dumps(model))
        positive = str(model.classes_[1]) if hasattr(model, "classes_") and len(model.classes_) == 2 else "1"
        with tempfile.TemporaryDirectory() as tmp, self.tracker._wrapped(f"register a version of model {name!r} in"):
            estimator = str(Path(tmp) / pyfunc_model.ESTIMATOR)
            mlflow.sklearn.save_model(model, estimator, serialization_format="skops", skops_trusted_types=trusted)
            with warnings.catch_warnings(), _quiet("mlflow.pyfunc"):
                for noise in NOISE:
                    warnings.filterwarnings("ignore", message=noise)
                logged = Model.log(
                    artifact_path=None, name="model", flavor=mlflow.pyfunc, run_id=run_id,
                    python_model=pyfunc_model.__file__, artifacts={pyfunc_model.ESTIMATOR: estimator},
                    signature=signature, input_example=example,
                    metadata={"predict": f"probability of the positive class ({positive!r})"},
                )
            try:
                self.client.create_registered_model(name)
            except Exception:  # it exists (or was created meanwhile by another run)
                pass
            version = self.client.create_model_version(name, logged.model_uri, run_id=run_id,
                                                       tags=_clean_tags(tags), model_id=logged.model_id)
        return str(version.version)

    def load_estimator(self, uri: str):
        """The fitted scikit-learn estimator of a registered version, e.g. ``models:/churn/3`` or
        ``models:/churn@champion`` (also of versions logged in the sklearn flavor before the pyfunc wrapper)."""
        import mlflow.pyfunc
        import mlflow.sklearn

        with self.tracker._wrapped(f"load the model {uri} from"):
            loaded = mlflow.pyfunc.load_model(uri)
            if "sklearn" in loaded.metadata.flavors:  # versions registered before the pyfunc wrapper
                return mlflow.sklearn.load_model(uri)
            return loaded.unwrap_python_model().estimator

    def conclude(self, entries: list[Mapping[str, Any]], succeeded: bool, by: str) -> list[str]:
        """After a production step: apply each registered version's champion or challenger decision if the
        step succeeded, else tag the versions failed and give them no alias. Returns warnings."""
        warnings = []
        for entry in entries:
            name, version = entry["name"], str(entry["version"])
            if not succeeded:
                self.tag_version(name, version, {STATUS_TAG: "failed"})
                continue
            self.tag_version(name, version, {STATUS_TAG: "succeeded"})
            champion = self.by_alias(name, CHAMPION)
            expected = entry.get("champion_version")
            if entry["decision"] == CHAMPION and (champion and champion["version"]) == expected:
                self.promote(name, version, by, entry["reason"])
            elif entry["decision"] == CHAMPION:
                warnings.append(f"{name} v{version} beat v{expected}, but the champion is now "
                                f"v{champion and champion['version']}: it becomes the challenger; compare them "
                                "with a backtest and `runner promote` the better one")
                self.set_challenger(name, version)
            else:
                self.set_challenger(name, version)
        return warnings

    def tag_version(self, name: str, version: str | int, tags: Mapping[str, Any]) -> None:
        with self.tracker._wrapped(f"tag version {version} of model {name!r} in"):
            for key, value in _clean_tags(tags).items():
                self.client.set_model_version_tag(name, str(version), key, value)

    def set_challenger(self, name: str, version: str | int) -> None:
        with self.tracker._wrapped(f"set the challenger of model {name!r} in"):
            self.client.set_registered_model_alias(name, CHALLENGER, str(version))

    def promote(self, name: str, version: str | int, by: str, reason: str) -> dict[str, Any]:
        """Make ``version`` the champion (a rollback is a promotion of an older version).

        Records who, when and why on the version and in the model's champion history; the
        previous champion stays registered, so it can be benchmarked or rolled back to.
        """
        import datetime as dt

        target = self.version(name, version)
        if target["namespace"] != PRODUCTION:
            raise TrackingError(f"{name} v{version} was trained by hand in namespace {target['namespace']} and cannot "
                                "hold an alias; train it with `runner run` to make it a production version")
        previous = self.by_alias(name, CHAMPION)
        now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        entry = {"version": str(version), "previous": previous and previous["version"], "by": by, "at": now,
                 "reason": reason}
        with self.tracker._wrapped(f"promote version {version} of model {name!r} in"):
            self.client.set_registered_model_alias(name, CHAMPION, str(version))
            if CHALLENGER in target["aliases"]:
                self.client.delete_registered_model_alias(name, CHALLENGER)
            self.tag_version(name, version, {"promoted_by": by, "promoted_at": now, "promotion_reason": reason})
            history = self.history(name)
            history.append(entry)
            self.client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history[-50:]))
        return entry

    def history(self, name: str) -> list[dict[str, Any]]:
        """Champion changes, oldest first (the last 50)."""
        with self.tracker._wrapped(f"read the history of model {name!r} from"):
            model = self.client.get_registered_model(name)
        return json.loads(model.tags.get(HISTORY_TAG, "[]"))


def _version_info(version) -> dict[str, Any]:
    return {
        "name": version.name,
        "version": str(version.version),
        "aliases": list(getattr(version, "aliases", []) or []),
        "run_id": version.run_id,
        "source": version.source,
        "created_at": version.creation_timestamp,
        "tags": dict(version.tags or {}),
        "namespace": (version.tags or {}).get(NAMESPACE_TAG, PRODUCTION),
    }
