"""The small API used inside notebooks.

The same notebook runs under the runner and by hand in JupyterLab: under the runner the run
context comes from the environment the runner gives the kernel; by hand it comes from the
nearest ``runner.yaml`` and the notebook's own parameters, and MLflow calls start their own run.

    from runner import nb
    ctx = nb.context(pipeline="credit", as_of=as_of)
    frame = nb.load("applications", where="month <= :month", params={"month": as_of[:7]})
    nb.glue("auc", 0.78)
"""

from __future__ import annotations

import functools
import getpass
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from runner.config import Config, ENV_USER, find_config, load_config
from runner.errors import ConfigError
from runner.records import MODELS_SCRAP, SNAPSHOTS_SCRAP


@dataclass(frozen=True)
class RunContext:
    run_id: str
    pipeline: str
    step: str
    as_of: str
    by_runner: bool  # False when the notebook runs by hand
    purpose: str | None
    config: Config


_context: RunContext | None = None


def context(pipeline: str | None = None, as_of: str | None = None, step: str | None = None) -> RunContext:
    """The run context. Arguments are the fallbacks used when the notebook runs by hand."""
    global _context
    by_runner = bool(os.environ.get("RUNNER_RUN_ID"))
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no tqdm bars in executed notebooks
    path = find_config()
    if path is None:
        raise ConfigError("no runner.yaml in this folder or its parents; set RUNNER_CONFIG to the project's runner.yaml")
    config = load_config(path)
    pipeline = os.environ.get("RUNNER_PIPELINE") or pipeline or ""
    purpose = config.pipelines[pipeline].purpose if pipeline in config.pipelines else None
    _context = RunContext(
        run_id=os.environ.get("RUNNER_RUN_ID") or f"interactive-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}",
        pipeline=pipeline,
        step=os.environ.get("RUNNER_STEP") or step or "",
        as_of=os.environ.get("RUNNER_AS_OF") or as_of or datetime.now(timezone.utc).date().isoformat(),
        by_runner=by_runner,
        purpose=purpose,
        config=config,
    )
    if not by_runner:  # by hand: MLflow runs go to the pipeline's experiment in the project's stores
        from runner.tracking import Tracker

        os.environ.setdefault("MLFLOW_TRACKING_URI", config.stores.tracking_uri)
        tracker = Tracker(os.environ["MLFLOW_TRACKING_URI"], config.stores.artifacts)
        os.environ.setdefault("MLFLOW_EXPERIMENT_ID", tracker.experiment(pipeline or "notebooks"))
    return _context


def _current() -> RunContext:
    return _context or context()


def user() -> str:
    return ENV_USER.get() or getpass.getuser()


@functools.cache
def _warehouse(url: str, dictionary: Path):
    from runner.data import DataDictionary, Warehouse

    return Warehouse(url, DataDictionary.load(dictionary) if dictionary.is_file() else None)


def warehouse():
    """The project's warehouse, with the data dictionary (validation and purpose checks)."""
    config = _current().config
    return _warehouse(config.stores.warehouse_url, config.dictionary)


def load(table: str, columns: list[str] | None = None, where: str | None = None, params: dict | None = None,
         chunksize: int | None = None):
    """Read a table for this pipeline's purpose: a column not allowed for it is refused."""
    return warehouse().read_table(table, columns, where, params, purpose=_current().purpose, chunksize=chunksize)


def save(table: str, frame, mode: str = "append") -> int:
    """Validate ``frame`` against the data dictionary and write it in one transaction."""
    return warehouse().write_table(table, frame, mode=mode)


def split_valid(table: str, frame):
    """(rows that fit the data dictionary, rows that do not with a ``reason`` column)."""
    return warehouse().dictionary.split_valid(table, frame)


def glue(name: str, value: Any) -> None:
    """Record a value: a scrap for the runner (and downstream steps); by hand, also an MLflow metric."""
    import scrapbook

    scrapbook.glue(name, value)
    if not _current().by_runner and isinstance(value, (int, float)) and not isinstance(value, bool):
        import mlflow

        if mlflow.active_run() is not None:
            mlflow.log_metric(name, float(value))


_recorded: dict[str, list[str]] = {}  # what this kernel glued into the list scraps below


def _append_scrap(name: str, item: str) -> None:
    items = _recorded.setdefault(name, [])
    if item not in items:
        items.append(item)
    glue(name, list(items))


def snapshot(frame, name: str = "training", targets: str | None = None) -> str:
    """Store ``frame`` content-addressed and log it to MLflow as a dataset input; returns the digest."""
    import mlflow

    from runner.data import SnapshotStore

    ctx = _current()
    store = SnapshotStore(ctx.config.stores.snapshots)
    digest = store.save(frame)
    dataset = mlflow.data.from_pandas(frame, source=str(store.path(digest)), name=name, targets=targets,
                                      digest=digest[:36])
    with _mlflow_run():
        mlflow.log_input(dataset, context=name)
        mlflow.set_tag(f"runner.snapshot.{name}", digest)
    _append_scrap(SNAPSHOTS_SCRAP, digest)
    return digest


def load_snapshot(digest: str):
    """The exact data stored under ``digest`` (for example the frame a model was trained on)."""
    from runner.data import SnapshotStore

    return SnapshotStore(_current().config.stores.snapshots).load(digest)


def _mlflow_run():
    """The step's MLflow run under the runner (``MLFLOW_RUN_ID``), the active or a new run by hand."""
    import mlflow

    if mlflow.active_run() is not None:
        from contextlib import nullcontext

        return nullcontext(mlflow.active_run())
    return mlflow.start_run(run_name=None if _current().by_runner else f"{_current().step or 'notebook'} (by hand)")


def load_model(uri: str):
    """An sklearn model from the registry, e.g. ``models:/credit_default@champion``."""
    import mlflow.sklearn

    return mlflow.sklearn.load_model(uri)


def model(name: str, alias: str = "champion") -> tuple[dict[str, Any], Any]:
    """(version info, sklearn model) of the registered version that holds ``alias``."""
    from runner.errors import TrackingError
    from runner.tracking import Registry

    info = Registry(_current().config.stores.tracking_uri).by_alias(name, alias)
    if info is None:
        raise TrackingError(f"model {name!r} has no version with alias {alias!r}; train one first "
                            "(e.g. `runner run credit_train`) or `runner promote MODEL VERSION`")
    return info, load_model(f"models:/{name}/{info['version']}")


def versions(name: str) -> list[dict[str, Any]]:
    """Every registered version of model ``name``, newest first, with aliases and tags."""
    from runner.tracking import Registry

    return Registry(_current().config.stores.tracking_uri).versions(name)


def save_model(model, name: str, X_example, holdout: tuple[Any, Any], score=None, training_digest: str = "",
               reference=None):
    """Log and register ``model``, then decide champion or challenger on the same holdout.

    With ``reference`` (the training features), a compact profile of them and of the holdout's
    scores is stored with the version (``reference_profile`` tag): monitoring compares against it.

    The first version becomes the champion; a later one only when it beats the champion on
    ``holdout`` by the margin in ``runner.yaml`` (``models.<name>.margin``), else it becomes
    the challenger. ``score(y_true, y_prob) -> float`` is the policy's metric (AUC by default).
    Returns the decision as a dict (also glued as ``model_uri``, ``model_version``, ``model_decision``).
    """
    import mlflow
    import mlflow.sklearn
    from mlflow.models import infer_signature

    from runner.tracking import CHAMPION, Registry

    ctx = _current()
    policy = ctx.config.model_policy(name)
    score = score or _auc
    X_holdout, y_holdout = holdout
    holdout_scores = model.predict_proba(X_holdout)[:, 1]
    new_value = score(y_holdout, holdout_scores)
    signature = infer_signature(X_example, model.predict_proba(X_example)[:, 1])
    import skops.io

    # skops refuses types it does not know; this model was trained right here, so its types are trusted.
    trusted = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    with _mlflow_run() as run:
        info = mlflow.sklearn.log_model(model, name="model", signature=signature, input_example=X_example.head(5),
                                        registered_model_name=name, skops_trusted_types=trusted)
        version = str(info.registered_model_version)
        profile_uri = ""
        if reference is not None:
            mlflow.log_dict(reference_profile(reference, holdout_scores), PROFILE_FILE)
            profile_uri = f"runs:/{run.info.run_id}/{PROFILE_FILE}"
    registry = Registry(ctx.config.stores.tracking_uri)
    registry.tag_version(name, version, {
        "reference_profile": profile_uri, "as_of": ctx.as_of,
        "run_id": ctx.run_id, "mlflow_run_id": run.info.run_id, "training_data_digest": training_digest,
        "trained_by": user(), "trained_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git_commit": os.environ.get("RUNNER_GIT_COMMIT", ""), policy.metric: f"{new_value:.6f}",
    })
    champion = registry.by_alias(name, CHAMPION)
    decision: dict[str, Any] = {"name": name, "version": version, "metric": policy.metric, "value": new_value,
                                "champion_version": champion and champion["version"], "champion_value": None}
    if champion is None:
        registry.promote(name, version, user(), "first registered version")
        decision["decision"] = "champion"
    else:
        old = load_model(f"models:/{name}/{champion['version']}")
        decision["champion_value"] = old_value = score(y_holdout, old.predict_proba(X_holdout)[:, 1])
        gain = (new_value - old_value) if policy.higher_is_better else (old_value - new_value)
        if gain >= policy.margin:
            reason = (f"beats champion v{champion['version']} on the same holdout: {policy.metric} "
                      f"{new_value:.4f} vs {old_value:.4f} (margin {policy.margin})")
            registry.promote(name, version, user(), reason)
            decision["decision"] = "champion"
        else:
            registry.set_challenger(name, version)
            decision["decision"] = "challenger"
    decision["uri"] = f"models:/{name}/{version}"
    glue("model_uri", decision["uri"])
    glue("model_version", version)
    glue("model_decision", decision["decision"])
    _append_scrap(MODELS_SCRAP, f"{name}/{version}")
    return decision


PROFILE_FILE = "reference_profile.json"


def feature_kinds(columns: Iterable[str], table: str = "applications") -> tuple[list[str], list[str]]:
    """(numeric, categorical) columns by their type in the data dictionary."""
    spec = warehouse().dictionary.table(table)
    numeric = [c for c in columns if spec.columns[c].type in ("int", "float")]
    return numeric, [c for c in columns if c not in numeric]


def limits(columns: Iterable[str], table: str = "applications") -> dict[str, dict]:
    """The dictionary's range (``min``, ``max``) or ``levels`` of each column, for monitoring."""
    spec = warehouse().dictionary.table(table)
    found = {}
    for column in columns:
        declared = spec.columns[column]
        if declared.levels:
            found[column] = {"levels": list(declared.levels)}
        elif declared.min is not None or declared.max is not None:
            found[column] = {"min": declared.min, "max": declared.max}
    return found


def reference_profile(features, scores=None, table: str = "applications") -> dict:
    """A compact profile of training ``features`` (and of ``scores`` as the column ``score``)."""
    import pandas as pd

    from runner import monitoring

    numeric, categorical = feature_kinds(features.columns, table)
    profile = monitoring.profile(features, numeric, categorical)
    if scores is not None:
        score_profile = monitoring.profile(pd.DataFrame({"score": scores}), ["score"], [])
        profile["columns"]["score"] = score_profile["columns"]["score"]
    return profile


def load_profile(version: dict[str, Any]) -> dict:
    """The reference profile stored with a model version (see :func:`save_model`)."""
    import mlflow.artifacts

    from runner.errors import TrackingError

    uri = version.get("tags", {}).get("reference_profile")
    if not uri:
        raise TrackingError(f"model {version.get('name')} v{version.get('version')} was registered without a "
                            "reference profile; retrain it with nb.save_model(..., reference=X_train)")
    try:
        return mlflow.artifacts.load_dict(uri)
    except Exception as exc:  # MLflow raises many types for a missing or unreadable artifact
        raise TrackingError(f"could not read the reference profile {uri}: {exc}") from exc


def recent_runs(pipeline: str | None = None, step: str = "score", limit: int = 12):
    """Earlier runs of ``pipeline`` (this one by default), oldest first, before the current run.

    Columns: run_id, as_of, status, trigger, duration_s (of ``step``), and ``step``'s numeric scraps.
    """
    import pandas as pd

    from runner.records import RunStore

    ctx = _current()
    store = RunStore(ctx.config.stores.runs)
    rows = []
    for record in store.list(pipeline or ctx.pipeline):
        if record.run_id >= ctx.run_id or record.effective_status == "running":
            continue
        step_record = record.steps.get(step)
        scraps = step_record.scraps if step_record else {}
        rows.append({"run_id": record.run_id, "as_of": record.as_of, "status": record.effective_status,
                     "trigger": record.trigger, "duration_s": step_record.duration_s if step_record else None,
                     **{k: v for k, v in scraps.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}})
    frame = pd.DataFrame(rows, columns=["run_id", "as_of", "status", "trigger", "duration_s"] if not rows else None)
    return frame.sort_values("run_id").tail(limit).reset_index(drop=True)


def this_run(step: str) -> dict[str, Any]:
    """What an earlier step of this run recorded: its status, duration_s and scraps."""
    from runner.records import RunStore

    ctx = _current()
    if not ctx.by_runner:
        return {}
    record = RunStore(ctx.config.stores.runs).read(ctx.run_id).steps.get(step)
    return {} if record is None else {"status": record.status, "duration_s": record.duration_s, **record.scraps}


def record_findings(findings, model_name: str, model_version: str) -> int:
    """Store findings in the warehouse's ``monitoring_metrics`` (one row per feature and statistic)."""
    ctx = _current()
    return warehouse().write_monitoring_metrics(
        findings[["feature", "statistic", "value", "p_value", "severity", "detail"]], run_id=ctx.run_id,
        step=ctx.step or "notebook", pipeline=ctx.pipeline, as_of=ctx.as_of, model_name=model_name, model_version=model_version)


def log_figure(figure, name: str) -> None:
    """Keep a figure as an MLflow artifact of this step (it also shows in the executed notebook)."""
    import mlflow

    with _mlflow_run():
        mlflow.log_figure(figure, f"figures/{name}.png")


def alert(status: str, reasons: list[str], summary: str = "") -> list[dict]:
    """Send ``warn`` / ``alert`` to the notifier of ``runner.yaml``; every delivery is glued as ``notifications``.

    A notifier that cannot be reached is a delivery with ``ok: False``, never an exception.
    """
    from runner.notify import Event, notify

    ctx = _current()
    if status not in ("warn", "alert"):
        glue("notifications", [])
        return []
    event = Event(status, ctx.pipeline, ctx.run_id, as_of=ctx.as_of, step=ctx.step, summary=summary,
                  reasons=tuple(reasons))
    deliveries = [delivery.as_dict() for delivery in notify(ctx.config.notify_for(ctx.pipeline), event)]
    glue("notifications", deliveries)
    return deliveries


def fail_on(status: str) -> None:
    """Fail the step when ``status`` reaches ``monitoring.fail_on`` in ``runner.yaml`` (call it last)."""
    from runner.errors import MonitoringAlert
    from runner.notify import SEVERITY

    threshold = _current().config.monitoring.fail_on
    if threshold and SEVERITY[status] >= SEVERITY[threshold]:
        raise MonitoringAlert(f"monitoring status is {status!r} and runner.yaml sets monitoring.fail_on: "
                              f"{threshold}; the findings are saved, see the executed notebook")


def _auc(y_true, y_prob) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y_true, y_prob))


def score(model, model_name: str, model_version: str, where: str, params: dict | None = None,
          table: str = "applications", id_column: str = "application_id", chunksize: int = 20000) -> dict[str, float]:
    """Score the rows of ``table`` that match ``where`` into ``predictions``, chunk by chunk.

    Memory stays flat however many rows match: rows are read, scored and written a chunk at a
    time, all in one transaction (all rows of the run or none). Returns rows, seconds spent in
    ``predict_proba`` and in total, and milliseconds per 1,000 rows.
    """
    import time

    features = list(model.feature_names_in_)
    spent = {"rows": 0, "predict_s": 0.0}
    started = time.perf_counter()

    def scored_chunks():
        import pandas as pd

        for chunk in load(table, columns=[id_column, *features], where=where, params=params, chunksize=chunksize):
            begin = time.perf_counter()
            scores = model.predict_proba(chunk[features])[:, 1]
            spent["predict_s"] += time.perf_counter() - begin
            spent["rows"] += len(chunk)
            yield pd.DataFrame({"entity_id": chunk[id_column], "score": scores})

    rows = write_predictions(scored_chunks(), model_name, model_version)
    total = time.perf_counter() - started
    return {"rows": rows, "predict_s": spent["predict_s"], "total_s": total,
            "ms_per_1k": 1e6 * total / rows if rows else float("nan")}


def write_predictions(frames: Iterable | Any, model_name: str, model_version: str) -> int:
    """Write scores (``entity_id``, ``score``) for this run, all rows or none."""
    ctx = _current()
    rows = warehouse().write_predictions(frames, run_id=ctx.run_id, model_name=model_name,
                                         model_version=str(model_version), as_of=ctx.as_of)
    _append_scrap(MODELS_SCRAP, f"{model_name}/{model_version}")
    return rows
