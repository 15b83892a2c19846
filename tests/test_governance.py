"""Model governance: champion on first version, challenger unless it beats the champion, promote and roll back."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import step
from sklearn.linear_model import LogisticRegression

from runner import nb


@pytest.fixture
def governed(project, monkeypatch):
    project.write({"p": {"purpose": "credit_scoring", "steps": {"a": step("ok")}}},
                  models={"credit": {"metric": "auc", "margin": 0.01}})
    monkeypatch.setenv("RUNNER_CONFIG", str(project.config))
    monkeypatch.setenv("RUNNER_USER", "ada")
    monkeypatch.setenv("RUNNER_NAMESPACE", "production")  # by hand, explicitly in production: aliases move now
    monkeypatch.setenv("MLFLOW_TRACKING_URI", project.tracking_uri)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    monkeypatch.setattr(nb, "_context", None)
    nb.context(pipeline="p", as_of="2026-03-31")
    yield project
    import mlflow

    while mlflow.active_run():
        mlflow.end_run()


def data(seed: int, n: int = 600) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"signal": rng.normal(size=n), "noise": rng.normal(size=n)})
    y = pd.Series((X["signal"] + rng.normal(scale=1.0, size=n) > 0.8).astype(int))
    return X, y


def test_first_version_is_champion_then_challenger_unless_it_beats_by_the_margin(governed):
    X, y = data(1)
    holdout = data(2)
    good = LogisticRegression().fit(X, y)
    noise_only = LogisticRegression().fit(X[["noise"]].assign(signal=0.0)[["signal", "noise"]], y)

    first = nb.save_model(good, "credit", X, holdout)
    assert (first["version"], first["decision"]) == ("1", "champion")

    worse = nb.save_model(noise_only, "credit", X, holdout)
    assert worse["decision"] == "challenger" and worse["champion_version"] == "1"
    assert worse["champion_value"] == pytest.approx(first["value"])

    result = governed.cli("models", "credit", "--json")
    listed = json.loads(result.stdout)
    versions = {v["version"]: v for v in listed["versions"]}
    assert versions["1"]["aliases"] == ["champion"] and versions["2"]["aliases"] == ["challenger"]
    assert versions["1"]["tags"]["trained_by"] == "ada" and versions["1"]["tags"]["promotion_reason"] == "first registered version"
    assert float(versions["2"]["tags"]["auc"]) < float(versions["1"]["tags"]["auc"])


def test_promote_moves_the_champion_records_who_and_why_and_rolls_back(governed):
    X, y = data(1)
    holdout = data(2)
    for _ in range(2):
        nb.save_model(LogisticRegression().fit(X, y), "credit", X, holdout)
    promoted = governed.cli("promote", "credit", "2", "--reason", "approved by model risk")
    assert promoted.exit_code == 0, promoted.output
    assert "credit v2 is the champion (was v1); by ada" in promoted.stdout
    rollback = governed.cli("promote", "credit", "1", "--reason", "rollback: v2 misbehaves", "--by", "grace")
    assert rollback.exit_code == 0 and "(was v2)" in rollback.stdout
    listed = json.loads(governed.cli("models", "credit", "--json").stdout)
    assert [h["version"] for h in listed["history"]] == ["1", "2", "1"]
    assert listed["history"][-1]["by"] == "grace" and listed["history"][-1]["reason"] == "rollback: v2 misbehaves"
    aliases = {v["version"]: v["aliases"] for v in listed["versions"]}
    assert aliases == {"1": ["champion"], "2": []}
    missing = governed.cli("promote", "credit", "9", "--reason", "x")
    assert missing.exit_code == 2 and "has no version 9" in missing.stderr  # a usage error
