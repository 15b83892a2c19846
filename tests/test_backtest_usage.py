"""Backtesting figures and findings, and usage findings, on inputs whose answers are known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import brier_score_loss, roc_auc_score

from runner.monitoring import backtest
from runner.config import Levels, Thresholds
from runner.monitoring.usage import usage_findings


def test_evaluate_matches_sklearn_and_a_hand_computed_calibration_error():
    rng = np.random.default_rng(3)
    p = rng.uniform(0.01, 0.6, 5000)
    y = (rng.random(5000) < p).astype(int)
    figures = backtest.evaluate(y, p)
    assert figures["auc"] == pytest.approx(roc_auc_score(y, p))
    assert figures["brier"] == pytest.approx(brier_score_loss(y, p))
    assert 0.2 < figures["ks"] < 0.6
    assert figures["calibration_error"] < 0.03  # labels drawn from the scores: well calibrated

    # ten rows, ten bins of one row each, 0.1 predicted everywhere: |0.1 - 0| five times, |0.1 - 1| five times
    hand = backtest.evaluate([0] * 5 + [1] * 5, [0.1] * 10)
    assert hand["auc"] == 0.5 and backtest.CALIBRATION_BINS == 10
    assert hand["calibration_error"] == pytest.approx((0.1 * 5 + 0.9 * 5) / 10)


def test_evaluate_refuses_labels_of_one_class():
    with pytest.raises(ValueError, match="both classes"):
        backtest.evaluate([0, 0, 0], [0.1, 0.2, 0.3])


def results(**auc: float) -> pd.DataFrame:
    return pd.DataFrame({label: {"auc": value, "ks": 0.3, "brier": 0.1, "calibration_error": 0.01}
                         for label, value in auc.items()}).T


def test_a_version_that_beats_the_champion_by_the_margin_is_reported():
    found = backtest.findings(results(v1=0.71, v2=0.76, v3=0.74), "v3", margin=0.01, month="2026-01")
    beats = found[found["statistic"] == "beats_champion"].iloc[0]
    assert beats["feature"] == "model:v2" and beats["severity"] == "warn"
    assert beats["value"] == pytest.approx(0.02)
    assert "v2 beats champion v3 on 2026-01 labels: AUC 0.760 vs 0.740" in beats["detail"]
    assert found.iloc[0]["statistic"] == "beats_champion"  # warn sorts before the ok figures

    within_margin = backtest.findings(results(v1=0.745, v3=0.74), "v3", margin=0.01)
    assert within_margin.set_index("statistic").loc["beats_champion", "severity"] == "ok"


def test_the_champion_dropping_below_its_holdout_auc_is_judged_by_thresholds():
    thresholds = Thresholds(performance_drop=Levels(warn=0.02, alert=0.05))
    found = backtest.findings(results(v1=0.70), "v1", thresholds=thresholds, holdout_auc={"v1": 0.78})
    drop = found.set_index("statistic").loc["auc_drop"]
    assert drop["severity"] == "alert" and drop["value"] == pytest.approx(0.08)
    fine = backtest.findings(results(v1=0.77), "v1", thresholds=thresholds, holdout_auc={"v1": 0.78})
    assert fine.set_index("statistic").loc["auc_drop", "severity"] == "ok"


def history(rows, statuses=None, latency=None) -> pd.DataFrame:
    return pd.DataFrame({"status": statuses or ["succeeded"] * len(rows), "rows_scored": rows,
                         "latency_ms_per_1k": latency or [10.0] * len(rows)})


def by_statistic(found: pd.DataFrame) -> pd.DataFrame:
    return found.set_index("statistic")


def test_row_count_is_judged_against_the_median_of_recent_good_runs():
    found = by_statistic(usage_findings(2600, 10.0, history([2000, 2100, 1900, 0], ["succeeded"] * 3 + ["failed"])))
    assert found.loc["row_count", "value"] == pytest.approx(0.3) and found.loc["row_count", "severity"] == "warn"
    assert "median of 2,000 over the last 3 runs" in found.loc["row_count", "detail"]
    assert found.loc["failed_runs", "value"] == 1 and found.loc["failed_runs", "severity"] == "warn"
    normal = by_statistic(usage_findings(2050, 10.0, history([2000, 2100, 1900])))
    assert set(normal["severity"]) == {"ok"}


def test_an_empty_run_failures_in_a_row_and_slow_scoring_are_findings():
    found = by_statistic(usage_findings(0, None, history([2000, 0, 0, 0], ["succeeded", "failed", "interrupted",
                                                                             "succeeded"])))
    assert found.loc["rows_scored", "severity"] == "alert"
    assert found.loc["failed_runs", "value"] == 3 and found.loc["failed_runs", "severity"] == "alert"
    slow = by_statistic(usage_findings(200_000, 25.0, history([200_000] * 2, latency=[10.0, 12.0])))
    assert slow.loc["latency_increase", "value"] == pytest.approx(25 / 11 - 1)
    assert slow.loc["latency_increase", "severity"] == "alert"
    # 2,000 rows at 25 ms per 1,000 is 0.05 s of scoring: shown, not judged
    short = by_statistic(usage_findings(2000, 25.0, history([2000, 2000], latency=[10.0, 12.0])))
    assert short.loc["latency_increase", "severity"] == "ok" and "not judged" in short.loc["latency_increase", "detail"]


def test_the_first_run_has_nothing_to_compare_with():
    found = by_statistic(usage_findings(1500, 9.0, pd.DataFrame(columns=["run_id", "status"])))
    assert np.isnan(found.loc["row_count", "value"]) and set(found["severity"]) == {"ok"}


def test_versions_trained_on_the_labels_judge_nothing():
    found = backtest.findings(results(v1=0.70, v2=0.80, v3=0.74), "v1", margin=0.01, saw_labels={"v2"},
                              holdout_auc={"v1": 0.71})
    beats = found.set_index("statistic").loc["beats_champion"]
    assert beats["feature"] == "model:v3"  # v2 scores best but has seen these labels
    own = backtest.findings(results(v1=0.70, v2=0.80), "v2", saw_labels={"v2"}, holdout_auc={"v2": 0.9})
    assert set(own["severity"]) == {"ok"} and "no fair backtest" in own.set_index("statistic").loc["judged", "detail"]
