"""The Python environment a run is planned in, and the check each step process makes against it.

A run records the Python version and a digest of every installed distribution (name and version) it was
planned with. Each step's task carries the planned list, and the step process compares its own environment
with it before the notebook starts: a machine whose packages differ (a worker of a cluster that was not
updated, a venv changed under a running scheduler) refuses the step with one line naming what differs,
instead of running the notebook on other code than the run was checked with. ``--allow-environment-drift``
skips the check.

Distributions are read from ``sys.path`` without the current folder: ``python -m`` puts it first, and a
project's own ``*.egg-info`` there is not part of the environment.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import sys
from importlib.metadata import distributions
from typing import Any

SHOWN = 8  # differences named in the step's error; the rest are counted


def current() -> dict[str, Any]:
    """This process's environment: ``python`` (its version), ``packages`` (normalised name -> version) and
    their ``digest``."""
    here = {"", os.getcwd()}
    packages: dict[str, str] = {}
    for dist in distributions(path=[entry for entry in sys.path if entry not in here]):
        name = dist.metadata["Name"]
        if name:
            packages.setdefault(_normalised(name), dist.version)  # the first on sys.path is the one imported
    python = platform.python_version()
    listing = "\n".join([f"python {python}", *(f"{name}=={version}" for name, version in sorted(packages.items()))])
    return {"python": python, "digest": hashlib.sha256(listing.encode()).hexdigest(), "packages": packages}


def summary(environment: dict[str, Any]) -> dict[str, Any]:
    """What a run's record keeps of it: the Python version, the digest and how many distributions."""
    return {"python": environment["python"], "digest": environment["digest"],
            "packages": len(environment["packages"])}


def differences(planned: dict[str, Any], here: dict[str, Any]) -> list[str]:
    """What differs between the planned environment and this one, one phrase each (``pandas 2.2.3 here, 2.2.2
    planned``); empty when they are the same."""
    found = [] if planned["python"] == here["python"] else [f"python {here['python']} here, {planned['python']} planned"]
    mine, theirs = here["packages"], planned["packages"]
    for name in sorted(set(mine) | set(theirs)):
        if name not in mine:
            found.append(f"{name} missing here ({theirs[name]} planned)")
        elif name not in theirs:
            found.append(f"{name} {mine[name]} here, not planned")
        elif mine[name] != theirs[name]:
            found.append(f"{name} {mine[name]} here, {theirs[name]} planned")
    return found


def mismatch(planned: dict[str, Any], here: dict[str, Any]) -> str | None:
    """Why a process whose environment is ``here`` may not run a step planned in ``planned``, or None when
    they are the same."""
    if here["digest"] == planned["digest"]:
        return None
    found = differences(planned, here)
    shown = "; ".join(found[:SHOWN]) + (f"; and {len(found) - SHOWN} more" if len(found) > SHOWN else "")
    return (f"this machine's Python environment differs from the one the run was planned in: {shown}; install "
            "the same packages here, or run with --allow-environment-drift")


def _normalised(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()
