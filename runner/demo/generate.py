"""Realistic demo credit applications and their outcomes, deterministic for a seed.

Each month is generated on its own (from ``seed`` and the month), so months can be generated in
any order and again. The default label follows a logistic relationship with the features
(income, debt to income, age, credit history, open loans, employment, purpose, housing); gender
and region have no effect on it. Labels arrive 3 to 6 months after the application.

Drift, from ``Drift.start_month`` on (``k`` = 1 in the first drifting month, 2 in the next, ...):

* income as *reported* drops by ``income_shift``, compounding: it is ``(1 - income_shift) ** k``
  of the true income (think of an upstream change to net income). The risk, and so the label,
  still follows the true income: a model trained before the drift over-estimates risk.
* a new purpose level (``new_purpose_level``) takes 7% of applications, with a higher risk; it is
  not in the dictionary's levels, so validation flags it.
* ``employment_years`` goes missing ``missing_rate_rise`` more often per drifting month.

Drift uses its own random stream: the same month with and without drift has the same applicants.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

PURPOSES = {"car": 0.25, "home": 0.15, "education": 0.10, "business": 0.10, "debt_consolidation": 0.40}
HOME_OWNERSHIP = {"rent": 0.40, "mortgage": 0.38, "own": 0.18, "other": 0.04}
REGIONS = {"north": 0.22, "south": 0.24, "east": 0.18, "west": 0.21, "central": 0.15}
GENDERS = {"female": 0.485, "male": 0.485, "non_binary": 0.01, "undisclosed": 0.02}
LOAN_BASE = {"car": 15_000, "home": 180_000, "education": 20_000, "business": 40_000, "debt_consolidation": 12_000}
# Log-odds added by each level; the new drift level is riskier than any known one.
PURPOSE_RISK = {"car": 0.0, "home": -0.35, "education": 0.25, "business": 0.55, "debt_consolidation": 0.35}
HOME_RISK = {"rent": 0.25, "mortgage": -0.15, "own": -0.3, "other": 0.35}
NEW_PURPOSE_RISK = 1.0
NEW_PURPOSE_SHARE = 0.07
BASE_MISSING = {"income": 0.025, "employment_years": 0.04}
INTERCEPT = -2.8  # sets the default rate near 11%
FIRST_NAMES = ("anna", "ben", "carla", "david", "elif", "finn", "greta", "hugo", "ines", "jonas", "karin", "lars",
               "maria", "nils", "olga", "paul", "rosa", "sven", "tara", "umut", "vera", "wim", "yara", "zoe")
LAST_NAMES = ("schmidt", "muller", "rossi", "garcia", "novak", "jansen", "dubois", "kowalski", "silva", "berg",
              "larsen", "weber", "costa", "horvat", "meyer", "fischer", "moreau", "nagy", "popescu", "smith")


@dataclass(frozen=True)
class Drift:
    start_month: str | None = "2026-07"  # first drifting month (YYYY-MM); None or "" = never
    income_shift: float = 0.06  # relative drop of reported income per drifting month, compounding
    new_purpose_level: str = "crypto"  # a purpose level not in the dictionary, from start_month on
    missing_rate_rise: float = 0.05  # extra missing rate of employment_years per drifting month

    def months_in(self, month: str) -> int:
        """0 before the drift starts (or without one), 1 in its first month, 2 in the next, ..."""
        if not self.start_month:
            return 0
        elapsed = _period(month).ordinal - _period(self.start_month).ordinal
        return max(elapsed + 1, 0)


def months(start: str, count: int) -> list[str]:
    """``count`` consecutive months from ``start``: ``["2026-01", "2026-02", ...]``."""
    first = _period(start)
    return [str(first + offset) for offset in range(count)]


def generate_month(month: str, *, n: int = 2000, seed: int = 7,
                   drift: Drift | None = Drift()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(applications received in ``month``, their outcomes); the same arguments give the same frames."""
    period = _period(month)
    base_seq, drift_seq = np.random.SeedSequence([seed, period.year, period.month, n]).spawn(2)
    rng, drift_rng = np.random.default_rng(base_seq), np.random.default_rng(drift_seq)
    k = drift.months_in(month) if drift else 0
    apps = _applicants(period, n, rng)
    if k:
        apps.loc[drift_rng.random(n) < NEW_PURPOSE_SHARE, "purpose"] = drift.new_purpose_level
    defaulted = rng.random(n) < _default_probability(apps, drift.new_purpose_level if drift else None)
    offsets = pd.to_timedelta(rng.integers(91, 184, n), unit="D")
    outcomes = pd.DataFrame({
        "application_id": apps["application_id"],
        "defaulted": defaulted.astype("int64"),
        "observed_on": apps["applied_on"] + offsets,
    })
    for column, rate in BASE_MISSING.items():
        apps.loc[rng.random(n) < rate, column] = np.nan
    if k:
        apps["income"] = (apps["income"] * (1 - drift.income_shift) ** k).round(-1)
        extra = min(drift.missing_rate_rise * k, 0.9)
        apps.loc[drift_rng.random(n) < extra, "employment_years"] = np.nan
    return apps, outcomes


def _period(month: str) -> pd.Period:
    if not isinstance(month, str) or len(month) != 7 or month[4] != "-":
        raise ValueError(f"expected a month as 'YYYY-MM', got {month!r}")
    return pd.Period(month, freq="M")


def _choice(rng: np.random.Generator, shares: dict[str, float], n: int) -> np.ndarray:
    return rng.choice(np.array(list(shares)), size=n, p=np.array(list(shares.values())))


def _applicants(period: pd.Period, n: int, rng: np.random.Generator) -> pd.DataFrame:
    """The applicants of a month before any drift or missing values."""
    numbers = pd.Series(np.arange(1, n + 1)).astype(str).str.zfill(6)
    applied_on = period.start_time + pd.to_timedelta(rng.integers(0, period.days_in_month, n), unit="D")
    age = np.clip(np.round(rng.normal(41, 12, n)), 18, 85).astype("int64")
    income = np.exp(rng.normal(10.6 + 0.012 * np.clip(age - 25, 0, 30), 0.5, n))
    income = np.clip(np.round(income, -2), 6_000, 2_000_000)
    purpose = _choice(rng, PURPOSES, n)
    loan_base = pd.Series(purpose).map(LOAN_BASE).to_numpy(dtype=float)
    loan_amount = loan_base * np.sqrt(income / 45_000) * rng.lognormal(0.0, 0.45, n)
    long_term = rng.choice([120, 180, 240, 300, 360], size=n)
    short_term = rng.choice([12, 24, 36, 48, 60, 72], size=n)
    num_open_loans = rng.poisson(1.3, n).astype("int64")
    return pd.DataFrame({
        "application_id": f"A{period}-" + numbers,
        "applied_on": applied_on.astype("datetime64[ns]"),
        "month": str(period),
        "age": age,
        "income": income,
        "loan_amount": np.clip(np.round(loan_amount, -2), 500, 2_000_000),
        "term_months": np.where(purpose == "home", long_term, short_term).astype("int64"),
        "employment_years": np.round(np.minimum(age - 18, rng.gamma(2.0, 3.5, n)), 1),
        "debt_to_income": np.round(np.clip(rng.beta(2.0, 6.0, n) + 0.03 * num_open_loans, 0, 1.5), 3),
        "credit_history_months": np.round((age - 18) * 12 * rng.beta(2.5, 2.0, n)).astype("int64"),
        "num_open_loans": num_open_loans,
        "purpose": purpose,
        "home_ownership": _choice(rng, HOME_OWNERSHIP, n),
        "region": _choice(rng, REGIONS, n),
        "email": _emails(rng, n),
        "gender": _choice(rng, GENDERS, n),
    }).astype({"application_id": "str", "month": "str", "purpose": "str", "home_ownership": "str",
               "region": "str", "email": "str", "gender": "str"})


def _emails(rng: np.random.Generator, n: int) -> pd.Series:
    first = pd.Series(np.array(FIRST_NAMES)[rng.integers(0, len(FIRST_NAMES), n)])
    last = pd.Series(np.array(LAST_NAMES)[rng.integers(0, len(LAST_NAMES), n)])
    digits = pd.Series(rng.integers(1, 1000, n)).astype(str)
    return first + "." + last + digits + "@example.com"


def _default_probability(apps: pd.DataFrame, new_level: str | None) -> np.ndarray:
    """Probability of default from the true (complete, undrifted) features."""
    purpose_risk = apps["purpose"].map({**PURPOSE_RISK, **({new_level: NEW_PURPOSE_RISK} if new_level else {})})
    logit = (
        INTERCEPT
        - 0.9 * (np.log(apps["income"]) - 10.8)
        + 3.2 * (apps["debt_to_income"] - 0.3)
        - 0.03 * (apps["age"] - 41)
        - 0.004 * (apps["credit_history_months"] - 150)
        + 0.25 * (apps["num_open_loans"] - 1.3)
        - 0.05 * (apps["employment_years"] - 6)
        + 0.4 * (apps["loan_amount"] / apps["income"] > 1.0)
        + purpose_risk.to_numpy(dtype=float)
        + apps["home_ownership"].map(HOME_RISK).to_numpy(dtype=float)
    )
    return 1 / (1 + np.exp(-logit.to_numpy(dtype=float)))
