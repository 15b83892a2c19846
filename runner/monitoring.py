"""Drift and quality statistics, vectorized with numpy and pandas.

A first drift report of a batch against the training data: PSI on reference-quantile bins for
numeric features, new levels and PSI for categorical ones, and missing-rate changes. A missing
rate and a new level are findings of their own, never hidden by dropping missing values.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

EPSILON = 1e-4  # floor for empty bins, so PSI stays finite


@dataclass(frozen=True)
class Thresholds:
    psi_warn: float = 0.1
    psi_alert: float = 0.25
    missing_warn: float = 0.05  # absolute rise of the missing rate
    missing_alert: float = 0.15


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index of two share vectors over the same bins."""
    expected = np.clip(np.asarray(expected, dtype=float), EPSILON, None)
    actual = np.clip(np.asarray(actual, dtype=float), EPSILON, None)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def numeric_shares(reference: pd.Series, current: pd.Series, bins: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shares of non-missing values in reference-quantile bins; out-of-range values land in the end bins."""
    ref = reference.dropna().to_numpy(dtype=float)
    cur = current.dropna().to_numpy(dtype=float)
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)))
    inner = edges[1:-1]
    ref_counts = np.bincount(np.searchsorted(inner, ref, side="right"), minlength=len(inner) + 1)
    cur_counts = np.bincount(np.searchsorted(inner, cur, side="right"), minlength=len(inner) + 1)
    return edges, ref_counts / max(len(ref), 1), cur_counts / max(len(cur), 1)


def level_shares(reference: pd.Series, current: pd.Series) -> pd.DataFrame:
    """Shares of each level (missing counted as its own level) over the union of levels."""
    ref = reference.astype("object").fillna("<missing>").value_counts(normalize=True)
    cur = current.astype("object").fillna("<missing>").value_counts(normalize=True)
    return pd.DataFrame({"reference": ref, "current": cur}).fillna(0.0)


def drift_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
    thresholds: Thresholds = Thresholds(),
) -> pd.DataFrame:
    """One row per finding: feature, statistic, value, severity (ok / warn / alert), detail."""
    rows = []

    def severity(value: float, warn: float, alert: float) -> str:
        return "alert" if value >= alert else "warn" if value >= warn else "ok"

    for column in numeric + categorical:
        if column in numeric:
            _, ref, cur = numeric_shares(reference[column], current[column])
            value = psi(ref, cur)
        else:
            shares = level_shares(reference[column], current[column])
            value = psi(shares["reference"].to_numpy(), shares["current"].to_numpy())
            new = shares[(shares["reference"] == 0) & (shares["current"] > 0)]
            for level, share in new["current"].items():
                rows.append((column, "new_level", float(share), "alert", f"new level {level!r} in {share:.1%} of rows"))
        rows.append((column, "psi", value, severity(value, thresholds.psi_warn, thresholds.psi_alert), ""))
        rise = float(current[column].isna().mean() - reference[column].isna().mean())
        rows.append((column, "missing_rate_change", rise,
                     severity(rise, thresholds.missing_warn, thresholds.missing_alert),
                     f"missing {reference[column].isna().mean():.1%} -> {current[column].isna().mean():.1%}"))
    report = pd.DataFrame(rows, columns=["feature", "statistic", "value", "severity", "detail"])
    order = {"alert": 0, "warn": 1, "ok": 2}
    return report.sort_values(["severity", "value"], key=lambda s: s.map(order) if s.name == "severity" else -s)


def status(report: pd.DataFrame) -> str:
    """The worst severity in a report: ok, warn or alert."""
    for level in ("alert", "warn"):
        if (report["severity"] == level).any():
            return level
    return "ok"
