"""``${...}`` in parameter values: what a reference may name, and its value when its step starts.

A parameter value (in ``runner.yaml``, given with ``-p``, or kept in a run's record) may hold references:

* ``${steps.<step>.<scrap>}``: a value an upstream step glued (the step must be in ``needs``, directly or not);
* ``${as_of}``, ``${run_id}``, ``${pipeline}``: values of the run;
* ``${env.NAME}``: a secret, read from the environment inside the step's kernel (:mod:`runner.secrets`), never
  by the runner, so it stays a reference in every record.

A value that is exactly one reference takes the referred value with its type; a reference inside longer
text is substituted as text. This module is the one place that knows the syntax: loading ``runner.yaml``,
planning a run and starting a step all ask it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from runner.errors import ParameterError

REFERENCE = re.compile(r"\$\{([^}]*)\}")
STEP_REFERENCE = re.compile(r"^steps\.([A-Za-z_][A-Za-z0-9_-]*)\.([A-Za-z_][A-Za-z0-9_]*)$")
RUN_REFERENCES = ("as_of", "run_id", "pipeline")
ENV_REFERENCE = re.compile(r"^env\.([A-Za-z_][A-Za-z0-9_]*)$")


def iter_references(value: Any) -> Iterator[str]:
    """Every ``${...}`` expression inside a parameter value (strings, lists and dicts), without its braces."""
    if isinstance(value, str):
        yield from (match.group(1).strip() for match in REFERENCE.finditer(value))
    elif isinstance(value, dict):
        for item in value.values():
            yield from iter_references(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from iter_references(item)


def has_references(value: Any) -> bool:
    return any(True for _ in iter_references(value))


def problem(ref: str, step: str, upstream: set[str]) -> str | None:
    """Why ``${ref}`` cannot be a reference of a parameter of ``step`` (whose upstream steps are ``upstream``),
    or None when it can."""
    step_ref = STEP_REFERENCE.match(ref)
    if step_ref:
        if step_ref.group(1) not in upstream:
            return f"${{{ref}}}: step {step_ref.group(1)!r} is not upstream of step {step!r}; add it to its 'needs'"
        return None
    if ref in RUN_REFERENCES or ENV_REFERENCE.match(ref):
        return None
    return (f"${{{ref}}} in step {step!r}: unknown reference; use ${{steps.<step>.<scrap>}}, ${{env.NAME}} or one of "
            f"{', '.join('${' + name + '}' for name in RUN_REFERENCES)}")


def resolve(value: Any, scraps: Mapping[str, Mapping[str, Any]], run: Mapping[str, Any]) -> Any:
    """``value`` with every reference replaced: ``scraps`` maps each finished step to what it glued, ``run``
    the run's values. ``${env.NAME}`` stays as it is. A scrap the step did not glue is a :class:`ParameterError`;
    a name that is no value of the run a :class:`KeyError`."""
    if isinstance(value, dict):
        return {key: resolve(item, scraps, run) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [resolve(item, scraps, run) for item in value]
    if not isinstance(value, str):
        return value
    whole = REFERENCE.fullmatch(value.strip())
    if whole:
        return _lookup(whole.group(1).strip(), scraps, run)
    return REFERENCE.sub(lambda match: str(_lookup(match.group(1).strip(), scraps, run)), value)


def _lookup(ref: str, scraps: Mapping[str, Mapping[str, Any]], run: Mapping[str, Any]) -> Any:
    if ENV_REFERENCE.match(ref):
        return f"${{{ref}}}"
    step_ref = STEP_REFERENCE.match(ref)
    if not step_ref:
        return run[ref]
    step, name = step_ref.groups()
    glued = scraps.get(step, {})
    if name not in glued:
        have = ", ".join(sorted(glued)) or "nothing"
        raise ParameterError(
            f"${{{ref}}}: upstream step {step!r} did not glue {name!r} (it glued: {have}); "
            f"add scrapbook.glue({name!r}, ...) to its notebook",
            parameter=name,
        )
    return glued[name]
