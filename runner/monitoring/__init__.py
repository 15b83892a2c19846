"""Statistics on data and models: drift and quality findings, their figures, backtests, usage.

Notebooks use the package as one module: ``from runner import monitoring``, then
``monitoring.profile(...)``, ``monitoring.compare(...)``, ``monitoring.status(findings)``. The code lives in
:mod:`runner.monitoring.drift` (statistics and findings), :mod:`runner.monitoring.backtest` and
:mod:`runner.monitoring.usage`.
"""

from runner.monitoring.drift import (
    COLUMNS,
    OUTPUTS,
    PROFILE_VERSION,
    SEVERITY_ORDER,
    chi_square,
    compare,
    jensen_shannon,
    ks_pvalue,
    numeric_stats,
    overlay_figure,
    profile,
    psi,
    reasons,
    score_figure,
    score_findings,
    severity,
    sort_findings,
    status,
    trend_figure,
)

__all__ = [
    "COLUMNS", "OUTPUTS", "PROFILE_VERSION", "SEVERITY_ORDER", "chi_square", "compare", "jensen_shannon", "ks_pvalue",
    "numeric_stats", "overlay_figure", "profile", "psi", "reasons", "score_figure", "score_findings", "severity",
    "sort_findings", "status", "trend_figure",
]
