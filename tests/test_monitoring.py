"""runner.monitoring.drift: each statistic against scipy or a hand computation, detection, false alarms, figures."""

from __future__ import annotations

import json

import matplotlib
import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon

from runner import monitoring
from runner.config import Levels, Thresholds

matplotlib.use("Agg")


def one(findings: pd.DataFrame, feature: str, statistic: str) -> pd.Series:
    rows = findings[(findings["feature"] == feature) & (findings["statistic"] == statistic)]
    assert len(rows) == 1, f"expected one {feature}/{statistic} row, got {len(rows)}"
    return rows.iloc[0]


def numeric_profile(values, **kwargs) -> dict:
    return monitoring.profile(pd.DataFrame({"x": values}), ["x"], [], **kwargs)


# -- PSI by hand ----------------------------------------------------------------------------------

def test_psi_by_hand_with_floor_and_out_of_range_values_in_the_end_bins():
    reference = numeric_profile(np.arange(100.0), bins=4)
    entry = reference["columns"]["x"]
    # inverted_cdf quartiles of 0..99 are 24, 49, 74; a value equal to an edge goes to the bin above
    assert entry["edges"] == [0.0, 24.0, 49.0, 74.0, 99.0]
    assert entry["shares"] == [0.24, 0.25, 0.25, 0.26]
    # -5 is below the reference range (first bin), 200 and 500 above it (last bin), 74 is an edge (bin 4)
    current = pd.DataFrame({"x": [-5.0, 3, 30, 30, 60, 200, 500, 80, 90, 74]})
    # shares 0.2, 0.2, 0.1, 0.5; PSI = sum (a - e) ln(a / e):
    #   (0.2-0.24) ln(0.2/0.24) = 0.0072929   (0.2-0.25) ln(0.8)      = 0.0111572
    #   (0.1-0.25) ln(0.4)      = 0.1374436   (0.5-0.26) ln(0.5/0.26) = 0.1569424   total 0.3128360
    psi = one(monitoring.compare(reference, current), "x", "psi")
    assert psi["value"] == pytest.approx(0.3128360, abs=1e-6)
    assert psi["severity"] == "alert"  # >= 0.25
    # Every value far above the range: bins 1-3 are empty and floored at EPSILON = 1e-4:
    #   (1e-4-0.24) ln(1e-4/0.24) = 1.8671954   (1e-4-0.25) ln(1e-4/0.25) = 1.9552291 (twice)
    #   (1-0.26) ln(1/0.26)       = 0.9968345   total 6.7744881
    far = one(monitoring.compare(reference, pd.DataFrame({"x": [1e6, 2e6]})), "x", "psi")
    assert far["value"] == pytest.approx(6.7744881, abs=1e-6)
    assert monitoring.psi([0.5, 0.5], [0.5, 0.5]) == 0.0


# -- KS and Wasserstein from the profile's quantiles against scipy on the raw rows --------------------

def _samples(kind: str, rng, n: int, shift: float) -> np.ndarray:
    if kind == "normal":
        return rng.normal(shift, 1, n)
    if kind == "lognormal":  # a long right tail: the end intervals of the grid are wide
        return rng.lognormal(shift, 1, n)
    if kind == "poisson":  # integers with heavy ties
        return rng.poisson(2 + 2 * shift, n).astype(float)
    if kind == "integers":  # 0..4, each a fifth: quantile levels share values
        return np.minimum(rng.integers(0, 5, n) + (rng.random(n) < shift), 4).astype(float)
    return rng.uniform(-shift, 1 + shift, n)  # "uniform": spills out of the reference range


@pytest.mark.parametrize("kind", ["normal", "lognormal", "poisson", "integers", "uniform"])
@pytest.mark.parametrize("shift", [0.0, 0.05, 0.3])
def test_ks_and_wasserstein_match_scipy_on_the_raw_samples(kind, shift):
    rng = np.random.default_rng(7)
    reference, current = _samples(kind, rng, 20_000, 0.0), _samples(kind, rng, 30_000, shift)
    entry = numeric_profile(reference)["columns"]["x"]
    got = monitoring.numeric_stats(entry, current)
    ks = stats.ks_2samp(reference, current)
    # KS: the reference curve is within 1/quantiles = 0.001 of the true one everywhere
    assert got["ks"] == pytest.approx(ks.statistic, abs=0.001)
    # Wasserstein: Evidently's normed form, W1 / std(reference); within 2% or 0.001 reference std
    expected = stats.wasserstein_distance(reference, current) / np.std(reference)
    assert got["wasserstein"] == pytest.approx(expected, rel=0.02, abs=0.001)
    assert got["median"] == pytest.approx(np.median(current))
    assert got["mean"] == pytest.approx(np.mean(current))


def test_ks_p_value_is_scipys_asymptotic_one():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=3000), rng.normal(0.05, 1, 2000)
    scipy = stats.ks_2samp(a, b, method="asymp")
    assert monitoring.ks_pvalue(scipy.statistic, len(a), len(b)) == pytest.approx(scipy.pvalue, rel=1e-9)
    # large samples: Kolmogorov's limit, within 1% of kstwo with the effective n (but ~100x faster)
    effective = round(200_000 * 1_000_000 / 1_200_000)
    assert monitoring.ks_pvalue(0.004, 200_000, 1_000_000) == pytest.approx(
        stats.kstwo.sf(0.004, effective), rel=0.01)


# -- categorical: PSI, Jensen-Shannon, chi-square over the union of levels ------------------------------

def test_categorical_statistics_match_scipy_over_the_union_of_levels():
    reference = pd.DataFrame({"purpose": ["car"] * 500 + ["home"] * 300 + ["study"] * 150 + ["travel"] * 50})
    # no "travel" now, a new "crypto"
    current = pd.DataFrame({"purpose": ["car"] * 380 + ["home"] * 400 + ["study"] * 180 + ["crypto"] * 40})
    findings = monitoring.compare(monitoring.profile(reference, [], ["purpose"]), current)
    ref, cur = np.array([500, 300, 150, 50, 0]), np.array([380, 400, 180, 0, 40])  # car home study travel crypto
    chi2, p_value, _, _ = stats.chi2_contingency(np.vstack([ref, cur]), correction=False)
    row = one(findings, "purpose", "chi_square")
    assert row["value"] == pytest.approx(chi2) and row["p_value"] == pytest.approx(p_value)
    assert row["severity"] == "ok"  # reported, never decisive
    js = one(findings, "purpose", "jensen_shannon")
    assert js["value"] == pytest.approx(jensenshannon(ref, cur, base=2))
    p, q = np.clip(ref / 1000, 1e-4, None), np.clip(cur / 1000, 1e-4, None)
    assert one(findings, "purpose", "psi")["value"] == pytest.approx(np.sum((q - p) * np.log(q / p)))


# -- detection --------------------------------------------------------------------------------------

def _frame(rng, n: int, shift: float = 0.0, missing: float = 0.01, new_level: float = 0.0) -> pd.DataFrame:
    income = rng.lognormal(10.5 + shift, 0.5, n)
    income[rng.random(n) < missing] = np.nan
    purpose = rng.choice(np.array(["car", "home", "study", "travel", "other"], dtype=object), n,
                         p=[0.4, 0.3, 0.15, 0.1, 0.05])
    purpose[rng.random(n) < new_level] = "crypto"
    purpose[rng.random(n) < missing] = None
    return pd.DataFrame({"income": income, "age": rng.integers(18, 80, n).astype(float),
                         "tenure": pd.array(rng.poisson(3, n), dtype="Int64"), "purpose": purpose})


NUMERIC, CATEGORICAL = ["income", "age", "tenure"], ["purpose"]


def test_an_injected_mean_shift_is_detected_by_effect_sizes():
    rng = np.random.default_rng(1)
    reference = monitoring.profile(_frame(rng, 20_000), NUMERIC, CATEGORICAL)
    findings = monitoring.compare(reference, _frame(rng, 5_000, shift=0.5 * 0.5))  # half a std of log income
    assert one(findings, "income", "wasserstein")["severity"] in ("warn", "alert")
    assert one(findings, "income", "psi")["severity"] in ("warn", "alert")
    assert "median" in one(findings, "income", "psi")["detail"]
    assert one(findings, "age", "wasserstein")["severity"] == "ok"
    assert monitoring.status(findings) != "ok"
    assert monitoring.reasons(findings)[0].startswith(findings["severity"].iloc[0])


def test_a_new_level_is_named_with_its_share():
    rng = np.random.default_rng(2)
    reference = monitoring.profile(_frame(rng, 20_000), NUMERIC, CATEGORICAL)
    current = _frame(rng, 10_000, new_level=0.03)
    findings = monitoring.compare(reference, current)
    row = one(findings, "purpose", "new_level")
    share = (current["purpose"] == "crypto").mean()
    assert row["value"] == pytest.approx(share) and row["severity"] == "alert"
    assert row["detail"] == f"new level 'crypto' in {share:.1%} of rows"
    assert any("crypto" in line for line in monitoring.reasons(findings))
    few = current.assign(purpose=current["purpose"].replace("crypto", "car"))
    few.loc[:19, "purpose"] = "crypto"  # 0.2% of rows: any new level is at least warn
    assert one(monitoring.compare(reference, few), "purpose", "new_level")["severity"] == "warn"
    assert "new_level" not in set(monitoring.compare(reference, _frame(rng, 5_000))["statistic"])


def test_a_missing_rate_rise_is_a_finding_of_its_own_with_nullable_dtypes():
    rng = np.random.default_rng(4)
    reference = monitoring.profile(_frame(rng, 20_000), NUMERIC, CATEGORICAL)
    current = _frame(rng, 10_000, missing=0.08)
    current["tenure"] = current["tenure"].astype("Int64")
    current.loc[current.sample(frac=0.2, random_state=1).index, "tenure"] = pd.NA
    current["purpose"] = current["purpose"].astype("str")  # str dtype, missing as NaN
    findings = monitoring.compare(reference, current)
    income = one(findings, "income", "missing_rate_change")
    assert income["value"] == pytest.approx(current["income"].isna().mean() - 0.01, abs=0.003)
    assert income["severity"] == "warn" and income["detail"].startswith("missing 1.0% -> 8.")
    assert one(findings, "tenure", "missing_rate_change")["severity"] == "alert"
    assert one(findings, "purpose", "missing_rate_change")["severity"] == "warn"
    # distributions are still judged, over the values that are there
    assert one(findings, "tenure", "psi")["value"] < 0.1 and one(findings, "purpose", "jensen_shannon")["value"] < 0.1


def test_a_column_entirely_missing_does_not_crash():
    rng = np.random.default_rng(5)
    reference = monitoring.profile(_frame(rng, 5_000), NUMERIC, CATEGORICAL)
    current = _frame(rng, 1_000).assign(income=np.nan, purpose=None)
    findings = monitoring.compare(reference, current)
    for feature in ("income", "purpose"):
        assert one(findings, feature, "missing_rate_change")["severity"] == "alert"
    psi = one(findings, "income", "psi")
    assert np.isnan(psi["value"]) and psi["detail"] == "no values" and psi["severity"] == "ok"
    assert findings["severity"].iloc[0] == "alert"


def test_out_of_range_against_the_dictionary():
    rng = np.random.default_rng(6)
    reference = monitoring.profile(_frame(rng, 5_000), NUMERIC, CATEGORICAL)
    current = _frame(rng, 1_000, missing=0.0)
    current.loc[:9, "age"] = 150.0  # 1% above the range
    current.loc[:2, "purpose"] = "crypto"  # 0.3% outside the levels
    limits = {"age": {"min": 18, "max": 100}, "purpose": {"levels": ["car", "home", "study", "travel", "other"]},
              "income": {"min": 0, "max": None}}
    findings = monitoring.compare(reference, current, limits=limits)
    age = one(findings, "age", "out_of_range")
    assert age["value"] == pytest.approx(0.01) and age["severity"] == "alert"
    purpose = one(findings, "purpose", "out_of_range")
    assert purpose["value"] == pytest.approx(0.003) and purpose["severity"] == "warn"
    assert "'crypto'" in purpose["detail"]
    assert one(findings, "income", "out_of_range")["value"] == 0.0
    assert "out_of_range" not in set(findings.loc[findings["feature"] == "tenure", "statistic"])


def test_score_findings():
    rng = np.random.default_rng(8)
    reference = monitoring.profile(pd.DataFrame({"score": rng.beta(2, 20, 20_000)}), ["score"], [])
    same = monitoring.score_findings(reference, rng.beta(2, 20, 5_000))
    assert monitoring.status(same) == "ok"
    assert set(same["statistic"]) == {"score_psi", "score_mean_shift", "ks", "wasserstein"}
    higher = monitoring.score_findings(reference, pd.Series(rng.beta(3, 20, 5_000)))
    shift = one(higher, "score", "score_mean_shift")
    assert shift["value"] == pytest.approx(3 / 23 - 2 / 22, abs=0.005) and shift["severity"] == "warn"
    assert shift["detail"].startswith("mean 0.09") and " -> 0.13" in shift["detail"]
    assert one(higher, "score", "score_psi")["severity"] in ("warn", "alert")
    assert one(higher, "score", "ks")["severity"] == "ok" and one(higher, "score", "ks")["p_value"] < 1e-6
    assert set(higher["kind"]) == {"score"}


def test_a_batch_or_scores_with_no_rows_is_an_alert_never_ok():
    rng = np.random.default_rng(9)
    reference = monitoring.profile(_frame(rng, 5_000).assign(score=rng.beta(2, 20, 5_000)), [*NUMERIC, "score"],
                                   CATEGORICAL)
    inputs = monitoring.compare(reference, _frame(rng, 0))
    assert monitoring.status(inputs) == "alert"
    assert one(inputs, "inputs", "rows")["severity"] == "alert"
    assert "no input rows to judge" in monitoring.reasons(inputs)[0]
    scores = monitoring.score_findings(reference, pd.Series(dtype=float))
    assert monitoring.status(scores) == "alert" and one(scores, "score", "rows")["detail"].startswith("no scores")
    assert monitoring.status(monitoring.score_findings(reference, rng.beta(2, 20, 500))) == "ok"


# -- false alarms -------------------------------------------------------------------------------------

def test_two_samples_of_one_distribution_are_not_flagged():
    """Column verdicts (worst severity of a column's findings) over 200 seeds, reference 20k, current 5k rows."""
    verdicts = []
    for seed in range(200):
        rng = np.random.default_rng(1000 + seed)
        reference = monitoring.profile(_frame(rng, 20_000), NUMERIC, CATEGORICAL)
        findings = monitoring.compare(reference, _frame(rng, 5_000))
        verdicts += [monitoring.status(group) for _, group in findings.groupby("feature")]
    rate = np.mean([verdict != "ok" for verdict in verdicts])
    print(f"false alarm rate at warn: {rate:.2%} of {len(verdicts)} column verdicts")
    assert len(verdicts) == 800 and rate <= 0.01


# -- the profile ----------------------------------------------------------------------------------------

def test_profile_is_compact_json_and_compare_reads_it_back():
    rng = np.random.default_rng(9)
    frame = _frame(rng, 20_000)
    profile = monitoring.profile(frame, NUMERIC, CATEGORICAL)
    text = json.dumps(profile, allow_nan=False)
    assert json.loads(text) == profile and profile["version"] == 1 and profile["rows"] == 20_000
    assert len(text) < 30_000 * len(NUMERIC)
    income = profile["columns"]["income"]
    assert income["kind"] == "numeric" and income["count"] == frame["income"].notna().sum()
    assert income["missing_rate"] == pytest.approx(frame["income"].isna().mean())
    assert len(income["quantiles"]) == 1001 and income["quantiles"][0] == income["min"]
    assert len(income["shares"]) == len(income["edges"]) - 1 == 10 and sum(income["shares"]) == pytest.approx(1)
    assert income["std"] == pytest.approx(frame["income"].std(ddof=0))
    assert profile["columns"]["purpose"]["levels"]["car"] == (frame["purpose"] == "car").sum()
    current = _frame(rng, 3_000)
    pd.testing.assert_frame_equal(monitoring.compare(json.loads(text), current), monitoring.compare(profile, current))


def test_columns_missing_from_current_raise_others_are_ignored():
    rng = np.random.default_rng(10)
    frame = _frame(rng, 2_000)
    profile = monitoring.profile(frame.assign(score=rng.random(2_000)), [*NUMERIC, "score"], CATEGORICAL)
    findings = monitoring.compare(profile, frame.assign(extra=1))  # "score" is left to score_findings
    assert set(findings["feature"]) == {*NUMERIC, *CATEGORICAL}
    with pytest.raises(ValueError, match="age"):
        monitoring.compare(profile, frame.drop(columns="age"))
    with pytest.raises(ValueError, match="nope"):
        monitoring.profile(frame, ["nope"], [])


def test_findings_are_sorted_worst_first_and_thresholds_come_from_config():
    rng = np.random.default_rng(11)
    reference = monitoring.profile(_frame(rng, 10_000), NUMERIC, CATEGORICAL)
    current = _frame(rng, 5_000, shift=0.1, missing=0.05, new_level=0.02)
    findings = monitoring.compare(reference, current)
    order = findings["severity"].map(monitoring.SEVERITY_ORDER).to_numpy()
    assert (np.diff(order) >= 0).all() and list(findings.columns) == monitoring.COLUMNS
    for level in ("alert", "warn", "ok"):
        values = findings.loc[findings["severity"] == level, "value"].dropna().to_numpy()
        assert (np.diff(values) <= 0).all()
    lenient = Thresholds(psi=Levels(warn=5, alert=5), wasserstein=Levels(warn=5, alert=5),
                         jensen_shannon=Levels(warn=5, alert=5), missing_rate=Levels(warn=5, alert=5),
                         new_level=Levels(warn=5, alert=5))
    assert monitoring.status(monitoring.compare(reference, current, lenient)) == "ok"
    assert monitoring.status(findings) == "alert" and len(monitoring.reasons(findings, limit=2)) == 2


# -- figures -----------------------------------------------------------------------------------------------

def test_figures_render_from_the_profile():
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(12)
    frame = _frame(rng, 5_000).assign(score=rng.beta(2, 20, 5_000))
    profile = monitoring.profile(frame, [*NUMERIC, "score"], CATEGORICAL)
    current = _frame(rng, 2_000, shift=0.2, new_level=0.05)
    figure = monitoring.overlay_figure(profile, current, ["income", "purpose", "tenure", "age"])
    assert len(figure.axes) == 4
    titles = [ax.get_title() for ax in figure.axes]
    assert titles[0].startswith("income: alert") and titles[1].startswith("purpose: alert")
    labels = [tick.get_text() for tick in figure.axes[1].get_xticklabels()]
    assert "crypto (new)" in labels
    figure.canvas.draw()
    scores = monitoring.score_figure(profile, rng.beta(2, 18, 2_000))
    assert len(scores.axes) == 1 and scores.axes[0].get_title().startswith("score:")
    scores.canvas.draw()
    plt.close("all")
