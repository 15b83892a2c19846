"""Model governance on the MLflow model registry: versions, the champion and challenger aliases and the
rule that moves them, who moved the champion, when and why. Older versions stay registered as benchmarks.

A version is registered with all its tags in one call while its training step runs
(``runner.step_status=running``); :meth:`Registry.conclude` gives it its alias only once the step succeeded.
Every MLflow error is wrapped in :class:`~runner.errors.TrackingError` (through :class:`~runner.tracking.tracker.Tracker`).
"""

from __future__ import annotations

import json
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from runner.config import PRODUCTION
from runner.errors import NotFound, TrackingError
from runner.tracking.tracker import NOISE, Tracker, clean_tags, quiet

CHAMPION = "champion"
CHALLENGER = "challenger"
HISTORY_TAG = "runner.champion_history"
NAMESPACE_TAG = "runner.namespace"  # production, or user:<name> for work by hand (runner.config.PRODUCTION)
STATUS_TAG = "runner.step_status"  # running while the training step runs, then succeeded or failed


MODEL_REQUIREMENTS = ("scikit-learn", "skops", "numpy", "scipy", "pandas")  # what loading a registered version needs


def requirements() -> list[str]:
    """What a registered version needs to load and predict, pinned to this environment's versions (MLflow adds
    itself). Given, not inferred: MLflow's inference loads the model in subprocesses (seconds per version) and
    lists whatever else the kernel had imported."""
    from importlib.metadata import PackageNotFoundError, version

    pinned = []
    for name in MODEL_REQUIREMENTS:
        try:
            pinned.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            continue
    return pinned


class Registry:
    """Model governance on the MLflow registry: versions, the champion and challenger aliases,
    and who moved the champion, when and why. Older versions stay registered as benchmarks."""

    def __init__(self, tracking_uri: str):
        self.tracker = Tracker(tracking_uri, "")
        self.client = self.tracker.client

    def version(self, name: str, version: str | int) -> dict[str, Any]:
        with self.tracker.wrapped(f"read version {version} of model {name!r} from"):
            try:
                found = self.client.get_model_version(name, str(version))
            except Exception as exc:  # a version that does not exist is a usage error; a dead server is not
                if getattr(exc, "error_code", "") not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                    raise
                raise NotFound(f"model {name!r} has no version {version}; `runner models {name}` lists its "
                               "versions") from None
            return _version_info(found)

    def by_alias(self, name: str, alias: str) -> dict[str, Any] | None:
        with self.tracker.wrapped(f"read alias {alias!r} of model {name!r} from"):
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
        with self.tracker.wrapped(f"list versions of model {name!r} in"):
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
        with tempfile.TemporaryDirectory() as tmp, self.tracker.wrapped(f"register a version of model {name!r} in"):
            estimator = str(Path(tmp) / pyfunc_model.ESTIMATOR)
            mlflow.sklearn.save_model(model, estimator, serialization_format="skops", skops_trusted_types=trusted,
                                      pip_requirements=requirements())
            with warnings.catch_warnings(), quiet("mlflow.pyfunc"):
                for noise in NOISE:
                    warnings.filterwarnings("ignore", message=noise)
                logged = Model.log(
                    artifact_path=None, name="model", flavor=mlflow.pyfunc, run_id=run_id,
                    python_model=pyfunc_model.__file__, artifacts={pyfunc_model.ESTIMATOR: estimator},
                    signature=signature, input_example=example, pip_requirements=requirements(),
                    metadata={"predict": f"probability of the positive class ({positive!r})"},
                )
            try:
                self.client.create_registered_model(name)
            except Exception:  # it exists (or was created meanwhile by another run)
                pass
            version = self.client.create_model_version(name, logged.model_uri, run_id=run_id,
                                                       tags=clean_tags(tags), model_id=logged.model_id)
        return str(version.version)

    def load_estimator(self, uri: str):
        """The fitted scikit-learn estimator of a registered version, e.g. ``models:/churn/3`` or
        ``models:/churn@champion`` (also of versions logged in the sklearn flavor before the pyfunc wrapper)."""
        import mlflow.pyfunc
        import mlflow.sklearn

        with self.tracker.wrapped(f"load the model {uri} from"):
            # Without MLflow's check of the version's requirements against what is installed: it maps every
            # installed distribution to its modules (about 3 s per kernel) to log a warning that kernels keep
            # quiet anyway (nb.quiet_expected_warnings: MLflow's logger at ERROR)
            loaded = mlflow.pyfunc.load_model(uri, suppress_warnings=True)
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
        with self.tracker.wrapped(f"tag version {version} of model {name!r} in"):
            for key, value in clean_tags(tags).items():
                self.client.set_model_version_tag(name, str(version), key, value)

    def set_challenger(self, name: str, version: str | int) -> None:
        with self.tracker.wrapped(f"set the challenger of model {name!r} in"):
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
        with self.tracker.wrapped(f"promote version {version} of model {name!r} in"):
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
        with self.tracker.wrapped(f"read the history of model {name!r} from"):
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
