"""Planning a run: everything that can go wrong before a kernel starts.

:func:`plan_run` checks a :class:`RunRequest` against ``runner.yaml`` and every notebook's parameter contract:
the pipeline and its steps exist, every notebook has a parameters cell, every value fits its parameter and can
be recorded, every ``${...}`` names an upstream step's scrap or a value of the run (:mod:`runner.references`),
every secret comes from the environment (:mod:`runner.secrets`). The :class:`Plan` it returns is what
:func:`runner.run.pipeline.run` runs; ``runner validate`` makes the plans of every pipeline and runs none.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner import notify, references, secrets
from runner.config import Config, PipelineConfig, StepConfig, upstream_of
from runner.errors import ParameterError
from runner.notebook import adapter
from runner.notebook.contract import Parameter, ParameterContract, coerce_value
from runner.run import executors
from runner.store.records import StepRecord

AS_OF = Parameter("as_of", "date", None)


@dataclass(frozen=True)
class RunRequest:
    pipeline: str
    parameters: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # step -> name -> value
    as_of: str | None = None
    trigger: str = "manual"
    max_workers: int | None = None
    executor: str | None = None  # None: runner.yaml's defaults.executor
    executor_options: Mapping[str, Any] = field(default_factory=dict)  # over runner.yaml's executors.<name>
    scheduled_for: str | None = None  # the cron tick a scheduled or backfilled run is for
    # Rerun and resume: run these notebook files instead of runner.yaml's, take the parameters as
    # given instead of merging them into runner.yaml's, and start from the origin run's steps.
    notebooks: Mapping[str, str] = field(default_factory=dict)
    exact_parameters: bool = False
    origin: str | None = None
    check_environment: bool = True  # each step process refuses a Python environment other than the run's
    reuse: Mapping[str, StepRecord] = field(default_factory=dict)  # succeeded steps a resume keeps


@dataclass(frozen=True)
class PlannedStep:
    name: str
    config: StepConfig
    notebook: Path
    contract: ParameterContract
    parameters: dict[str, Any]  # coerced values; values holding ${...} are resolved at start


@dataclass(frozen=True)
class Plan:
    pipeline: str
    config: PipelineConfig
    as_of: str
    steps: dict[str, PlannedStep]
    executor: str = "local"  # checked: it exists and its plugin, if any, imports
    executor_options: Mapping[str, Any] = field(default_factory=dict)  # checked by the executor where it can


def plan_run(config: Config, request: RunRequest, *, environment: bool = True) -> Plan:
    """Check the request against the config and every notebook's parameter contract (and, with
    ``environment``, that the environment variables its secrets name are set here)."""
    pipeline = config.pipeline(request.pipeline)
    executor = executors.choose(request.executor, config)
    executor_options = executors.options(executor, config, request.executor_options)
    notify.check(config)
    unknown = set(request.parameters) - set(pipeline.steps)
    if unknown:
        raise ParameterError(
            f"no step named {sorted(unknown)[0]!r} in pipeline {request.pipeline!r}; steps: {', '.join(pipeline.steps)}"
        )
    as_of = coerce_value(dt.date.today().isoformat() if request.as_of is None else request.as_of, AS_OF, "--as-of")
    steps = {}
    for name, step in pipeline.steps.items():
        notebook = Path(request.notebooks[name]) if name in request.notebooks else config.notebook_path(step)
        contract = adapter.read_contract(notebook)
        given = dict(request.parameters.get(name, {}))
        values = given if request.exact_parameters else {**step.parameters, **given}
        if "as_of" in contract.parameters and "as_of" not in values:
            values["as_of"] = as_of
        for key, value in values.items():  # an unknown name fails now; a secret by ${env.NAME} only
            parameter = contract.parameter(key)
            secrets.check(key, value, parameter.type, parameter.secret, str(notebook), environment=environment)
        deferred = {key: value for key, value in values.items() if references.has_references(value)}
        static = contract.coerce({key: value for key, value in values.items() if key not in deferred})
        steps[name] = PlannedStep(name, step, notebook, contract, {**static, **deferred})
    _check_planned(pipeline, steps)
    return Plan(request.pipeline, pipeline, as_of, steps, executor, executor_options)


def validate(config: Config, pipelines: list[str] | None = None) -> list[Plan]:
    """Plans for the named pipelines (all by default): the checks of a run, without running."""
    return [plan_run(config, RunRequest(name), environment=False) for name in (pipelines or list(config.pipelines))]


def _check_planned(pipeline: PipelineConfig, steps: Mapping[str, PlannedStep]) -> None:
    """What loading runner.yaml checks, for values however given (``-p``, a resumed run's record): each
    ``${...}`` names an upstream step's scrap or a value of the run, and each value can be recorded."""
    for name, planned in steps.items():
        upstream = upstream_of(pipeline.steps, name)
        for key, value in planned.parameters.items():
            for ref in references.iter_references(value):
                if (why := references.problem(ref, name, upstream)) is not None:
                    raise ParameterError(why, str(planned.notebook), key)
        check_recordable(planned.parameters, str(planned.notebook))


def check_recordable(values: Mapping[str, Any], notebook: str) -> None:
    """Every value as JSON holds it: the run's record keeps it, the step process receives it, a rerun repeats it."""
    for key, value in values.items():
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError, RecursionError) as exc:
            raise ParameterError(f"cannot be recorded as JSON ({exc}); give text, numbers, true/false and lists or "
                                 "dicts of them (quote a date inside a list or dict: '2026-01-01')", notebook, key) from None
