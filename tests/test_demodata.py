"""The demo credit applications: deterministic, learnable, valid before the drift, drifting after."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from runner.data import DataDictionary
from runner.demo.generate import Drift, generate_month, months
from runner.errors import DataContractError

DICTIONARY = Path(__file__).resolve().parents[1] / "data" / "dictionary.yaml"
NUMERIC = ["age", "income", "loan_amount", "term_months", "employment_years", "debt_to_income",
           "credit_history_months", "num_open_loans"]


def test_months():
    assert months("2026-11", 3) == ["2026-11", "2026-12", "2027-01"]
    with pytest.raises(ValueError, match="YYYY-MM"):
        months("2026-1", 2)


def test_same_seed_same_data_other_seed_other_data():
    first, first_outcomes = generate_month("2026-03", n=300, seed=1)
    again, again_outcomes = generate_month("2026-03", n=300, seed=1)
    pd.testing.assert_frame_equal(first, again)
    pd.testing.assert_frame_equal(first_outcomes, again_outcomes)
    other, _ = generate_month("2026-03", n=300, seed=2)
    assert not first.drop(columns="application_id").equals(other.drop(columns="application_id"))


def test_ids_are_unique_across_months_and_labels_arrive_later():
    batches = [generate_month(month, n=300) for month in months("2026-01", 3)]
    ids = pd.concat([apps["application_id"] for apps, _ in batches])
    assert ids.is_unique and ids.iloc[0] == "A2026-01-000001"
    apps, outcomes = batches[0]
    assert (outcomes["application_id"] == apps["application_id"]).all()
    delay = (outcomes["observed_on"] - apps["applied_on"]).dt.days
    assert delay.between(90, 185).all()
    assert (apps["applied_on"].dt.strftime("%Y-%m") == "2026-01").all()


def test_data_look_like_credit_applications():
    apps, outcomes = generate_month("2026-02", n=4000, drift=None)
    assert 0.08 <= outcomes["defaulted"].mean() <= 0.15
    assert 0.01 <= apps["income"].isna().mean() <= 0.06
    assert 0.01 <= apps["employment_years"].isna().mean() <= 0.08
    assert apps["email"].str.fullmatch(r"[a-z]+\.[a-z]+\d+@example\.com").all()
    assert set(apps["gender"]) <= {"female", "male", "non_binary", "undisclosed"}


def test_pre_drift_data_fit_the_project_dictionary():
    dictionary = DataDictionary.load(DICTIONARY)
    apps, outcomes = generate_month("2026-06", n=1000)  # default drift starts in 2026-07
    dictionary.validate("applications", apps)
    dictionary.validate("outcomes", outcomes)


def test_a_model_can_learn_the_default():
    apps, outcomes = generate_month("2026-04", n=4000, drift=None)
    X = apps[NUMERIC].assign(income=np.log(apps["income"]))
    X = pd.concat([X, pd.get_dummies(apps[["purpose", "home_ownership"]], dtype=float)], axis=1)
    X = X.fillna(X.median())
    X_train, X_test, y_train, y_test = train_test_split(X, outcomes["defaulted"], test_size=0.3, random_state=0,
                                                        stratify=outcomes["defaulted"])
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(X_train, y_train)
    auc = roc_auc_score(y_test, model.predict_proba(X_test)[:, 1])
    assert 0.65 <= auc <= 0.9


def test_drift_shows_from_its_start_month():
    drift = Drift(start_month="2026-07")
    before, _ = generate_month("2026-06", n=3000, drift=drift)
    after, _ = generate_month("2026-08", n=3000, drift=drift)
    assert after["income"].mean() < (1 - drift.income_shift) * before["income"].mean()
    assert "crypto" not in set(before["purpose"])
    assert 0.04 <= (after["purpose"] == "crypto").mean() <= 0.10
    assert after["employment_years"].isna().mean() > before["employment_years"].isna().mean() + 0.05
    # before the start, drift changes nothing; after it, the applicants are the same people
    pd.testing.assert_frame_equal(before, generate_month("2026-06", n=3000, drift=None)[0])
    undrifted, _ = generate_month("2026-08", n=3000, drift=None)
    assert (after["age"] == undrifted["age"]).all()
    assert generate_month("2026-08", n=300, drift=Drift(start_month=None))[0].equals(
        generate_month("2026-08", n=300, drift=None)[0])


def test_the_dictionary_flags_the_new_purpose():
    dictionary = DataDictionary.load(DICTIONARY)
    apps, _ = generate_month("2026-07", n=1000)
    with pytest.raises(DataContractError) as raised:
        dictionary.validate("applications", apps)
    assert [(f["column"], f["examples"]) for f in raised.value.failures] == [("purpose", ["crypto"])]
