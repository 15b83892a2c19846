"""``runner.yaml`` loaded into frozen, validated objects, and the environment variables we read.

Every environment variable the runner reads is declared once here (:data:`ENV_VARS`), with
its meaning and default; reading a bad value names the variable. Relative paths in
``runner.yaml`` are relative to the file's folder, the *project root*.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, WithJsonSchema, field_validator, model_validator

from runner import references
from runner.errors import ConfigError

REFERENCE = "the runner.yaml reference, docs/reference/config.md"  # where a message sends someone who got a key wrong
NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]*$"
# A duration: seconds, optionally with a unit (s, m, h). Read by parse_duration; the JSON Schema says the same.
DURATION = r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*"


@dataclass(frozen=True)
class EnvVar:
    name: str
    meaning: str
    default: str

    def get(self) -> str | None:
        value = os.environ.get(self.name, "").strip()
        return value or None


ENV_CONFIG = EnvVar("RUNNER_CONFIG", "path of runner.yaml", "./runner.yaml")
ENV_HOME = EnvVar("RUNNER_HOME", "folder of the embedded stores", "<project root>/.runner")
ENV_RUN_STORE = EnvVar("RUNNER_RUN_STORE", "run store (path or fsspec URL)", "<home>/runs")
ENV_TRACKING_URI = EnvVar("RUNNER_TRACKING_URI", "MLflow tracking URI", "sqlite:///<home>/mlflow.db")
ENV_MLFLOW_TIMEOUT = EnvVar("RUNNER_MLFLOW_TIMEOUT", "the longest one request to an MLflow server may take, its "
                            "retries included: seconds or '30s', '2m'", "60s")
ENV_ARTIFACTS = EnvVar("RUNNER_ARTIFACTS", "MLflow artifact root for new experiments", "<home>/mlartifacts")
ENV_WAREHOUSE = EnvVar("RUNNER_WAREHOUSE_URL", "SQLAlchemy URL of the warehouse", "sqlite:///<home>/warehouse.db")
ENV_SNAPSHOTS = EnvVar("RUNNER_SNAPSHOTS", "content-addressed data snapshots: a folder or an fsspec URL (s3://...)",
                       "<home>/snapshots")
ENV_USER = EnvVar("RUNNER_USER", "who is recorded as training or promoting a model", "the login name")
ENV_NAMESPACE = EnvVar("RUNNER_NAMESPACE", "where a notebook run by hand writes: 'production' only as an explicit "
                       "opt-in", "user:<login name> by hand; production under the runner")
ENV_WAREHOUSE_BUSY_TIMEOUT = EnvVar("RUNNER_WAREHOUSE_BUSY_TIMEOUT", "how long one attempt of a warehouse write waits "
                                    "for another writer's lock: seconds or '30s', '2m'", "30s")
ENV_WAREHOUSE_WRITE_ATTEMPTS = EnvVar("RUNNER_WAREHOUSE_WRITE_ATTEMPTS", "attempts of a warehouse write that meets a "
                                      "lock, a deadlock or a lost connection (1: no retry)", "4")
ENV_VARS = (ENV_CONFIG, ENV_HOME, ENV_RUN_STORE, ENV_TRACKING_URI, ENV_MLFLOW_TIMEOUT, ENV_ARTIFACTS, ENV_WAREHOUSE,
            ENV_SNAPSHOTS, ENV_USER, ENV_NAMESPACE, ENV_WAREHOUSE_BUSY_TIMEOUT, ENV_WAREHOUSE_WRITE_ATTEMPTS)
# Runs started by the runner write to production; a notebook run any other way (JupyterLab, nbconvert, bare
# papermill) writes to its author's namespace, user:<name>, which production readers never see.
PRODUCTION = "production"


def current_user() -> str:
    """Who trains or promotes: ``RUNNER_USER``, else the login name."""
    import getpass

    return ENV_USER.get() or getpass.getuser()


def parse_duration(value: Any) -> float | None:
    """Seconds from a number or a string like ``90``, ``45s``, ``30m``, ``2h``; NaN and infinity are refused."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            seconds = float(value)
        except OverflowError:  # an int beyond any float
            seconds = math.inf
        if math.isfinite(seconds):
            return seconds
    match = None if isinstance(value, (bool, int, float)) else re.fullmatch(DURATION, str(value))
    seconds = float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)] if match else math.inf
    if not math.isfinite(seconds):
        shown = repr(value) if len(str(value)) <= 40 else f"{str(value)[:37]}..."
        raise ValueError(f"expected seconds or a duration like '90s', '30m', '2h', got {shown}")
    return seconds


def positive_deadline(value: float | None) -> float | None:
    """A deadline of 0 or less is refused: it would mean no deadline at all (0) or one passed at once."""
    if value is not None and value <= 0:
        raise ValueError(f"a deadline must be more than 0 seconds, got {value:g}; leave the key out for the default")
    return value


def _duration_schema(**bounds: float) -> WithJsonSchema:
    """The JSON Schema of a duration field (seconds, or a string like '90s'); only the schema, for editors.

    ``parse_duration`` still reads the value; ``bounds`` repeat the field's own ``ge``/``gt`` for numbers.
    """
    return WithJsonSchema({"anyOf": [{"type": "number", **bounds}, {"type": "string", "pattern": f"^{DURATION}$"}]})


Duration = Annotated[float, _duration_schema()]
# A list of names, or one name alone (read as a list of one).
OneOrMany = Annotated[tuple[str, ...], WithJsonSchema(
    {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]})]
# Keys that name pipelines or steps.
NAMED = {"propertyNames": {"pattern": NAME_PATTERN}}


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# What may be retried: a kernel or step process that died, a step or cell deadline, and (only when
# a step names it) an exception raised by a cell.
RetryOn = Literal["dead_kernel", "timeout", "cell_error"]


class StepConfig(_Frozen):
    """A step: a notebook run with parameters once the steps it needs have succeeded."""

    notebook: str = Field(description="path of the notebook, relative to the project root")
    parameters: dict[str, Any] = Field(
        default_factory=dict, description="values for the notebook's parameters; ${steps.<step>.<scrap>}, "
        "${as_of}, ${run_id} and ${pipeline} are filled in when the step starts")
    needs: OneOrMany = Field((), description="steps that must succeed first: a name or a list of names")
    timeout: Duration | None = Field(None, description="deadline for the whole step: seconds or '90s', '30m', '2h'")
    cell_timeout: Duration | None = Field(None, description="deadline for one cell: seconds or '90s', '30m', '2h'")
    retries: int = Field(0, ge=0, le=20, description="attempts after the first, for transient failures")
    retry_delay: Annotated[float, _duration_schema(minimum=0)] = Field(
        30.0, ge=0, description="wait before the first retry: seconds or '90s', '30m', '2h'")
    retry_backoff: float = Field(2.0, ge=1, description="each further retry waits this many times longer")
    retry_on: tuple[RetryOn, ...] = Field(
        ("dead_kernel", "timeout"), description="what is retried; cell_error only when listed")

    _durations = field_validator("timeout", "cell_timeout", "retry_delay", mode="before")(parse_duration)
    _deadlines = field_validator("timeout", "cell_timeout")(positive_deadline)

    @field_validator("needs", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return (value,) if isinstance(value, str) else value


# The name of an executor or notifier: built in, or an entry point's name in a plugin's distribution.
PLUGIN_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class NotifyConfig(_Frozen):
    """Where notices go: monitoring ``warn`` / ``alert`` and failed runs (``runner.notify``)."""

    webhook: str | None = Field(None, description="URL that receives the event as a JSON POST")
    command: str | None = Field(None, description="shell command run with the event as JSON on stdin")
    channels: dict[str, dict[str, Any]] = Field(
        default_factory=dict, json_schema_extra={"propertyNames": {"pattern": PLUGIN_NAME}},
        description="notifiers from plugins (entry point group notebook_runner.notifiers), by name, each with "
        "its options: {name: {option: value}}")
    events: tuple[Literal["warn", "alert", "failure"], ...] = Field(
        ("alert", "failure"), description="which events are sent")
    timeout: Annotated[float, _duration_schema(exclusiveMinimum=0)] = Field(
        10.0, gt=0, description="how long one channel (webhook, command, plugin) may take: seconds or '30s', '1m'")

    _durations = field_validator("timeout", mode="before")(parse_duration)

    @field_validator("webhook")
    @classmethod
    def _http(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"webhook must be an http:// or https:// URL, got {value!r}")
        return value

    @field_validator("channels")
    @classmethod
    def _plugin_names(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for name in value:
            if name in ("webhook", "command"):
                raise ValueError(f"the {name} is set by its own key {name!r} beside channels, not as a channel")
            if not re.match(PLUGIN_NAME, name):
                raise ValueError(f"channel name {name!r} must match {PLUGIN_NAME}")
        return value


class Levels(_Frozen):
    """An effect size at which a finding becomes ``warn``, and one at which it becomes ``alert``."""

    warn: float = Field(ge=0, description="effect size at which a finding warns")
    alert: float = Field(ge=0, description="effect size at which a finding alerts; not below warn")

    @model_validator(mode="after")
    def _ordered(self) -> Levels:
        if self.alert < self.warn:
            raise ValueError(f"alert ({self.alert}) must not be below warn ({self.warn})")
        return self


class Thresholds(_Frozen):
    """Monitoring verdicts come from effect sizes; p-values are reported, never decisive.

    Defaults: PSI 0.1 / 0.25 (the usual credit-scoring rule of thumb); Wasserstein distance divided
    by the reference's standard deviation 0.1 / 0.2 (0.1 is Evidently's default); Jensen-Shannon
    distance in base 2 0.12 / 0.24 (0.12 in base 2 is Evidently's default 0.1 in natural-log
    units: the distance scales by sqrt(ln 2)). Shares and rates are absolute.
    """

    psi: Levels = Field(Levels(warn=0.1, alert=0.25), description="population stability index of an input")
    jensen_shannon: Levels = Field(Levels(warn=0.12, alert=0.24), description="Jensen-Shannon distance (base 2) "
                                   "of a categorical input")
    wasserstein: Levels = Field(Levels(warn=0.1, alert=0.2), description="Wasserstein distance of a numeric input, "
                                "over the reference's standard deviation")
    missing_rate: Levels = Field(Levels(warn=0.02, alert=0.1), description="rise of the share of missing values")
    new_level: Levels = Field(Levels(warn=0.0, alert=0.01),
                              description="share of rows in levels the reference never had")
    out_of_range: Levels = Field(Levels(warn=0.001, alert=0.01),
                                 description="share outside the dictionary's range or levels")
    score_psi: Levels = Field(Levels(warn=0.1, alert=0.25), description="population stability index of the scores")
    score_mean_shift: Levels = Field(Levels(warn=0.02, alert=0.05), description="absolute change of the mean score")
    row_count: Levels = Field(Levels(warn=0.3, alert=0.6),
                              description="relative distance from the median row count of recent runs")
    failed_runs: Levels = Field(Levels(warn=1, alert=3),
                                description="failed, interrupted or empty runs since the last good one")
    latency_increase: Levels = Field(Levels(warn=0.5, alert=1.0),
                                     description="relative rise of latency over the median of recent runs")
    performance_drop: Levels = Field(Levels(warn=0.02, alert=0.05),
                                     description="champion's AUC below its training holdout AUC")
    api_error_rate: Levels = Field(Levels(warn=0.01, alert=0.05),
                                   description="share of the API's requests not answered with scores (rejected "
                                   "or failed)")
    api_latency_p99_ms: Levels = Field(Levels(warn=500.0, alert=2000.0),
                                       description="99th percentile of the API's request latency, in milliseconds")


class MonitoringConfig(_Frozen):
    """Monitoring verdicts (``runner.monitoring.drift``): the thresholds and when the monitor step fails."""

    thresholds: Thresholds = Field(Thresholds(), description="warn and alert levels per statistic")
    fail_on: Literal["warn", "alert"] | None = Field(
        None, description="fail the monitoring step (after its results are saved) at this status or worse")


class ScheduleConfig(_Frozen):
    """When the scheduler starts a pipeline: a cron expression in a timezone (``runner.scheduling.ticks``)."""

    cron: str = Field(description="five-field cron expression; croniter's extensions such as L (last day) work")
    timezone: str = Field("UTC", description="IANA name, e.g. Europe/Amsterdam; ticks follow its DST changes")
    misfire: Literal["skip", "catch_up"] = Field(
        "skip", description="ticks missed while no scheduler ran: skip them, or run each of them, oldest first")
    misfire_grace: Annotated[float, _duration_schema(exclusiveMinimum=0)] = Field(
        600.0, gt=0, description="a tick this late still runs under 'skip': seconds or '10m', '6h'")
    max_catch_up: int | None = Field(
        None, ge=1, description="under 'catch_up', run at most this many missed ticks (the newest); skip older ones")
    enabled: bool = Field(True, description="false: the scheduler leaves the pipeline alone")

    _durations = field_validator("misfire_grace", mode="before")(parse_duration)

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        from croniter import croniter

        if len(value.split()) != 5 or not croniter.is_valid(value):
            raise ValueError(f"not a five-field cron expression (minute hour day month weekday): {value!r}")
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {value!r}; use an IANA name such as Europe/Amsterdam or UTC") from None
        return value


class PipelineConfig(_Frozen):
    """A pipeline: steps in dependency order, the purpose its data is used for, and an optional schedule."""

    purpose: str | None = Field(None, description="what the data is used for: a purpose of the data dictionary")
    description: str = Field("", description="what the pipeline is for, in a sentence")
    schedule: ScheduleConfig | None = Field(None, description="when the scheduler starts the pipeline")
    steps: dict[str, StepConfig] = Field(json_schema_extra=NAMED, description="the steps, by name")
    notify: NotifyConfig | None = Field(None, description="replaces the top-level notify for this pipeline")
    key_scraps: tuple[str, ...] = Field(
        (), description="the scraps the review site's index shows for a run, after its verdict: STEP.NAME, or NAME of "
        "any step, in this order; empty: numbers first, then flags and short strings")

    @field_validator("steps")
    @classmethod
    def _steps_form_a_dag(cls, steps: dict[str, StepConfig]) -> dict[str, StepConfig]:
        if not steps:
            raise ValueError("a pipeline needs at least one step")
        for name, step in steps.items():
            if not re.match(NAME_PATTERN, name):
                raise ValueError(f"step name {name!r} must match {NAME_PATTERN}")
            for need in step.needs:
                if need not in steps:
                    raise ValueError(f"step {name!r} needs unknown step {need!r}; steps: {sorted(steps)}")
        order = topological_order(steps)
        for name, step in steps.items():
            ancestors = upstream_of(steps, name)
            for key, value in step.parameters.items():
                for ref in references.iter_references(value):
                    if (why := references.problem(ref, name, ancestors)) is not None:
                        raise ValueError(f"parameter {key!r}: {why}")
        return {name: steps[name] for name in order}


class StoresConfig(_Frozen):
    """Where things live; environment variables override each key (docs/guides/pipelines.md, "Where things live")."""

    home: str = Field(".runner", description="folder of the embedded stores ($RUNNER_HOME)")
    runs: str | None = Field(None, description="run store: a folder or an fsspec URL ($RUNNER_RUN_STORE)")
    tracking: str | None = Field(None, description="MLflow tracking URI ($RUNNER_TRACKING_URI)")
    artifacts: str | None = Field(None, description="MLflow artifact root of new experiments ($RUNNER_ARTIFACTS)")
    warehouse: str | None = Field(None, description="SQLAlchemy URL of the warehouse ($RUNNER_WAREHOUSE_URL)")
    snapshots: str | None = Field(None, description="data snapshots: a folder or an fsspec URL ($RUNNER_SNAPSHOTS)")


class ModelPolicy(_Frozen):
    """How a newly trained version of a registered model may become the champion."""

    metric: str = Field("auc", description="the holdout metric versions are compared on")
    higher_is_better: bool = Field(True, description="false for a metric such as a loss")
    margin: float = Field(0.0, ge=0, description="a new version must beat the champion by at least this much")


class DefaultsConfig(_Frozen):
    """Defaults for every step and run."""

    cell_timeout: Duration | None = Field(3600.0, description="deadline for one cell: seconds or '90s', '30m', '2h'")
    timeout: Duration | None = Field(None, description="deadline for a whole step: seconds or '90s', '30m', '2h'")
    max_workers: int = Field(1, ge=1, description="steps run at once")
    executor: str = Field("local", pattern=PLUGIN_NAME, description="where steps run: local (this machine) or an "
                          "executor from a plugin (entry point group notebook_runner.executors); --executor overrides")
    # Installed libraries a kernel imports while it waits for its step (start-up off the critical path).
    preload: tuple[str, ...] = Field(("scrapbook",), description="libraries the kernels' fork server imports once, so "
                                     "that each step's kernel starts with them (runner.notebook.forkserver)")

    _durations = field_validator("timeout", "cell_timeout", mode="before")(parse_duration)
    _deadlines = field_validator("timeout", "cell_timeout")(positive_deadline)


class _ConfigFile(_Frozen):
    """runner.yaml: the project's pipelines and where their stores are (docs/reference/config.md)."""

    stores: StoresConfig = Field(StoresConfig(), description="where things live")
    defaults: DefaultsConfig = Field(DefaultsConfig(), description="defaults for every step and run")
    dictionary: str = Field("data/dictionary.yaml", description="the data dictionary, relative to the project root")
    models: dict[str, ModelPolicy] = Field(
        default_factory=dict, description="per registered model: when a new version may replace the champion")
    monitoring: MonitoringConfig = Field(MonitoringConfig(), description="monitoring thresholds and fail_on")
    notify: NotifyConfig = Field(NotifyConfig(), description="where warn, alert and failure notices go")
    executors: dict[str, dict[str, Any]] = Field(
        default_factory=dict, json_schema_extra={"propertyNames": {"pattern": PLUGIN_NAME}},
        description="options of each executor, by name: {dask: {address: 'tcp://scheduler:8786'}}; the run's "
        "executor (defaults.executor or --executor) gets its own")
    pipelines: dict[str, PipelineConfig] = Field(json_schema_extra=NAMED, description="the pipelines, by name")

    @model_validator(mode="after")
    def _names(self) -> _ConfigFile:
        for name in self.pipelines:
            if not re.match(NAME_PATTERN, name):
                raise ValueError(f"pipeline name {name!r} must match {NAME_PATTERN}")
        return self


@dataclass(frozen=True)
class Stores:
    """Resolved locations: environment variable, else ``runner.yaml``, else the embedded default."""

    home: Path
    runs: str
    tracking_uri: str
    artifacts: str
    warehouse_url: str
    snapshots: str  # a folder or an fsspec URL

    def env(self) -> dict[str, str]:
        """These locations as the environment variables that set them: a process given them (a step's kernel,
        on whatever machine) resolves the very stores this one did, whatever its own runner.yaml says."""
        return {ENV_HOME.name: str(self.home), ENV_RUN_STORE.name: self.runs, ENV_TRACKING_URI.name: self.tracking_uri,
                ENV_ARTIFACTS.name: self.artifacts, ENV_WAREHOUSE.name: self.warehouse_url,
                ENV_SNAPSHOTS.name: self.snapshots}


@dataclass(frozen=True)
class Config:
    source: Path
    root: Path
    stores: Stores
    defaults: DefaultsConfig
    pipelines: dict[str, PipelineConfig]
    dictionary: Path
    models: dict[str, ModelPolicy]
    monitoring: MonitoringConfig = MonitoringConfig()
    notify: NotifyConfig = NotifyConfig()
    executors: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # options by executor name

    def notify_for(self, pipeline: str) -> NotifyConfig:
        """The pipeline's own ``notify`` if it has one, else the project's."""
        own = self.pipelines[pipeline].notify if pipeline in self.pipelines else None
        return own or self.notify

    def model_policy(self, name: str) -> ModelPolicy:
        return self.models.get(name, ModelPolicy())

    def pipeline(self, name: str) -> PipelineConfig:
        if name not in self.pipelines:
            raise ConfigError(
                f"no pipeline named {name!r}; known: {', '.join(sorted(self.pipelines)) or 'none'}",
                str(self.source),
                "pipelines",
            )
        return self.pipelines[name]

    def notebook_path(self, step: StepConfig) -> Path:
        return (self.root / step.notebook).resolve()


def templates(kind: str) -> Path:
    """The folder ``templates/<kind>`` (``notebooks`` for ``runner new``/``init``, ``review`` for the site):
    the source tree's in a checkout or editable install, else where the wheel installed it
    (``<prefix>/share/notebook-runner/templates/<kind>``, pyproject's data-files)."""
    import sys

    checkout = Path(__file__).resolve().parents[1] / "templates" / kind
    return checkout if checkout.is_dir() else Path(sys.prefix) / "share" / "notebook-runner" / "templates" / kind


def config_path(path: str | Path | None = None) -> Path:
    return Path(path or ENV_CONFIG.get() or ENV_CONFIG.default).resolve()


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A mapping holds the same key twice; ``path`` is the key's dotted path, ``lines`` where both are."""

    def __init__(self, path: str, first: yaml.Mark, second: yaml.Mark):
        super().__init__("while constructing a mapping", first, f"found duplicate key {path!r}", second)
        self.path = path
        self.lines = (first.line + 1, second.line + 1)


class UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader, except that a key given twice in one mapping is a :class:`DuplicateKeyError`.

    PyYAML keeps the last of the two silently. Keys merged in with ``<<`` may still be overridden, as YAML
    says. Use it as ``yaml.load(text, Loader=UniqueKeyLoader)``, or read a file with :func:`read_yaml`.
    """

    def construct_document(self, node: yaml.Node) -> Any:
        self._refuse_duplicate_keys(node, (), (), set())
        return super().construct_document(node)

    def _refuse_duplicate_keys(self, node: yaml.Node, path: tuple[str, ...], inside: tuple[int, ...],
                               seen: set[int]) -> None:
        """Walk the node tree before it is built; ``inside`` holds the nodes around ``node``."""
        if id(node) in inside:  # `a: &x [*x]`: nothing we read holds itself, and checks of it would never end
            raise yaml.constructor.ConstructorError(None, None, "found an alias of a node inside that node itself",
                                                    node.start_mark)
        if id(node) in seen:  # an alias of a node already checked
            return
        seen.add(id(node))
        inside = (*inside, id(node))
        if isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                self._refuse_duplicate_keys(item, (*path, str(index)), inside, seen)
        elif isinstance(node, yaml.MappingNode):
            first: dict[Any, yaml.Mark] = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    self._refuse_duplicate_keys(value_node, path, inside, seen)
                    continue
                if not isinstance(key_node, yaml.ScalarNode):  # a complex key: unhashable, the constructor says so
                    continue
                key = self.construct_object(key_node, deep=True)
                shown = (*path, str(key))
                if key in first:
                    raise DuplicateKeyError(".".join(shown), first[key], key_node.start_mark)
                first[key] = key_node.start_mark
                self._refuse_duplicate_keys(value_node, shown, inside, seen)


def read_yaml(path: str | Path) -> Any:
    """The YAML file ``path``, read with :class:`UniqueKeyLoader`. Text that is not UTF-8, YAML that does
    not parse and a key given twice are each a :class:`ConfigError` naming the file and the line (and the
    key's path); a missing file is left to the caller (:class:`FileNotFoundError`)."""
    source = str(path)
    data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ConfigError(f"not UTF-8 text (byte 0x{data[exc.start]:02x}); save the file as UTF-8", source,
                          f"line {line}") from None
    try:
        return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except DuplicateKeyError as exc:
        raise ConfigError(f"key given twice (lines {exc.lines[0]} and {exc.lines[1]}); YAML would silently keep "
                          "only the last: remove one", source, exc.path) from None
    except yaml.reader.ReaderError as exc:
        line = text[:exc.position].count("\n") + 1
        code = exc.character if isinstance(exc.character, int) else ord(exc.character)
        raise ConfigError(f"not valid YAML: character #x{code:04x} is not allowed ({exc.reason})", source,
                          f"line {line}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        problem = " ".join(str(getattr(exc, "problem", None) or getattr(exc, "context", None) or exc).split())
        raise ConfigError(f"not valid YAML: {problem}", source, f"line {mark.line + 1}" if mark else "") from None
    except RecursionError:
        raise ConfigError("not valid YAML here: nested too deeply", source) from None
    except ValueError as exc:  # a value PyYAML cannot build, such as an int of more than 4300 digits
        raise ConfigError(f"not valid YAML here: {' '.join(str(exc).split(';')[0].split())}", source) from None


def load_config(path: str | Path | None = None) -> Config:
    """Read and validate ``runner.yaml``; every problem is a :class:`ConfigError` naming file and key."""
    source = config_path(path)
    if not source.is_file():
        raise ConfigError(
            "file not found; create runner.yaml in the project root (`runner init` makes a project; docs/getting-started.md), "
            f"pass --config or set {ENV_CONFIG.name}",
            str(source),
        )
    raw = read_yaml(source)
    if not isinstance(raw, dict):
        raise ConfigError("expected a mapping with a 'pipelines' key", str(source))
    try:
        parsed = _ConfigFile.model_validate(raw)
    except ValidationError as exc:
        raise invalid(exc, str(source), REFERENCE) from None
    root = source.parent
    return Config(
        source=source,
        root=root,
        stores=_resolve_stores(parsed.stores, root),
        defaults=parsed.defaults,
        pipelines=parsed.pipelines,
        dictionary=(root / parsed.dictionary).resolve(),
        models=parsed.models,
        monitoring=parsed.monitoring,
        notify=parsed.notify,
        executors=parsed.executors,
    )


def invalid(exc: ValidationError, source: str, reference: str) -> ConfigError:
    """pydantic's first complaint as a ConfigError naming the file, the key path and the fix."""
    # A misspelt key also makes the key it was meant to be "missing": name the misspelling.
    error = min(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
    key = ".".join(str(part) for part in error["loc"])
    message = {
        "extra_forbidden": f"unknown key; check its spelling against {reference}",
        "missing": "required key is missing",
    }.get(error["type"], error["msg"].removeprefix("Value error, "))
    return ConfigError(message, source, key)


def _resolve_stores(stores: StoresConfig, root: Path) -> Stores:
    home = Path(ENV_HOME.get() or stores.home)
    home = home if home.is_absolute() else (root / home)
    home = home.resolve()

    def local(value: str | None, default: Path) -> str:
        if value is None:
            return str(default)
        if "://" in value:
            return value
        path = Path(value)
        return str(path if path.is_absolute() else (root / path).resolve())

    return Stores(
        home=home,
        runs=local(ENV_RUN_STORE.get() or stores.runs, home / "runs"),
        tracking_uri=_sqlite_in(root, ENV_TRACKING_URI.get() or stores.tracking or f"sqlite:///{home / 'mlflow.db'}"),
        artifacts=local(ENV_ARTIFACTS.get() or stores.artifacts, home / "mlartifacts"),
        warehouse_url=_sqlite_in(root, ENV_WAREHOUSE.get() or stores.warehouse or f"sqlite:///{home / 'warehouse.db'}"),
        snapshots=local(ENV_SNAPSHOTS.get() or stores.snapshots, home / "snapshots"),
    )


def _sqlite_in(root: Path, url: str) -> str:
    """A relative sqlite URL made absolute against the project root; other URLs unchanged."""
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        relative = Path(url.removeprefix("sqlite:///"))
        if not relative.is_absolute():
            return f"sqlite:///{(root / relative).resolve()}"
    return url


def find_config(start: Path | None = None) -> Path | None:
    """``RUNNER_CONFIG``, else the nearest runner.yaml in ``start`` or a parent folder."""
    if ENV_CONFIG.get():
        return config_path()
    folder = (start or Path.cwd()).resolve()
    for candidate in (folder, *folder.parents):
        if (candidate / "runner.yaml").is_file():
            return candidate / "runner.yaml"
    return None


def topological_order(steps: dict[str, StepConfig]) -> list[str]:
    """Step names in dependency order, keeping the file's order among independent steps."""
    order: list[str] = []
    state: dict[str, str] = {}

    def visit(name: str, path: tuple[str, ...]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            cycle = " -> ".join(path[path.index(name):] + (name,))
            raise ValueError(f"steps form a cycle: {cycle}")
        state[name] = "visiting"
        for need in steps[name].needs:
            visit(need, path + (name,))
        state[name] = "done"
        order.append(name)

    for name in steps:
        visit(name, ())
    return order


def upstream_of(steps: dict[str, StepConfig], name: str) -> set[str]:
    """All steps that ``name`` depends on, directly or through others."""
    seen: set[str] = set()
    stack = list(steps[name].needs)
    while stack:
        need = stack.pop()
        if need not in seen:
            seen.add(need)
            stack.extend(steps[need].needs)
    return seen
