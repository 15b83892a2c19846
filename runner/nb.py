"""The small API used inside notebooks.

The same notebook runs under the runner and by hand in JupyterLab: under the runner the run
context comes from the environment the runner gives the kernel, and the notebook works in
production; by hand it comes from the nearest ``runner.yaml`` and the notebook's own parameters,
and the notebook works in its author's namespace (see :func:`context`). Everything it logs to
MLflow lands in one run: the step's run, or one run per execution by hand.

    from runner import nb
    ctx = nb.context(pipeline="churn_train", as_of=as_of)
    frame = nb.load("customers", where="month <= :month", params={"month": as_of[:7]})
    nb.glue("auc", 0.78)
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import sys
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from runner.config import ENV_NAMESPACE, PRODUCTION, Config, current_user, find_config, load_config
from runner.errors import ConfigError, DataContractError, TrackingError
from runner.store.records import LEVELS, MODELS_SCRAP, REGISTERED_SCRAP, SNAPSHOTS_SCRAP, VERDICT_SCRAP
from runner.tracking.registry import NAMESPACE_TAG


@dataclass(frozen=True)
class RunContext:
    run_id: str
    pipeline: str
    step: str
    as_of: str
    by_runner: bool  # False when the notebook runs by hand
    purpose: str | None
    config: Config  # config.root is the project root (the folder of runner.yaml)
    namespace: str  # production under the runner; user:<name> by hand (see :func:`context`)
    mlflow_run_id: str  # where everything this execution logs lands: the step's run, or one run per execution by hand

    @property
    def production(self) -> bool:
        return self.namespace == PRODUCTION


_context: RunContext | None = None
_by_hand_runs: dict[str, str] = {}  # tracking URI -> this kernel's MLflow run when the notebook runs by hand


def context(pipeline: str | None = None, as_of: str | None = None, step: str | None = None) -> RunContext:
    """The run context. Arguments are the fallbacks used when the notebook runs by hand.

    Under the runner the context comes from the kernel's environment and the namespace is
    ``production``. By hand (JupyterLab, nbconvert, bare papermill) it comes from the nearest
    ``runner.yaml`` and these arguments, and the notebook works in its author's namespace
    ``user:<name>``: it reads production data, but never moves a model alias, and what it writes
    (predictions, monitoring rows, model versions, its MLflow run) carries the namespace and stays
    out of production's view. ``RUNNER_NAMESPACE=production`` opts a notebook run by hand into
    production, loudly.
    """
    global _context
    by_runner = bool(os.environ.get("RUNNER_RUN_ID"))
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no tqdm bars in executed notebooks
    quiet_expected_warnings()
    path = find_config()
    if path is None:
        raise ConfigError("no runner.yaml in this folder or its parents; set RUNNER_CONFIG to the project's runner.yaml")
    config = load_config(path)
    pipeline = os.environ.get("RUNNER_PIPELINE") or pipeline or ""
    purpose = config.pipelines[pipeline].purpose if pipeline in config.pipelines else None
    step = os.environ.get("RUNNER_STEP") or step or ""
    run_id = os.environ.get("RUNNER_RUN_ID") or f"interactive-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}"
    as_of = os.environ.get("RUNNER_AS_OF") or as_of or datetime.now(timezone.utc).date().isoformat()
    namespace = PRODUCTION if by_runner else _namespace_by_hand()
    if by_runner:  # the runner's own variable: MLflow's fluent API consumes MLFLOW_RUN_ID on first use
        mlflow_run_id = os.environ.get("RUNNER_MLFLOW_RUN_ID") or os.environ.get("MLFLOW_RUN_ID", "")
    else:
        mlflow_run_id = _run_by_hand(config, pipeline, step, as_of, run_id, namespace)
    _context = RunContext(run_id, pipeline, step, as_of, by_runner, purpose, config, namespace, mlflow_run_id)
    return _context


# Warnings every normal run gives, which say nothing about the notebook: each would show as a pink stderr block in
# the executed notebook. (message, module the warning is attributed to), as for warnings.filterwarnings.
EXPECTED_WARNINGS = (
    ("IProgress not found", ""),  # tqdm.auto, imported by MLflow, in a kernel without ipywidgets
    (".*", r"mlflow(\.|$)"),  # MLflow's own hints and deprecations (integer columns in a signature, ...)
    ("Hint: Inferred schema contains integer column", ""),  # the same, attributed to the caller
)


def quiet_expected_warnings() -> None:
    """Hide the warnings of :data:`EXPECTED_WARNINGS` in this kernel (called by :func:`context`); any other
    warning still shows. Also keeps MLflow's logger to its errors (its INFO and WARNING lines are stderr), unless
    ``MLFLOW_LOGGING_LEVEL`` says otherwise."""
    import logging

    for message, module in EXPECTED_WARNINGS:
        warnings.filterwarnings("ignore", message=message, module=module)
    level = os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")  # read when MLflow is imported (sets its logger up)
    logging.getLogger("mlflow").setLevel(getattr(logging, level.upper(), logging.ERROR))  # imported already


def _namespace_by_hand() -> str:
    chosen = ENV_NAMESPACE.get()
    if chosen is None:
        return f"user:{user()}"
    if not re.fullmatch(r"[A-Za-z0-9_.:@-]{1,100}", chosen):
        raise ConfigError(f"{ENV_NAMESPACE.name}={chosen!r} is not a namespace; use letters, digits and _.:@- "
                          f"(e.g. user:alice), or unset it", ENV_NAMESPACE.name)
    if chosen == PRODUCTION:
        print(f"WARNING: {ENV_NAMESPACE.name}=production: this notebook runs by hand but writes to PRODUCTION: it "
              "can move model aliases and its predictions and monitoring rows are production's", file=sys.stderr)
    return chosen


def _run_by_hand(config: Config, pipeline: str, step: str, as_of: str, run_id: str, namespace: str) -> str:
    """One MLflow run per execution by hand, in the pipeline's experiment, tagged with the namespace.

    ``MLFLOW_RUN_ID`` points at it, so the notebook's own ``mlflow.log_*`` calls land in it too.
    """
    uri = config.stores.tracking_uri
    if uri not in _by_hand_runs:
        import atexit

        from runner.tracking.tracker import Tracker

        os.environ.setdefault("MLFLOW_TRACKING_URI", uri)
        tracker = Tracker(uri, config.stores.artifacts)
        experiment = tracker.experiment(pipeline or "notebooks")
        _by_hand_runs[uri] = run = tracker.start_run(experiment, f"{step or 'notebook'} by hand ({namespace})", {
            NAMESPACE_TAG: namespace, "runner.run_id": run_id, "runner.pipeline": pipeline, "runner.step": step,
            "runner.as_of": as_of, "runner.trigger": "by hand"})
        os.environ.setdefault("MLFLOW_EXPERIMENT_ID", experiment)
        os.environ.setdefault("MLFLOW_RUN_ID", run)
        atexit.register(_end_by_hand_run, tracker, run)
    return _by_hand_runs[uri]


def _end_by_hand_run(tracker, run_id: str) -> None:
    with contextlib.suppress(Exception):  # the kernel is exiting; MLflow may be gone
        tracker.end_run(run_id, "succeeded")


def _current() -> RunContext:
    return _context or context()


def _tracker():
    from runner.tracking.tracker import Tracker

    config = _current().config
    return Tracker(config.stores.tracking_uri, config.stores.artifacts)


def _registry():
    from runner.tracking.registry import Registry

    return Registry(_current().config.stores.tracking_uri)


def user() -> str:
    return current_user()


@functools.cache
def _warehouse(url: str, dictionary: Path):
    """The warehouse of a project, with its data dictionary (None when the file does not exist: then only
    the run tables can be used, and :func:`load` and :func:`save` refuse); a broken dictionary raises."""
    from runner.data import DataDictionary, Warehouse

    return Warehouse(url, DataDictionary.load(dictionary) if dictionary.is_file() else None)


def warehouse():
    """The project's warehouse for this pipeline's purpose: it validates writes against the data dictionary
    and checks every read (``read_table``, ``read_sql``) against the purpose, which it cannot be turned from.

    Under a pipeline without a purpose it reads the dictionary's tables only with ``unchecked="why"``,
    which is logged and recorded in the step's ``unchecked_reads`` scrap.
    """
    ctx = _current()
    config = ctx.config
    store = _warehouse(config.stores.warehouse_url, config.dictionary)
    if ctx.purpose is not None:
        return store.for_purpose(ctx.purpose)
    known = f"one of {sorted(store.dictionary.purposes)}" if store.dictionary is not None else "see the dictionary"
    if ctx.pipeline in config.pipelines:
        why = (f"pipeline {ctx.pipeline!r} declares no purpose; add `purpose:` ({known}) to pipelines.{ctx.pipeline} "
               f"in {config.source}, so the data dictionary can check what it reads")
    else:
        why = (f"no pipeline of {config.source} is named {ctx.pipeline!r}, so no purpose is known; name the pipeline "
               "this notebook belongs to (nb.context(pipeline=...)) and give it a `purpose:`")
    return store.for_purpose(None, no_purpose=why, on_unchecked=lambda reason, what: _append_scrap(
        "unchecked_reads", {"reason": reason, "read": what}))


def _checked_warehouse(action: str):
    """:func:`warehouse`, refusing when the project has no data dictionary: without it nothing is checked."""
    store = warehouse()
    if store.dictionary is None:
        from runner.data.dictionary import REFERENCE as DICTIONARY_REFERENCE

        config = _current().config
        raise ConfigError(f"{action} refused: there is no data dictionary at {config.dictionary}, so nothing would "
                          f"be checked; create it (see {DICTIONARY_REFERENCE}) or fix the "
                          "`dictionary:` key", str(config.source))
    return store


def load(table: str, columns: list[str] | None = None, where: str | None = None, params: dict | None = None,
         chunksize: int | None = None, order_by: list[str] | None = None):
    """Read a table for this pipeline's purpose: every column the read uses (``columns``, the columns
    ``where`` tests, ``order_by``) must allow it, and ``where`` must be a condition over the table's own
    columns with ``:named`` parameters (no sub-query, UNION or other table). A pipeline without a
    purpose, or a project without a data dictionary, reads nothing.

    Rows come in a stable order: by ``order_by``, else by the table's key in the data dictionary,
    else by every column read. The same data gives the same frame, however it was written.
    """
    return _checked_warehouse(f"nb.load({table!r})").read_table(table, columns, where, params, chunksize=chunksize,
                                                                order_by=order_by)


def stream(table: str, columns: list[str] | None = None, where: str | None = None, params: dict | None = None,
           chunksize: int = 250_000, order_by: list[str] | None = None):
    """The rows :func:`load` reads, as frames of at most ``chunksize`` rows (the dictionary's dtypes), read by a
    thread of their own at most two chunks ahead while the caller works on the last one: memory holds a few
    chunks, however many rows match. Checked (purpose, columns, ``where``) when called, read as drawn.

    For a batch too big to hold at once, ``monitoring.compare(reference, nb.stream(table, columns=features,
    where=...), thresholds)`` gives the findings of the whole batch (see the monitoring guide). Draw it to the
    end or close it (``with contextlib.closing(...)``) to stop its reader early.
    """
    from runner.data.warehouse import read_ahead

    chunks = load(table, columns, where, params, chunksize=chunksize, order_by=order_by)

    def ahead():
        with read_ahead(chunks, name="runner-stream-read") as read:
            yield from read

    return ahead()


def save(table: str, frame, mode: str = "append") -> int:
    """Validate ``frame`` against the data dictionary and write it in one transaction. Only tables the
    dictionary declares (and the runner's run tables) are written."""
    return _checked_warehouse(f"nb.save({table!r})").write_table(table, frame, mode=mode)


def split_valid(table: str, frame):
    """(rows that fit the data dictionary, rows that do not with a ``reason`` column)."""
    return _checked_warehouse(f"nb.split_valid({table!r})").dictionary.split_valid(table, frame)


def _spec(table: str):
    dictionary = warehouse().dictionary
    if dictionary is None:
        from runner.data.dictionary import REFERENCE as DICTIONARY_REFERENCE

        raise ConfigError(f"no data dictionary at {_current().config.dictionary}; create it (see {DICTIONARY_REFERENCE}) "
                          "or fix the 'dictionary' key of runner.yaml")
    return dictionary.table(table)


def key(table: str) -> str:
    """The id column of ``table``: its one-column ``key`` in the data dictionary."""
    spec = _spec(table)
    if len(spec.key) != 1:
        raise DataContractError(f"table {table!r} has {'no key' if not spec.key else f'a key of {len(spec.key)} columns'} "
                                "in the data dictionary; declare `key: [<id column>]` or pass id_column=")
    return spec.key[0]


def features(table: str, exclude: Iterable[str] = ()) -> list[str]:
    """The columns of ``table`` this pipeline's purpose may use, in the dictionary's order, without the
    table's key and ``exclude`` (a label, a date): the candidate features of a model."""
    spec, purpose = _spec(table), _current().purpose
    left_out = {*spec.key, *exclude}
    return [name for name, column in spec.columns.items()
            if name not in left_out and (purpose is None or column.allows(purpose))]


def glue(name: str, value: Any) -> None:
    """Record a value: a scrap for the runner (and downstream steps); by hand, numbers also become metrics
    of this execution's MLflow run (under the runner, the runner logs every scrap to the step's run)."""
    import scrapbook

    scrapbook.glue(name, value)
    ctx = _current()
    if not ctx.by_runner and isinstance(value, (int, float)) and not isinstance(value, bool):
        _tracker().log_values(ctx.mlflow_run_id, metrics={name: value})


_recorded: dict[str, list] = {}  # what this kernel glued into the list scraps below


def _append_scrap(name: str, item: Any) -> None:
    items = _recorded.setdefault(name, [])
    if item not in items:
        items.append(item)
    glue(name, list(items))


def snapshot(frame, name: str = "training", targets: str | None = None) -> str:
    """Store ``frame`` content-addressed and log it to MLflow as a dataset input; returns the digest."""
    from runner.data.snapshots import SnapshotStore

    ctx = _current()
    store = SnapshotStore(ctx.config.stores.snapshots)
    digest = store.save(frame)
    tracker = _tracker()
    tracker.log_dataset(ctx.mlflow_run_id, frame, source=str(store.path(digest)), name=name, targets=targets,
                        digest=digest[:36])
    tracker.log_values(ctx.mlflow_run_id, tags={f"runner.snapshot.{name}": digest})
    _append_scrap(SNAPSHOTS_SCRAP, digest)
    return digest


def load_snapshot(digest: str):
    """The exact data stored under ``digest`` (for example the frame a model was trained on)."""
    from runner.data.snapshots import SnapshotStore

    return SnapshotStore(_current().config.stores.snapshots).load(digest)


def load_model(uri: str):
    """The fitted scikit-learn model of a registered version, e.g. ``models:/churn/3`` or ``models:/churn@champion``."""
    return _registry().load_estimator(uri)


def model(name: str, alias: str = "champion") -> tuple[dict[str, Any], Any]:
    """(version info, fitted model) of the production version that holds ``alias``."""
    info = _registry().by_alias(name, alias)
    if info is None:
        raise TrackingError(f"model {name!r} has no version with alias {alias!r}; train one first with "
                            "`runner run <its training pipeline>`, or `runner promote MODEL VERSION`")
    return info, load_model(f"models:/{name}/{info['version']}")


def versions(name: str, namespace: str | None = PRODUCTION) -> list[dict[str, Any]]:
    """The registered versions of model ``name`` in ``namespace`` (production by default; all when None),
    newest first, with aliases and tags."""
    return _registry().versions(name, namespace)


def save_model(model, name: str, X_example, holdout: tuple[Any, Any], score=None, training_digest: str = "",
               reference=None, table: str | None = None) -> dict[str, Any]:
    """Log and register a fitted binary classifier; decide champion or challenger on the same holdout.

    The version's MLflow source run is this step's run, and its pyfunc ``predict`` returns the positive
    class's probability. With ``reference`` (the training features, columns typed by ``table`` in the data
    dictionary, else by their dtypes), a compact profile of them and of the holdout's scores is stored with
    the version (``reference_profile`` tag): monitoring compares against it.

    The first version becomes the champion; a later one only when it beats the champion on ``holdout``
    by the margin in ``runner.yaml`` (``models.<name>.margin``), else the challenger. Under the runner the
    alias moves when the step *succeeds* (a step that fails later leaves its version tagged failed, with no
    alias); by hand the version stays in the author's namespace and no alias moves. ``score(y_true,
    y_prob) -> float`` is the policy's metric (AUC by default). Returns the decision (also glued as
    ``model_uri``, ``model_version``, ``model_decision``).
    """
    from runner.tracking.registry import CHAMPION, CHALLENGER, NAMESPACE_TAG, STATUS_TAG

    ctx = _current()
    registry, policy, score = _registry(), ctx.config.model_policy(name), score or _auc
    X_holdout, y_holdout = holdout
    holdout_scores = model.predict_proba(X_holdout)[:, 1]
    new_value = score(y_holdout, holdout_scores)
    champion = registry.by_alias(name, CHAMPION)
    decision: dict[str, Any] = {"name": name, "metric": policy.metric, "value": new_value,
                                "champion_version": champion and champion["version"], "champion_value": None}
    if champion is None:
        decision["decision"], decision["reason"] = CHAMPION, "first registered version"
    else:
        old = load_model(f"models:/{name}/{champion['version']}")
        decision["champion_value"] = old_value = score(y_holdout, old.predict_proba(X_holdout)[:, 1])
        gain = (new_value - old_value) if policy.higher_is_better else (old_value - new_value)
        beats = gain >= policy.margin
        decision["decision"] = CHAMPION if beats else CHALLENGER
        decision["reason"] = (f"{'beats' if beats else 'does not beat'} champion v{champion['version']} on the same "
                              f"holdout: {policy.metric} {new_value:.4f} vs {old_value:.4f} (margin {policy.margin})")
    profile_uri = ""
    if reference is not None:
        profile_uri = _tracker().log_dict(ctx.mlflow_run_id, reference_profile(reference, holdout_scores, table),
                                          f"{name}/{PROFILE_FILE}")
    decision["version"] = version = registry.register_classifier(model, name, ctx.mlflow_run_id, X_example, {
        "reference_profile": profile_uri, "as_of": ctx.as_of, "run_id": ctx.run_id, "mlflow_run_id": ctx.mlflow_run_id,
        "training_data_digest": training_digest, "trained_by": user(), "pipeline": ctx.pipeline, "step": ctx.step,
        "trained_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "table": table or "",
        "git_commit": os.environ.get("RUNNER_GIT_COMMIT", ""), policy.metric: f"{new_value:.6f}",
        NAMESPACE_TAG: ctx.namespace, STATUS_TAG: "running" if ctx.by_runner else "by hand",
        "runner.decision": decision["decision"],
    })
    decision["uri"] = f"models:/{name}/{version}"
    entry = {key: decision[key] for key in ("name", "version", "decision", "reason", "champion_version")}
    if ctx.by_runner:  # the runner applies it once the step has succeeded
        _append_scrap(REGISTERED_SCRAP, entry)
    elif ctx.production:  # by hand, explicitly in production: now
        registry.conclude([entry], succeeded=True, by=user())
    else:
        decision["decision"] = f"none: trained by hand in namespace {ctx.namespace} (would be {decision['decision']})"
    glue("model_uri", decision["uri"])
    glue("model_version", version)
    glue("model_decision", decision["decision"])
    _append_scrap(MODELS_SCRAP, f"{name}/{version}")
    return decision


PROFILE_FILE = "reference_profile.json"


def feature_kinds(columns: Iterable[str], table: str) -> tuple[list[str], list[str]]:
    """(numeric, categorical) columns by their type in the data dictionary's ``table``."""
    spec = _spec(table)
    columns = list(columns)
    undeclared = [c for c in columns if c not in spec.columns]
    if undeclared:
        raise DataContractError(f"{table} column(s) {undeclared} are not declared in the data dictionary")
    numeric = [c for c in columns if spec.columns[c].type in ("int", "float")]
    return numeric, [c for c in columns if c not in numeric]


def limits(columns: Iterable[str], table: str) -> dict[str, dict]:
    """The dictionary's range (``min``, ``max``) or ``levels`` of each column of ``table``, for monitoring."""
    spec = _spec(table)
    found = {}
    for column in columns:
        declared = spec.columns.get(column)
        if declared is not None and declared.levels:
            found[column] = {"levels": list(declared.levels)}
        elif declared is not None and (declared.min is not None or declared.max is not None):
            found[column] = {"min": declared.min, "max": declared.max}
    return found


def reference_profile(features, scores=None, table: str | None = None) -> dict:
    """A compact profile of training ``features`` (and of ``scores`` as the column ``score``).

    Columns are numeric or categorical by their type in the data dictionary's ``table``, else by dtype.
    The profile names the table, so monitoring finds the dictionary's limits without being told.
    """
    import pandas as pd

    from runner import monitoring

    if table is not None:
        numeric, categorical = feature_kinds(features.columns, table)
    else:
        numeric = [c for c in features.columns if pd.api.types.is_numeric_dtype(features[c])
                   and not pd.api.types.is_bool_dtype(features[c])]
        categorical = [c for c in features.columns if c not in numeric]
    profile = monitoring.profile(features, numeric, categorical)
    profile["table"] = table
    if scores is not None:
        score_profile = monitoring.profile(pd.DataFrame({"score": scores}), ["score"], [])
        profile["columns"]["score"] = score_profile["columns"]["score"]
    return profile


def load_profile(version: dict[str, Any]) -> dict:
    """The reference profile stored with a model version (see :func:`save_model`)."""
    import mlflow.artifacts

    uri = version.get("tags", {}).get("reference_profile")
    if not uri:
        raise TrackingError(f"model {version.get('name')} v{version.get('version')} was registered without a "
                            "reference profile; retrain it with nb.save_model(..., reference=X_train)")
    try:
        with warnings.catch_warnings():  # tqdm, imported on the way, warns in kernels without ipywidgets
            warnings.filterwarnings("ignore", message="IProgress not found")
            return mlflow.artifacts.load_dict(uri)
    except Exception as exc:  # MLflow raises many types for a missing or unreadable artifact
        raise TrackingError(f"could not read the reference profile {uri}: {exc}") from exc


def recent_runs(pipeline: str | None = None, step: str = "score", limit: int = 12):
    """Earlier runs of ``pipeline`` (this one by default), oldest first, before the current run.

    Columns: run_id, as_of, status, trigger, duration_s (of ``step``), and ``step``'s numeric scraps.
    """
    import pandas as pd

    from runner.store.records import RunStore

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
    """What an earlier step of this run recorded: its status, duration_s, scraps, and ``run_id``: the run that
    executed it (this one, or for a step a resume reused, the run it came from, whose rows it wrote).
    Empty by hand."""
    from runner.store.records import RunStore

    ctx = _current()
    if not ctx.by_runner:
        return {}
    record = RunStore(ctx.config.stores.runs).read(ctx.run_id).steps.get(step)
    if record is None:
        return {}
    return {**record.scraps, "status": record.status, "duration_s": record.duration_s,
            "run_id": record.reused_from or ctx.run_id}


def predictions(run_id: str | None = None, as_of: str | None = None, model_name: str | None = None,
                model_version: str | None = None, namespace: str = PRODUCTION):
    """Predictions matching every given field, of production unless another ``namespace`` is named (by hand,
    ``ctx.namespace`` reads what this execution wrote); scores written by hand never mix into production's."""
    return warehouse().read_predictions(run_id, as_of, model_name=model_name, model_version=model_version,
                                        namespace=namespace)


def served_requests(model_name: str, since: str | None = None, until: str | None = None, *,
                    version: str | None = None, table: str | None = None, columns: Iterable[str] | None = None):
    """What ``runner serve`` answered for ``model_name`` between ``since`` (included) and ``until`` (excluded),
    from the warehouse's ``requests`` table: ``(inputs, scores, usage)``.

    ``inputs`` is a frame of the rows answered ``ok`` (their ``inputs`` JSON), typed by ``table`` in the data
    dictionary (and checked against this pipeline's purpose, as :func:`load` is), with ``columns`` in that order
    (all that the JSON holds when None); ``scores`` the scores answered for them. With ``version``, only the rows
    that version answered; what other versions answered is counted in ``usage["other_versions"]``. ``usage`` is
    :func:`runner.monitoring.usage.request_usage` over every request of the model in the window (rejected and
    failed ones too), with ``since`` and ``until``.
    """
    import json

    import pandas as pd

    from runner.monitoring.usage import request_usage

    store = warehouse()
    rows = store.read_requests(model_name, since, until)
    usage = {**request_usage(rows), "since": since, "until": until}
    ok = rows[rows["status"] == "ok"]
    if version is not None:
        answered = ok["model_version"].astype(str)
        usage["other_versions"] = {str(v): int(n) for v, n in answered[answered != str(version)].value_counts().items()}
        ok = ok[answered == str(version)]
    records = [json.loads(text) if isinstance(text, str) and text else {} for text in ok["inputs"]]
    inputs = pd.DataFrame.from_records(records, index=ok.index, columns=list(columns) if columns is not None else None)
    if columns is None and not len(inputs.columns) and table is not None:
        columns = [name for name in _spec(table).columns]
    if columns is not None:
        inputs = inputs.reindex(columns=list(columns))
    if table is not None:
        spec = _spec(table)
        purpose = _current().purpose
        if purpose is not None and store.dictionary is not None:
            store.dictionary.check_purpose(table, [c for c in inputs.columns if c in spec.columns], purpose)
        inputs = _typed(inputs, spec)
    scores = pd.to_numeric(ok["score"], errors="coerce").astype("float64").rename("score")
    return inputs.reset_index(drop=True), scores.reset_index(drop=True), usage


def _typed(frame, spec):
    """``frame`` with the dictionary's types on its declared columns, as far as the values allow: a value of
    another type becomes missing in a numeric or date column (monitoring's missing rate shows it)."""
    import pandas as pd

    typed = {}
    for name in frame.columns:
        column = spec.columns.get(name)
        if column is None:
            continue
        values = frame[name]
        if column.type in ("int", "float"):
            values = pd.to_numeric(values, errors="coerce").astype("float64")
            whole = column.type == "int" and bool((values.dropna() % 1 == 0).all())
            typed[name] = values.astype("Int64") if whole else values
        elif column.type in ("date", "datetime"):
            typed[name] = pd.to_datetime(values, errors="coerce", format="ISO8601").astype("datetime64[ns]")
        elif column.type == "bool":
            typed[name] = values.map(lambda v: v if isinstance(v, bool) else pd.NA).astype("boolean")
        else:
            typed[name] = values.where(values.isna(), values.astype(str))
    return frame.assign(**typed) if typed else frame


def record_findings(findings, model_name: str, model_version: str) -> int:
    """Store findings in the warehouse's ``monitoring_metrics`` (one row per feature and statistic)."""
    ctx = _current()
    return warehouse().write_monitoring_metrics(
        findings[["feature", "statistic", "value", "p_value", "severity", "detail"]], run_id=ctx.run_id,
        step=ctx.step or "notebook", pipeline=ctx.pipeline, as_of=ctx.as_of, model_name=model_name,
        model_version=model_version, namespace=ctx.namespace)


def log_figure(figure, name: str) -> None:
    """Keep a figure as an MLflow artifact of this step's run (it also shows in the executed notebook)."""
    _tracker().log_figure(_current().mlflow_run_id, figure, f"figures/{name}.png")


def alert(status: str, reasons: list[str], summary: str = "") -> list[dict]:
    """Send ``warn`` / ``alert`` to the notifier of ``runner.yaml``; every delivery is glued as ``notifications``.

    A notifier that cannot be reached is a delivery with ``ok: False``, never an exception. By hand (outside
    production) nothing is sent: the team's channels hear about production only.
    """
    from runner.notify import Event, notify

    from runner.notify import channels, wanted

    ctx = _current()
    if status not in ("warn", "alert") or not ctx.production:
        glue("notifications", [])
        _say(f"status {status}: no notice (notices go out on warn and alert)" if status not in ("warn", "alert")
             else f"no notice sent: run by hand, in namespace {ctx.namespace} (notices go out for production only)")
        return []
    config = ctx.config.notify_for(ctx.pipeline)
    event = Event(status, ctx.pipeline, ctx.run_id, as_of=ctx.as_of, step=ctx.step, summary=summary,
                  reasons=tuple(reasons))
    deliveries = [delivery.as_dict() for delivery in notify(config, event)]
    glue("notifications", deliveries)
    if not channels(config):
        _say(f"status {status}: no notice sent: no notifier configured (`notify:` in runner.yaml)")
    elif not wanted(config, status):
        _say(f"status {status}: no notice sent: runner.yaml's notify settings do not send {status}")
    for delivery in deliveries:
        where = f"{delivery['channel']} {delivery['target']}".strip()
        _say(f"notice sent to {where}" if delivery["ok"] else
             f"notice NOT sent to {where}: {delivery['detail'] or 'failed'}")
    return deliveries


def _say(text: str) -> None:
    """A line of plain text among the cell's outputs (not stderr: it is news, not a warning)."""
    from IPython.display import display

    display({"text/plain": text}, raw=True)


def verdict(level: str, reasons: Iterable[str] = ()) -> None:
    """Report what this step judged of its results: ``ok``, ``warn`` or ``alert``, and why (one sentence a reason).

    Besides succeeded or failed, the step's record gets ``verdict: {level, reasons}`` (glued as the reserved
    scrap ``runner_verdict``); the run's verdict is the worst of its steps'. The review site, ``runner runs``,
    ``runner show``, the CLI's last line and the MLflow parent run (tag ``runner.verdict``, its description)
    show it. A verdict does not fail the step: :func:`fail_on` does that. Called again, the last call counts.
    """
    if level not in LEVELS:
        raise DataContractError(f"a verdict is one of {', '.join(LEVELS)}, not {level!r}")
    if isinstance(reasons, str):
        reasons = [reasons]
    glue(VERDICT_SCRAP, {"level": level, "reasons": [str(reason) for reason in reasons]})


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


def score(model, model_name: str, model_version: str, table: str, where: str | None = None,
          params: dict | None = None, *, id_column: str | None = None, chunksize: int = 50_000) -> dict[str, Any]:
    """Score the rows of ``table`` that match ``where`` into ``predictions``, chunk by chunk.

    The entity id is ``id_column``, else the table's key in the data dictionary. Memory stays flat
    however many rows match: rows are read, scored and written a chunk at a time, all in one
    transaction (all rows of the run or none). The three overlap, each a stage at most two chunks
    ahead of the next: the warehouse reads the next chunks (as Arrow batches) while the model
    predicts, and the model predicts while the scores are written; the model's native thread pools
    (OpenMP, BLAS) leave the writer a core (:func:`_predicting_threads`). Returns rows, seconds spent
    in ``predict_proba`` and in total, milliseconds per 1,000 rows, and the production rows of other
    runs this run's scores replaced (``replaced_rows``, ``replaced_runs``; see :func:`write_predictions`).
    ``chunksize``: rows a chunk; a few chunks are in memory at once. 50,000 scored 1M rows about a tenth faster
    than 20,000 on 2 cores (``bench/scoring.py``: fewer calls into the model, whose per-call overhead holds the GIL).
    """
    import time

    from runner.data.warehouse import read_ahead

    id_column = id_column or key(table)
    features = list(model.feature_names_in_)
    spent = {"rows": 0, "predict_s": 0.0}
    started = time.perf_counter()
    # the text features in Python-backed storage, turned so by the reading thread: see _python_text
    chunks = (_python_text(chunk, features) for chunk in load(table, columns=[id_column, *features], where=where,
                                                               params=params, chunksize=chunksize))

    def scored_chunks():
        import pandas as pd

        with read_ahead(chunks, name="runner-score-read") as read, _predicting_threads():
            for chunk in read:
                begin = time.perf_counter()
                scores = model.predict_proba(chunk[features])[:, 1]
                spent["predict_s"] += time.perf_counter() - begin
                spent["rows"] += len(chunk)
                yield pd.DataFrame({"entity_id": chunk[id_column].astype(str), "score": scores})

    with read_ahead(scored_chunks(), name="runner-score-predict") as scored:
        rows, replaced = _write_predictions(scored, model_name, model_version)
    total = time.perf_counter() - started
    return {"rows": rows, "predict_s": spent["predict_s"], "total_s": total,
            "ms_per_1k": 1e6 * total / rows if rows else float("nan"),
            "replaced_rows": sum(replaced.values()), "replaced_runs": list(replaced)}


def _python_text(frame, columns: list[str]):
    """``frame`` with its ``columns`` of Arrow-backed text (pandas' ``str`` as the warehouse reads it) in pandas'
    Python-backed ``str`` storage: the same dtype name and values (missing ones NaN), each distinct text one Python
    string. scikit-learn's encoders and imputers turn text columns into arrays of Python objects; from Arrow they
    make a string per value, in the predicting thread. Here that is a lookup per value, in the reading thread, and
    the model takes the objects as they are: predict_proba of 1M rows with three text features took 2.7 s instead
    of 3.5-3.9 s on one core (see docs/design/benchmarks.md)."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

    turned = {}
    for name in columns:
        dtype = frame[name].dtype
        if not (isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow"):
            continue
        arrow = pa.array(frame[name].array)
        encoded = pc.dictionary_encode(arrow.combine_chunks() if isinstance(arrow, pa.ChunkedArray) else arrow)
        words = np.empty(len(encoded.dictionary) + 1, dtype=object)
        words[:-1] = encoded.dictionary.to_numpy(zero_copy_only=False)
        words[-1] = dtype.na_value
        at = pc.fill_null(encoded.indices, len(encoded.dictionary)).to_numpy(zero_copy_only=False)
        turned[name] = pd.array(words[at], dtype=pd.StringDtype("python", na_value=dtype.na_value))
    return frame.assign(**turned) if turned else frame


def _predicting_threads():
    """In the thread that predicts: the model's native thread pools capped at one core fewer than this process may
    use, never raised. On a machine of two cores, two OpenMP threads beside the writer made each chunk's parallel
    regions wait for a descheduled thread (bench/scoring.py: predict_proba 1.7 s alone, 5.4 s beside the writer)."""
    from threadpoolctl import threadpool_info, threadpool_limits

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    cap = max(1, cores - 1)
    return threadpool_limits(limits={pool["prefix"]: min(pool["num_threads"], cap) for pool in threadpool_info()})


PREDICTIONS_REPLACED_SCRAP = "predictions_replaced"
_replaced: dict[str, int] = {}  # production rows of other runs this kernel's predictions replaced, by run


def write_predictions(frames: Iterable | Any, model_name: str, model_version: str) -> int:
    """Write scores (``entity_id``, ``score``) for this run, all rows or none, in this run's namespace.

    In production they replace the scores another run wrote for the same as_of, model and version
    (a resume or rerun of a scored month), in the same transaction: the notebook says so on stderr
    and glues ``predictions_replaced``, ``{"rows": N, "runs": {run_id: rows}}``. Returns rows written.
    """
    return _write_predictions(frames, model_name, model_version)[0]


def _write_predictions(frames: Iterable | Any, model_name: str, model_version: str) -> tuple[int, dict[str, int]]:
    ctx = _current()
    replaced: dict[str, int] = {}
    rows = warehouse().write_predictions(frames, run_id=ctx.run_id, model_name=model_name,
                                         model_version=str(model_version), as_of=ctx.as_of, namespace=ctx.namespace,
                                         on_replaced=replaced.update)
    _append_scrap(MODELS_SCRAP, f"{model_name}/{model_version}")
    if replaced:
        for run_id, count in replaced.items():
            _replaced[run_id] = _replaced.get(run_id, 0) + count
        glue(PREDICTIONS_REPLACED_SCRAP, {"rows": sum(_replaced.values()), "runs": dict(_replaced)})
        print(f"replaced {sum(replaced.values())} production predictions of {ctx.as_of}, {model_name} "
              f"v{model_version}, written by run {', '.join(replaced)}", file=sys.stderr)
    return rows, replaced


BANNER_COLOURS = {"ok": "#1a7f37", "warn": "#b35900", "alert": "#c62828", "champion": "#1a7f37",
                  "challenger": "#0969da"}


def headline(status: str, title: str, reasons: Iterable[str] = ()) -> None:
    """Show the notebook's headline (:func:`banner`: status, title, reasons), and mark it so that the runner
    shows it first: after a run, the executed notebook gets a copy of it right after its opening markdown, in a
    cell of its own (tagged ``runner-headline``, its empty source hidden), so a reader sees the verdict before any
    code. Where it is computed, it shows too: run by hand in JupyterLab it is simply an output of its cell.

    A cell tagged ``headline`` is lifted the same way, every display output of it (see the notebook API guide).
    """
    from IPython.display import display

    from runner.notebook.adapter import HEADLINE_METADATA

    display(banner(status, title, reasons), metadata={HEADLINE_METADATA: True})


def banner(status: str, title: str, reasons: Iterable[str] = ()):
    """The status banner a monitoring or backtest notebook opens with: an IPython ``HTML`` object.

    ``status`` (``ok``, ``warn``, ``alert``) picks the colour; ``title`` and every reason are
    HTML-escaped, since they quote data (a category level, a column name, a rejection reason):
    the executed notebook's page shows them as text, never as markup.

        display(nb.banner(status, f"{month}, {model_name} v{version}", monitoring.reasons(findings)))
    """
    from html import escape

    from IPython.display import HTML

    colour = BANNER_COLOURS.get(status, "#59636e")
    lines = "".join(f"<div>&bull; {escape(str(reason))}</div>" for reason in reasons)
    return HTML(
        f'<div class="runner-banner" style="border-left:8px solid {colour};padding:8px 16px;font-size:15px">'
        f'<div style="font-size:26px;font-weight:bold;color:{colour}">{escape(str(status).upper())}</div>'
        f"<div>{escape(str(title))}</div>{lines}</div>"
    )
