"""The project's bad-input list: every way we know to give the runner a wrong input, each refused the same way.

One table, four kinds of input: ``runner.yaml`` (and the notebooks it names), step parameters (``-p`` and
``runner.yaml`` values against the notebooks' parameters), the command line (commands, options, dates, ids,
numbers) and the data dictionary. Each case runs the CLI in-process and asserts the exit code, one
expected substring of the single error line on stderr, that nothing raised (no traceback) and that no run
was recorded. No kernel starts: ``runner validate`` and a run's planning read notebooks, never execute them.

A case marked ``xfail(strict=True)`` is a real bug outside the files of the change that added it; its
reason says where. Fixing the bug turns it into an XPASS failure: then remove the mark.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from conftest import notebook

OK = notebook("ok")  # parameters: x int, name str, ratio float, flag bool, items list, options dict, as_of date
CONFIG = "runner.yaml"
DICTIONARY = "dict.yaml"


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]  # `--config <project>/runner.yaml` is appended unless config=False
    code: int
    words: str  # expected in the one error line
    files: dict[str, Any] = field(default_factory=dict)  # relative path -> text, bytes, or a mapping dumped as YAML
    config: bool = True
    xfail: str | None = None


def steps(**fields: Any) -> dict:
    """runner.yaml with pipeline p and its step a (ok.ipynb), the step's keys updated with ``fields``."""
    return {"pipelines": {"p": {"steps": {"a": {"notebook": OK, **fields}}}}}


def pipeline(**fields: Any) -> dict:
    """runner.yaml with pipeline p (one ok step), the pipeline's keys updated with ``fields``."""
    return {"pipelines": {"p": {"steps": {"a": {"notebook": OK}}, **fields}}}


def top(**fields: Any) -> dict:
    """runner.yaml with pipeline p and top-level keys ``fields``."""
    return {**steps(), **fields}


def params(**values: Any) -> dict:
    return {CONFIG: steps(parameters=values)}


def text(body: str) -> dict:
    """runner.yaml given as text; ``{OK}`` is the ok notebook's path."""
    return {CONFIG: body.replace("{OK}", OK)}


def notebook_json(parameters: str = "x = 1", *cells: str, kernelspec: dict | None = None,
                  language_info: dict | None = None) -> str:
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    metadata = {"kernelspec": kernelspec or {"name": "python3", "display_name": "Python 3", "language": "python"},
                "language_info": language_info or {"name": "python"}}
    first = new_code_cell(parameters, metadata={"tags": ["parameters"]})
    return nbformat.writes(new_notebook(cells=[first, *map(new_code_cell, cells)], metadata=metadata))


R_KERNEL = {"name": "ir", "display_name": "R", "language": "R"}


def with_notebook(name: str, content: str | bytes) -> dict:
    """A project whose only step runs nb/<name>, written with ``content``."""
    return {CONFIG: {"pipelines": {"p": {"steps": {"a": {"notebook": f"nb/{name}"}}}}}, f"nb/{name}": content}


COLUMN = {"type": "int", "description": "An id.", "nullable": False, "pii": False, "allowed_purposes": ["any"]}
BASE_DICTIONARY = {
    "purposes": {"scoring": "Deciding on applications."},
    "tables": {"t": {"description": "One row per thing.", "owner": "data-team", "key": ["id"],
                     "columns": {"id": COLUMN}}},
}


def dictionary(content: Any = None, purpose: str = "scoring", **column: Any) -> dict:
    """A project whose runner.yaml names dict.yaml and pipeline p has ``purpose``; dict.yaml is ``content``
    (text, bytes or a mapping), else the base dictionary with column ``id`` updated by ``column`` (a value
    of None removes the key)."""
    if content is None:
        content = copy.deepcopy(BASE_DICTIONARY)
        spec = content["tables"]["t"]["columns"]["id"]
        for key, value in column.items():
            if value is None:
                spec.pop(key, None)
            else:
                spec[key] = value
    config = {"dictionary": DICTIONARY, "pipelines": {"p": {"purpose": purpose, "steps": {"a": {"notebook": OK}}}}}
    return {CONFIG: config, DICTIONARY: content}


def table(**fields: Any) -> dict:
    """The base dictionary with table t's keys updated (a value of None removes the key)."""
    content = copy.deepcopy(BASE_DICTIONARY)
    for key, value in fields.items():
        if value is None:
            content["tables"]["t"].pop(key, None)
        else:
            content["tables"]["t"][key] = value
    return dictionary(content)


BASIC = {CONFIG: steps()}  # a valid project, for command-line cases
SCHEDULED = {CONFIG: pipeline(schedule={"cron": "0 6 * * *"})}
SURROGATE = "\udcff"  # how Python keeps the byte 0xff of a command-line argument that is not UTF-8
NESTED = "[" * 5000 + "]" * 5000
UNRECORDABLE = "expected a finite number"  # NaN and infinity: the run's JSON record cannot hold them
V = "validate"

CONFIG_CASES = [
    # the file itself
    Case("config-missing", (V,), 2, "file not found; create runner.yaml"),
    Case("config-empty", (V,), 2, "expected a mapping with a 'pipelines' key", {CONFIG: ""}),
    Case("config-a-list", (V,), 2, "expected a mapping with a 'pipelines' key", {CONFIG: "- a\n- b\n"}),
    Case("config-a-scalar", (V,), 2, "expected a mapping with a 'pipelines' key", {CONFIG: "hello\n"}),
    Case("config-unclosed-bracket", (V,), 2, "line 4: not valid YAML",
         {CONFIG: "pipelines:\n  p:\n    steps: [unclosed\n"}),
    Case("config-tab-indent", (V,), 2, "line 3: not valid YAML: found character '\\t'",
         {CONFIG: "pipelines:\n  p:\n\tsteps: {}\n"}),
    Case("config-python-tag", (V,), 2, "could not determine a constructor for the tag",
         {CONFIG: "pipelines: !!python/object/apply:os.system [ls]\n"}),
    Case("config-nul-character", (V,), 2, "line 2: not valid YAML: character #x0000 is not allowed",
         {CONFIG: "pipelines:\n  p: \x00\n"}),
    Case("config-alias-inside-itself", (V,), 2, "alias of a node inside that node itself",
         text("pipelines:\n  p:\n    steps:\n      a: {notebook: {OK}, parameters: {items: &x [*x]}}\n")),
    Case("config-int-of-5000-digits", (V,), 2, "not valid YAML here: Exceeds the limit",
         {CONFIG: "pipelines: " + "1" * 5000 + "\n"}),
    Case("config-nested-too-deeply", (V,), 2, "nested too deeply", {CONFIG: "pipelines: " + NESTED + "\n"}),
    Case("config-latin-1", (V,), 2, "line 2: not UTF-8 text (byte 0xe9)",
         {CONFIG: "pipelines:\n  p: {description: caf\xe9, steps: {}}\n".encode("latin-1")}),
    Case("config-utf-16", (V,), 2, "line 1: not UTF-8 text (byte 0xff)", {CONFIG: "pipelines: {}\n".encode("utf-16")}),
    # keys given twice (PyYAML keeps the last silently)
    Case("duplicate-top-level-key", (V,), 2, "runner.yaml:pipelines: key given twice (lines 1 and 4)",
         text("pipelines:\n  p:\n    steps: {a: {notebook: {OK}}}\n"
              "pipelines:\n  q:\n    steps: {a: {notebook: {OK}}}\n")),
    Case("duplicate-pipeline", (V,), 2, "runner.yaml:pipelines.p: key given twice (lines 2 and 4)",
         text("pipelines:\n  p:\n    steps: {a: {notebook: {OK}}}\n  p:\n    steps: {b: {notebook: {OK}}}\n")),
    Case("duplicate-step", (V,), 2, "runner.yaml:pipelines.p.steps.a: key given twice (lines 4 and 5)",
         text("pipelines:\n  p:\n    steps:\n      a: {notebook: {OK}}\n      a: {notebook: {OK}, timeout: 5}\n")),
    Case("duplicate-step-key", (V,), 2, "pipelines.p.steps.a.timeout: key given twice (lines 6 and 7)",
         text("pipelines:\n  p:\n    steps:\n      a:\n        notebook: {OK}\n        timeout: 30m\n"
              "        timeout: 2h\n")),
    Case("duplicate-parameter", (V,), 2, "pipelines.p.steps.a.parameters.x: key given twice (lines 4 and 4)",
         text("pipelines:\n  p:\n    steps:\n      a: {notebook: {OK}, parameters: {x: 1, x: 2}}\n")),
    Case("duplicate-default", (V,), 2, "runner.yaml:defaults.max_workers: key given twice",
         text("defaults:\n  max_workers: 1\n  max_workers: 4\npipelines:\n  p: {steps: {a: {notebook: {OK}}}}\n")),
    Case("duplicate-model-policy-key", (V,), 2, "runner.yaml:models.m.metric: key given twice",
         text("models:\n  m: {metric: auc, metric: loss}\npipelines:\n  p: {steps: {a: {notebook: {OK}}}}\n")),
    Case("duplicate-key-spelt-differently", (V,), 2, "runner.yaml:pipelines.p.steps.a.parameters.True: key given twice",
         text("pipelines:\n  p:\n    steps:\n      a: {notebook: {OK}, parameters: {yes: 1, true: 2}}\n")),
    # keys and values
    Case("no-pipelines-key", (V,), 2, "runner.yaml:pipelines: required key is missing", {CONFIG: {"defaults": {}}}),
    Case("misspelt-top-level-key", (V,), 2, "runner.yaml:pipeline: unknown key", {CONFIG: {"pipeline": {}}}),
    Case("pipelines-a-list", (V,), 2, "runner.yaml:pipelines: Input should be a valid dictionary",
         {CONFIG: {"pipelines": ["p"]}}),
    Case("steps-a-list", (V,), 2, "pipelines.p.steps: Input should be a valid dictionary",
         {CONFIG: {"pipelines": {"p": {"steps": ["a"]}}}}),
    Case("no-steps", (V,), 2, "pipelines.p.steps: a pipeline needs at least one step",
         {CONFIG: {"pipelines": {"p": {"steps": {}}}}}),
    Case("step-without-notebook", (V,), 2, "pipelines.p.steps.a.notebook: required key is missing",
         {CONFIG: {"pipelines": {"p": {"steps": {"a": {"timeout": 5}}}}}}),
    Case("misspelt-step-key", (V,), 2, "pipelines.p.steps.a.retrys: unknown key", {CONFIG: steps(retrys=3)}),
    Case("parameters-a-list", (V,), 2, "pipelines.p.steps.a.parameters: Input should be a valid dictionary",
         {CONFIG: steps(parameters=["x"])}),
    Case("needs-a-number", (V,), 2, "pipelines.p.steps.a.needs", {CONFIG: steps(needs=3)}),
    Case("timeout-not-a-duration", (V,), 2, "pipelines.p.steps.a.timeout: expected seconds or a duration",
         {CONFIG: steps(timeout="soon")}),
    Case("timeout-zero", (V,), 2, "pipelines.p.steps.a.timeout: a deadline must be more than 0 seconds, got 0",
         {CONFIG: steps(timeout=0)}),
    Case("cell-timeout-negative", (V,), 2, "pipelines.p.steps.a.cell_timeout: a deadline must be more than 0",
         {CONFIG: steps(cell_timeout=-5)}),
    Case("timeout-infinite", (V,), 2, "pipelines.p.steps.a.timeout: expected seconds or a duration",
         text("pipelines:\n  p:\n    steps:\n      a: {notebook: {OK}, timeout: .inf}\n")),
    Case("timeout-nan", (V,), 2, "pipelines.p.steps.a.timeout: expected seconds or a duration",
         text("pipelines:\n  p:\n    steps:\n      a: {notebook: {OK}, timeout: .nan}\n")),
    Case("timeout-a-boolean", (V,), 2, "pipelines.p.steps.a.timeout: expected seconds", {CONFIG: steps(timeout=True)}),
    Case("default-cell-timeout-zero", (V,), 2, "defaults.cell_timeout: a deadline must be more than 0 seconds",
         {CONFIG: top(defaults={"cell_timeout": "0s"})}),
    Case("retries-negative", (V,), 2, "pipelines.p.steps.a.retries: Input should be greater than or equal to 0",
         {CONFIG: steps(retries=-1)}),
    Case("retries-too-many", (V,), 2, "pipelines.p.steps.a.retries: Input should be less than or equal to 20",
         {CONFIG: steps(retries=21)}),
    Case("retries-a-word", (V,), 2, "pipelines.p.steps.a.retries: Input should be a valid integer",
         {CONFIG: steps(retries="three")}),
    Case("retries-a-fraction", (V,), 2, "pipelines.p.steps.a.retries: Input should be a valid integer",
         {CONFIG: steps(retries=1.5)}),
    Case("retry-on-unknown", (V,), 2, "pipelines.p.steps.a.retry_on.0: Input should be 'dead_kernel'",
         {CONFIG: steps(retry_on=["network"])}),
    Case("retry-backoff-below-1", (V,), 2, "retry_backoff: Input should be greater than or equal to 1",
         {CONFIG: steps(retry_backoff=0.5)}),
    Case("retry-delay-negative", (V,), 2, "retry_delay: Input should be greater than or equal to 0",
         {CONFIG: steps(retry_delay=-1)}),
    Case("needs-unknown-step", (V,), 2, "pipelines.p.steps: step 'a' needs unknown step 'b'",
         {CONFIG: steps(needs=["b"])}),
    Case("needs-cycle", (V,), 2, "steps form a cycle: a -> b -> a",
         {CONFIG: {"pipelines": {"p": {"steps": {"a": {"notebook": OK, "needs": "b"},
                                                 "b": {"notebook": OK, "needs": "a"}}}}}}),
    Case("reference-not-upstream", (V,), 2, "add it to its 'needs'",
         {CONFIG: {"pipelines": {"p": {"steps": {"a": {"notebook": OK},
                                                 "b": {"notebook": OK, "parameters": {"x": "${steps.a.result}"}}}}}}}),
    Case("reference-unknown", (V,), 2, "${today} in step 'a': unknown reference", params(as_of="${today}")),
    Case("pipeline-name-with-space", (V,), 2, "pipeline name 'my pipeline' must match",
         {CONFIG: {"pipelines": {"my pipeline": {"steps": {"a": {"notebook": OK}}}}}}),
    Case("step-name-with-digit-first", (V,), 2, "step name '1st' must match",
         {CONFIG: {"pipelines": {"p": {"steps": {"1st": {"notebook": OK}}}}}}),
    Case("cron-words", (V,), 2, "pipelines.p.schedule.cron: not a five-field cron expression",
         {CONFIG: pipeline(schedule={"cron": "every day"})}),
    Case("cron-six-fields", (V,), 2, "not a five-field cron expression",
         {CONFIG: pipeline(schedule={"cron": "0 0 6 * * *"})}),
    Case("timezone-unknown", (V,), 2, "pipelines.p.schedule.timezone: unknown timezone 'Mars/Base'",
         {CONFIG: pipeline(schedule={"cron": "0 6 * * *", "timezone": "Mars/Base"})}),
    Case("misfire-unknown", (V,), 2, "pipelines.p.schedule.misfire: Input should be 'skip' or 'catch_up'",
         {CONFIG: pipeline(schedule={"cron": "0 6 * * *", "misfire": "later"})}),
    Case("max-catch-up-zero", (V,), 2, "max_catch_up: Input should be greater than or equal to 1",
         {CONFIG: pipeline(schedule={"cron": "0 6 * * *", "misfire": "catch_up", "max_catch_up": 0})}),
    Case("misfire-grace-zero", (V,), 2, "misfire_grace: Input should be greater than 0",
         {CONFIG: pipeline(schedule={"cron": "0 6 * * *", "misfire_grace": 0})}),
    Case("schedule-enabled-sometimes", (V,), 2, "pipelines.p.schedule.enabled: Input should be a valid boolean",
         {CONFIG: pipeline(schedule={"cron": "0 6 * * *", "enabled": "sometimes"})}),
    Case("webhook-not-http", (V,), 2, "notify.webhook: webhook must be an http:// or https:// URL",
         {CONFIG: top(notify={"webhook": "ftp://example.com/hook"})}),
    Case("notify-event-unknown", (V,), 2, "notify.events.0: Input should be 'warn', 'alert' or 'failure'",
         {CONFIG: top(notify={"events": ["panic"]})}),
    Case("notify-timeout-zero", (V,), 2, "notify.timeout: Input should be greater than 0",
         {CONFIG: top(notify={"timeout": 0})}),
    Case("pipeline-notify-misspelt", (V,), 2, "pipelines.p.notify.webhok: unknown key",
         {CONFIG: pipeline(notify={"webhok": "https://example.com"})}),
    Case("fail-on-unknown", (V,), 2, "monitoring.fail_on: Input should be 'warn' or 'alert'",
         {CONFIG: top(monitoring={"fail_on": "error"})}),
    Case("alert-below-warn", (V,), 2, "monitoring.thresholds.psi: alert (0.1) must not be below warn (0.2)",
         {CONFIG: top(monitoring={"thresholds": {"psi": {"warn": 0.2, "alert": 0.1}}})}),
    Case("threshold-unknown-statistic", (V,), 2, "monitoring.thresholds.psy: unknown key",
         {CONFIG: top(monitoring={"thresholds": {"psy": {"warn": 0.1, "alert": 0.2}}})}),
    Case("margin-negative", (V,), 2, "models.m.margin: Input should be greater than or equal to 0",
         {CONFIG: top(models={"m": {"margin": -1}})}),
    Case("max-workers-zero", (V,), 2, "defaults.max_workers: Input should be greater than or equal to 1",
         {CONFIG: top(defaults={"max_workers": 0})}),
    Case("stores-home-a-list", (V,), 2, "stores.home: Input should be a valid string",
         {CONFIG: top(stores={"home": ["a"]})}),
    Case("validate-unknown-pipeline", (V, "nosuch"), 2, "no pipeline named 'nosuch'; known: p", BASIC),
    # the notebooks runner.yaml names
    Case("notebook-missing", (V,), 2, "notebook not found; check the step's 'notebook:' path",
         {CONFIG: steps(notebook="nb/missing.ipynb")}),
    Case("notebook-not-json", (V,), 2, "not a readable notebook", with_notebook("text.ipynb", "print('hi')\n")),
    Case("notebook-empty-object", (V,), 2, "not a readable notebook", with_notebook("empty.ipynb", "{}")),
    Case("notebook-without-parameters-cell", (V,), 2, "no cell tagged 'parameters'",
         {CONFIG: steps(notebook=notebook("no_parameters"))}),
    Case("notebook-in-r", (V,), 2, "a notebook for 'R' (metadata.language_info.name); steps run in a Python kernel",
         with_notebook("r.ipynb", notebook_json("x <- 1", kernelspec=R_KERNEL, language_info={"name": "R"}))),
    Case("notebook-in-julia", (V,), 2, "a notebook for 'julia' (metadata.language_info.name)",
         with_notebook("julia.ipynb", notebook_json("x = 1", language_info={"name": "julia"}))),
    Case("notebook-kernelspec-says-r", (V,), 2, "a notebook for 'R' (metadata.kernelspec.language)",
         with_notebook("mixed.ipynb", notebook_json("x = 1", kernelspec=R_KERNEL))),
    Case("notebook-cell-not-python", (V,), 2, "cell 1: line 1: not valid Python",
         with_notebook("syntax.ipynb", notebook_json("x = 1", "def f(:\n    pass"))),
    Case("notebook-parameters-cell-not-python", (V,), 2, "not valid Python",
         with_notebook("params.ipynb", notebook_json("x = = 1"))),
    Case("notebook-imports-what-runner-lacks", (V,), 2, "'from runner.nb import lod': runner.nb has no name 'lod'",
         with_notebook("imports.ipynb", notebook_json("x = 1", "from runner.nb import lod"))),
    Case("notebook-imports-missing-runner-module", (V,), 2, "there is no module runner.nosuch",
         with_notebook("module.ipynb", notebook_json("x = 1", "from runner.nosuch import thing"))),
]

PARAMETER_CASES = [
    # values in runner.yaml, checked by `runner validate`
    Case("yaml-int-a-word", (V,), 2, "ok.ipynb parameter 'x': expected int, got str 'five'", params(x="five")),
    Case("yaml-int-a-bool", (V,), 2, "parameter 'x': expected int, got bool True", params(x=True)),
    Case("yaml-int-a-fraction", (V,), 2, "parameter 'x': expected int, got float 1.5", params(x=1.5)),
    Case("yaml-int-a-list", (V,), 2, "parameter 'x': expected int, got list [1]", params(x=[1])),
    Case("yaml-float-a-word", (V,), 2, "parameter 'ratio': expected float, got str 'abc'", params(ratio="abc")),
    Case("yaml-float-null", (V,), 2, "parameter 'ratio': expected float, got NoneType None", params(ratio=None)),
    Case("yaml-float-nan", (V,), 2, f"parameter 'ratio': {UNRECORDABLE}, got float nan",
         text("pipelines:\n  p:\n    steps:\n      a: {notebook: {OK}, parameters: {ratio: .nan}}\n")),
    Case("yaml-float-inf", (V,), 2, f"parameter 'ratio': {UNRECORDABLE}, got float inf",
         text("pipelines:\n  p:\n    steps:\n      a: {notebook: {OK}, parameters: {ratio: .inf}}\n")),
    Case("yaml-float-minus-inf", (V,), 2, f"parameter 'ratio': {UNRECORDABLE}, got float -inf",
         text("pipelines:\n  p:\n    steps:\n      a: {notebook: {OK}, parameters: {ratio: -.inf}}\n")),
    Case("yaml-float-overflows", (V,), 2, f"parameter 'ratio': {UNRECORDABLE}, got float inf",
         text("pipelines:\n  p:\n    steps:\n      a: {notebook: {OK}, parameters: {ratio: 1.0e+999}}\n")),
    Case("yaml-bool-maybe", (V,), 2, "parameter 'flag': expected bool, got str 'maybe'", params(flag="maybe")),
    Case("yaml-bool-two", (V,), 2, "parameter 'flag': expected bool, got int 2", params(flag=2)),
    Case("yaml-str-a-number", (V,), 2, "parameter 'name': expected str, got int 3 (quote it", params(name=3)),
    Case("yaml-str-not-utf-8", (V,), 2, "parameter 'name': expected UTF-8 text, got str '\\udcff'",
         text('pipelines:\n  p:\n    steps:\n      a: {notebook: {OK}, parameters: {name: "\\udcff"}}\n')),
    Case("yaml-list-a-number", (V,), 2, "parameter 'items': expected list, got int 3", params(items=3)),
    Case("yaml-list-a-mapping-text", (V,), 2, "parameter 'items': expected list, got dict {'a': 1}",
         params(items="{a: 1}")),
    Case("yaml-list-holding-nan", (V,), 2, f"parameter 'items': {UNRECORDABLE}, got list [1, nan]",
         text("pipelines:\n  p:\n    steps:\n      a: {notebook: {OK}, parameters: {items: [1, .nan]}}\n")),
    Case("yaml-list-unclosed-text", (V,), 2, "parameter 'items': expected list, got str '[1, 2' (give it as YAML",
         params(items="[1, 2")),
    Case("yaml-dict-a-list", (V,), 2, "parameter 'options': expected dict, got list [1]", params(options=[1])),
    Case("yaml-dict-text-with-duplicate-key", (V,), 2, "parameter 'options': expected dict, got str '{a: 1, a: 2}' "
         "(key 'a' given twice)", params(options="{a: 1, a: 2}")),
    Case("yaml-dict-holding-inf", (V,), 2, f"parameter 'options': {UNRECORDABLE}, got dict {{'a': inf}}",
         text("pipelines:\n  p:\n    steps:\n      a: {notebook: {OK}, parameters: {options: {a: .inf}}}\n")),
    Case("yaml-date-a-word", (V,), 2, "parameter 'as_of': expected an ISO date string like 2026-07-01, got str 'July'",
         params(as_of="July")),
    Case("yaml-date-impossible", (V,), 2, "parameter 'as_of': expected an ISO date", params(as_of="2026-02-30")),
    Case("yaml-date-a-timestamp", (V,), 2, "parameter 'as_of': expected an ISO date string like 2026-07-01, got "
         "str '2026-01-01T10:00:00'",
         text("pipelines:\n  p:\n    steps:\n      a: {notebook: {OK}, parameters: {as_of: 2026-01-01T10:00:00}}\n")),
    Case("yaml-unknown-parameter", (V,), 2, "parameter 'max_depth': unknown parameter; the notebook's parameters "
         "cell declares: as_of, flag, items, name, options, ratio, x", params(max_depth=3)),
    # values given with -p, checked when a run is planned (before any kernel starts)
    Case("p-int-a-word", ("run", "p", "-p", "a.x=five"), 2, "parameter 'x': expected int, got str 'five'", BASIC),
    Case("p-int-a-fraction", ("run", "p", "-p", "a.x=1.5"), 2, "parameter 'x': expected int, got str '1.5'", BASIC),
    Case("p-int-empty", ("run", "p", "-p", "a.x="), 2, "parameter 'x': expected int, got str ''", BASIC),
    Case("p-float-a-word", ("run", "p", "-p", "a.ratio=abc"), 2, "parameter 'ratio': expected float", BASIC),
    Case("p-float-nan", ("run", "p", "-p", "a.ratio=nan"), 2, f"'ratio': {UNRECORDABLE}, got str 'nan'", BASIC),
    Case("p-float-inf", ("run", "p", "-p", "a.ratio=inf"), 2, f"'ratio': {UNRECORDABLE}, got str 'inf'", BASIC),
    Case("p-float-minus-infinity", ("run", "p", "-p", "a.ratio=-Infinity"), 2, f"'ratio': {UNRECORDABLE}", BASIC),
    Case("p-float-overflows", ("run", "p", "-p", "a.ratio=1e999"), 2, f"'ratio': {UNRECORDABLE}, got str '1e999'",
         BASIC),
    Case("p-bool-maybe", ("run", "p", "-p", "a.flag=maybe"), 2, "parameter 'flag': expected bool", BASIC),
    Case("p-list-a-mapping", ("run", "p", "-p", "a.items={a: 1}"), 2, "parameter 'items': expected list", BASIC),
    Case("p-list-unclosed", ("run", "p", "-p", "a.items=[1, 2"), 2, "(give it as YAML or JSON)", BASIC),
    Case("p-list-nested-too-deeply", ("run", "p", "-p", f"a.items={NESTED}"), 2, "(give it as YAML or JSON)", BASIC),
    Case("p-dict-a-list", ("run", "p", "-p", "a.options=[1]"), 2, "parameter 'options': expected dict", BASIC),
    Case("p-dict-duplicate-key", ("run", "p", "-p", "a.options={a: 1, a: 2}"), 2, "(key 'a' given twice)", BASIC),
    Case("p-dict-holding-nan", ("run", "p", "-p", "a.options={a: .nan}"), 2, f"'options': {UNRECORDABLE}", BASIC),
    Case("p-date-a-word", ("run", "p", "-p", "a.as_of=July"), 2, "parameter 'as_of': expected an ISO date", BASIC),
    Case("p-date-unpadded", ("run", "p", "-p", "a.as_of=2026-1-1"), 2, "parameter 'as_of': expected an ISO date",
         BASIC),
    Case("p-unknown-parameter", ("run", "p", "-p", "a.max_depth=3"), 2, "parameter 'max_depth': unknown parameter",
         BASIC),
    Case("p-unknown-step", ("run", "p", "-p", "nope.x=1"), 2, "no step named 'nope' in pipeline 'p'; steps: a", BASIC),
    Case("p-without-step", ("run", "p", "-p", "x=1"), 2, "-p 'x=1': expected STEP.NAME=VALUE", BASIC),
    Case("p-without-equals", ("run", "p", "-p", "a.x"), 2, "-p 'a.x': expected STEP.NAME=VALUE", BASIC),
    Case("p-without-name", ("run", "p", "-p", "a.=1"), 2, "expected STEP.NAME=VALUE", BASIC),
    Case("p-without-step-name", ("run", "p", "-p", ".x=1"), 2, "expected STEP.NAME=VALUE", BASIC),
    Case("p-not-utf-8", ("run", "p", "-p", f"a.name={SURROGATE}"), 2, "-p/--param 'a.name=\\xff': not UTF-8 text",
         BASIC),
    Case("p-name-not-utf-8", ("run", "p", "-p", f"a.{SURROGATE}=1"), 2, "-p/--param 'a.\\xff=1': not UTF-8 text",
         BASIC),
    Case("as-of-a-word", ("run", "p", "--as-of", "yesterday"), 2, "--as-of parameter 'as_of': expected an ISO date",
         BASIC),
    Case("as-of-impossible", ("run", "p", "--as-of", "2026-02-30"), 2, "got str '2026-02-30'", BASIC),
    Case("as-of-empty", ("run", "p", "--as-of", ""), 2, "--as-of parameter 'as_of': expected an ISO date", BASIC),
    Case("as-of-two-digit-year", ("run", "p", "--as-of", "26-01-01"), 2, "--as-of parameter 'as_of'", BASIC),
    Case("as-of-with-time", ("run", "p", "--as-of", "2026-01-01T00:00"), 2, "--as-of parameter 'as_of'", BASIC),
    Case("as-of-not-utf-8", ("run", "p", "--as-of", f"2026-01-0{SURROGATE}"), 2,
         "--as-of '2026-01-0\\xff': not UTF-8 text", BASIC),
]

CLI_CASES = [
    # commands, arguments and options
    Case("unknown-command", ("frobnicate",), 2, "No such command 'frobnicate'", BASIC),
    Case("unknown-command-not-utf-8", (f"run{SURROGATE}",), 2, "No such command", BASIC),
    Case("run-without-pipeline", ("run",), 2, "Missing argument 'PIPELINE'", BASIC),
    Case("run-extra-argument", ("run", "p", "q"), 2, "Got unexpected extra argument (q)", BASIC),
    Case("run-unknown-option", ("run", "p", "--fast"), 2, "No such option '--fast'", BASIC),
    Case("run-param-without-value", ("run", "p", "-p"), 2, "Option '-p' requires an argument", BASIC, config=False),
    Case("run-unknown-pipeline", ("run", "nosuch"), 2, "no pipeline named 'nosuch'; known: p", BASIC),
    Case("run-pipeline-not-utf-8", ("run", f"p{SURROGATE}"), 2, "PIPELINE 'p\\xff': not UTF-8 text", BASIC),
    Case("run-trigger-unknown", ("run", "p", "--trigger", "cron"), 2, "'cron' is not one of 'manual', 'schedule'",
         BASIC),
    Case("validate-config-without-value", ("validate", "--config"), 2, "Option '--config' requires an argument",
         BASIC, config=False),
    Case("runs-status-unknown", ("runs", "--status", "weird"), 2, "Invalid value for '--status': 'weird'", BASIC),
    Case("runs-pipeline-without-value", ("runs", "--pipeline"), 2, "Option '--pipeline' requires an argument",
         BASIC, config=False),
    Case("show-without-run-id", ("show",), 2, "Missing argument 'RUN_ID'", BASIC),
    Case("export-unknown-kind", ("export", "cron"), 2, "'cron' is not one of 'crontab', 'systemd'", BASIC),
    Case("export-out-is-a-file", ("export", "systemd", "--out", "runner.yaml"), 2, "Invalid value for '--out'",
         BASIC),
    Case("schema-unknown-kind", ("schema", "yaml"), 2, "'yaml' is not one of 'config', 'dictionary'", config=False),
    Case("new-unknown-kind", ("new", "widget", "x"), 2, "no notebook template named 'widget'", BASIC),
    Case("new-bad-step-name", ("new", "train", "bad name"), 2, "step name 'bad name' must match", BASIC),
    Case("new-bad-pipeline-name", ("new", "train", "x", "--pipeline", "bad name"), 2,
         "pipeline name 'bad name' must match", BASIC),
    Case("models-without-model", ("models",), 2, "Missing argument 'MODEL'", BASIC),
    Case("promote-without-reason", ("promote", "m", "1"), 2, "Missing option '--reason'", BASIC),
    Case("promote-empty-reason", ("promote", "m", "1", "--reason", ""), 2, "--reason is empty; say why", BASIC),
    Case("promote-blank-reason", ("promote", "m", "1", "--reason", "   "), 2, "--reason is empty; say why", BASIC),
    Case("promote-reason-not-utf-8", ("promote", "m", "1", "--reason", f"because{SURROGATE}"), 2,
         "--reason 'because\\xff': not UTF-8 text", BASIC),
    Case("data-snapshot-without-out", ("data", "snapshot", "abcdef"), 2, "Missing option '--out'", BASIC),
    # ids
    Case("show-unknown-run", ("show", "nosuch"), 2, "'nosuch' is not a run id", BASIC),
    Case("show-path-as-run-id", ("show", "../../etc"), 2, "'../../etc' is not a run id", BASIC),
    Case("show-glob-as-run-id", ("show", "*"), 2, "'*' is not a run id", BASIC),
    Case("rerun-unknown-run", ("rerun", "nosuch"), 2, "'nosuch' is not a run id", BASIC),
    Case("resume-unknown-run", ("resume", "nosuch"), 2, "'nosuch' is not a run id", BASIC),
    Case("debug-unknown-run", ("debug", "nosuch"), 2, "'nosuch' is not a run id", BASIC),
    Case("review-diff-unknown-runs", ("review", "diff", "a", "b"), 2, "'a' is not a run id", BASIC),
    Case("review-diff-path-as-run-id", ("review", "diff", "../x", "b"), 2, "'../x' is not a run id", BASIC),
    Case("data-snapshot-not-a-digest", ("data", "snapshot", "zz", "--out", "x.parquet"), 2, "zz", BASIC),
    Case("data-snapshot-path-as-digest", ("data", "snapshot", "../../etc/passwd", "--out", "x.parquet"), 2,
         "../../etc/passwd", BASIC),
    Case("promote-unknown-version", ("promote", "m", "v1", "--reason", "x"), 2, "model 'm' has no version v1", BASIC),
    Case("backfill-unknown-pipeline", ("backfill", "nosuch", "--from", "2026-01-01", "--to", "2026-01-31"), 2,
         "no pipeline named 'nosuch'", BASIC),
    Case("backfill-unscheduled-pipeline", ("backfill", "p", "--from", "2026-01-01", "--to", "2026-01-31"), 2,
         "pipelines.p.schedule: has no schedule", BASIC),
    # dates
    Case("backfill-from-after-to", ("backfill", "p", "--from", "2026-03-01", "--to", "2026-01-31"), 2,
         "--from 2026-03-01 is after --to 2026-01-31; give the range oldest first", SCHEDULED),
    Case("backfill-from-month-13", ("backfill", "p", "--from", "2026-13-01", "--to", "2026-12-31"), 2,
         "'2026-13-01' does not match the format '%Y-%m-%d'", SCHEDULED),
    Case("backfill-from-with-slashes", ("backfill", "p", "--from", "2026/01/01", "--to", "2026-12-31"), 2,
         "Invalid value for '--from'", SCHEDULED),
    Case("backfill-to-a-word", ("backfill", "p", "--from", "2026-01-01", "--to", "tomorrow"), 2,
         "Invalid value for '--to'", SCHEDULED),
    Case("backfill-without-to", ("backfill", "p", "--from", "2026-01-01"), 2, "Missing option '--to'", SCHEDULED),
    Case("demo-start-month-13", ("demo", "--start", "2026-13"), 2, "'2026-13' is not a month", BASIC),
    # numbers
    Case("run-max-workers-zero", ("run", "p", "--max-workers", "0"), 2, "0 is not in the range x>=1", BASIC),
    Case("run-max-workers-negative", ("run", "p", "--max-workers", "-1"), 2, "-1 is not in the range x>=1", BASIC),
    Case("run-max-workers-a-word", ("run", "p", "--max-workers", "two"), 2, "'two' is not a valid integer", BASIC),
    Case("run-max-workers-a-fraction", ("run", "p", "--max-workers", "1.5"), 2, "'1.5' is not a valid integer", BASIC),
    Case("runs-limit-zero", ("runs", "--limit", "0"), 2, "Invalid value for '--limit': 0", BASIC),
    Case("runs-limit-in-exponent-form", ("runs", "--limit", "1e3"), 2, "'1e3' is not a valid integer", BASIC),
    Case("backfill-max-workers-zero",
         ("backfill", "p", "--from", "2026-01-01", "--to", "2026-01-31", "--max-workers", "0"), 2,
         "Invalid value for '--max-workers'", SCHEDULED),
    Case("scheduler-grace-a-word", ("scheduler", "--grace", "soon"), 2, "Invalid value for '--grace'", BASIC),
    Case("scheduler-poll-negative", ("scheduler", "--poll", "-1"), 2, "Invalid value for '--poll'", BASIC),
    Case("scheduler-max-runs-zero", ("scheduler", "--max-runs", "0"), 2, "Invalid value for '--max-runs'", BASIC),
    Case("schedule-list-count-zero", ("schedule", "list", "--count", "0"), 2, "0 is not in the range 1<=x<=50",
         BASIC),
    Case("schedule-list-count-too-many", ("schedule", "list", "--count", "51"), 2, "51 is not in the range", BASIC),
    Case("review-serve-port-too-high", ("review", "serve", "--port", "70000"), 2, "70000 is not in the range", BASIC),
    Case("review-serve-port-negative", ("review", "serve", "--port", "-1"), 2, "-1 is not in the range", BASIC),
    Case("demo-months-zero", ("demo", "--months", "0"), 2, "0 is not in the range 1<=x<=36", BASIC),
    Case("demo-months-too-many", ("demo", "--months", "37"), 2, "37 is not in the range 1<=x<=36", BASIC),
    Case("demo-train-every-zero", ("demo", "--train-every", "0"), 2, "Invalid value for '--train-every'", BASIC),
]

DICTIONARY_CASES = [
    # the file
    Case("dictionary-missing", (V,), 2, "dict.yaml: file not found; create it",
         {CONFIG: {"dictionary": "dict.yaml", **steps()}}),
    Case("dictionary-empty", (V,), 2, "dict.yaml: expected a mapping with 'purposes' and 'tables'", dictionary("")),
    Case("dictionary-a-list", (V,), 2, "expected a mapping with 'purposes' and 'tables'", dictionary("- a\n")),
    Case("dictionary-not-yaml", (V,), 2, "dict.yaml:line 2: not valid YAML", dictionary("purposes: [a\ntables: {}\n")),
    Case("dictionary-duplicate-key", (V,), 2, "key given twice", dictionary(
        "purposes:\n  scoring: Deciding.\n  scoring: Something else.\ntables: {}\n")),
    Case("dictionary-not-utf-8", (V,), 2, "not UTF-8",
         dictionary("purposes:\n  scoring: D\xe9cider.\n".encode("latin-1"))),
    # keys and values
    Case("dictionary-no-purposes", (V,), 2, "dict.yaml:purposes: required key is missing",
         dictionary({"tables": BASE_DICTIONARY["tables"]})),
    Case("dictionary-no-tables", (V,), 2, "dict.yaml:tables: required key is missing",
         dictionary({"purposes": BASE_DICTIONARY["purposes"]})),
    Case("dictionary-misspelt-top-level-key", (V,), 2, "dict.yaml:table: unknown key; check its spelling against "
         "the data dictionary reference, docs/reference/dictionary.md", dictionary({**BASE_DICTIONARY, "table": {}})),
    Case("dictionary-purposes-a-list", (V,), 2, "dict.yaml:purposes: Input should be a valid dictionary",
         dictionary({**BASE_DICTIONARY, "purposes": ["scoring"]})),
    Case("dictionary-tables-a-list", (V,), 2, "dict.yaml:tables: Input should be a valid dictionary",
         dictionary({**BASE_DICTIONARY, "tables": ["t"]})),
    Case("table-without-description", (V,), 2, "tables.t.description: required key is missing",
         table(description=None)),
    Case("table-without-columns", (V,), 2, "tables.t.columns: required key is missing", table(columns=None)),
    Case("table-with-no-columns", (V,), 2, "tables.t.columns: Dictionary should have at least 1 item",
         table(columns={}, key=[])),
    Case("table-key-undeclared", (V,), 2, "key column(s) ['nope'] are not among the table's columns",
         table(key=["nope"])),
    Case("table-key-a-number", (V,), 2, "tables.t.key", table(key=3)),
    Case("table-misspelt-key", (V,), 2, "tables.t.colums: unknown key", table(colums={})),
    Case("column-a-string", (V,), 2, "tables.t.columns.id", table(columns={"id": "int"})),
    Case("column-without-type", (V,), 2, "tables.t.columns.id.type: required key is missing", dictionary(type=None)),
    Case("column-type-unknown", (V,), 2, "tables.t.columns.id.type: Input should be 'int', 'float'",
         dictionary(type="text")),
    Case("column-without-description", (V,), 2, "columns.id.description: required key is missing",
         dictionary(description=None)),
    Case("column-without-nullable", (V,), 2, "columns.id.nullable: required key is missing",
         dictionary(nullable=None)),
    Case("column-nullable-maybe", (V,), 2, "columns.id.nullable: Input should be a valid boolean",
         dictionary(nullable="maybe")),
    Case("column-without-pii", (V,), 2, "columns.id.pii: required key is missing", dictionary(pii=None)),
    Case("column-pii-perhaps", (V,), 2, "columns.id.pii: Input should be a valid boolean", dictionary(pii="perhaps")),
    Case("column-without-owner", (V,), 2, "columns.id.owner: required key is missing", table(owner=None)),
    Case("column-without-purposes", (V,), 2, "columns.id.allowed_purposes: required key is missing",
         dictionary(allowed_purposes=None)),
    Case("column-with-no-purposes", (V,), 2, "columns.id.allowed_purposes: Tuple should have at least 1 item",
         dictionary(allowed_purposes=[])),
    Case("column-unknown-purpose", (V,), 2, "columns.id.allowed_purposes: unknown purpose(s) ['marketing']",
         dictionary(allowed_purposes=["marketing"])),
    Case("column-misspelt-key", (V,), 2, "columns.id.nulable: unknown key", dictionary(nulable=True)),
    Case("levels-on-an-int-column", (V,), 2, "'levels' is only for category columns", dictionary(levels=["a"])),
    Case("levels-on-a-string-column", (V,), 2, "'levels' is only for category columns",
         dictionary(type="string", levels=["a"])),
    Case("category-without-levels", (V,), 2, "a category column needs 'levels'", dictionary(type="category")),
    Case("category-with-no-levels", (V,), 2, "a category column needs 'levels'",
         dictionary(type="category", levels=[])),
    Case("category-levels-numbers", (V,), 2, "columns.id.levels.0: Input should be a valid string",
         dictionary(type="category", levels=[1, 2])),
    Case("min-on-a-string-column", (V,), 2, "'min' and 'max' are only for int and float columns",
         dictionary(type="string", min=0)),
    Case("max-on-a-date-column", (V,), 2, "'min' and 'max' are only for int and float columns",
         dictionary(type="date", max=10)),
    Case("min-a-word", (V,), 2, "columns.id.min", dictionary(min="low")),
    Case("pattern-on-an-int-column", (V,), 2, "'pattern' is only for string columns", dictionary(pattern="^a")),
    Case("pattern-not-a-regex", (V,), 2, "pattern", dictionary(type="string", pattern="[unclosed")),
    Case("min-above-max", (V,), 2, "min", dictionary(min=10, max=1)),
    Case("pipeline-purpose-undeclared", (V,), 2, "pipelines.p.purpose: purpose 'marketing' is not declared under "
         "'purposes:' in the data dictionary dict.yaml; known: ['scoring']", dictionary(purpose="marketing")),
]

CASES = CONFIG_CASES + PARAMETER_CASES + CLI_CASES + DICTIONARY_CASES


def _param(case: Case):
    marks = [pytest.mark.xfail(strict=True, reason=case.xfail)] if case.xfail else []
    return pytest.param(case, id=case.id, marks=marks)


def test_the_list_is_long_and_its_ids_unique():
    assert len(CASES) >= 100
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", [_param(case) for case in CASES])
def test_a_bad_input_is_one_error_line_and_the_right_exit_code(project, case, monkeypatch):
    from runner.cli import main

    for name, content in case.files.items():
        path = project.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif isinstance(content, str):
            path.write_text(content, encoding="utf-8")
        else:
            path.write_text(yaml.safe_dump(content, sort_keys=False), encoding="utf-8")
    args = [*case.args, *(("--config", str(project.config)) if case.config else ())]
    monkeypatch.chdir(project.root)  # relative paths on the command line resolve in the project
    result = CliRunner().invoke(main, args)
    assert not (result.exception and not isinstance(result.exception, SystemExit)), \
        f"raised {result.exception!r}\n{result.stderr}"
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.lower().startswith("error")]
    assert len(errors) == 1, f"expected one error line on stderr:\n{result.stderr}"
    assert case.words in errors[0]
    assert result.exit_code == case.code, result.stderr
    assert not list(project.home.glob("runs/*/*/run.json")), "nothing may be recorded as a run"


def test_the_table_covers_each_kind_of_input():
    kinds = {"config": CONFIG_CASES, "parameters": PARAMETER_CASES, "cli": CLI_CASES, "dictionary": DICTIONARY_CASES}
    assert all(len(cases) >= 20 for cases in kinds.values()), {kind: len(cases) for kind, cases in kinds.items()}
