"""Secret parameters: passed by name, resolved inside the kernel, masked wherever text is kept.

A parameter value that holds ``${env.NAME}`` (the whole value, or inside longer text such as a
connection URL) is a secret. The runner records the reference, never the value: run.json, MLflow,
``runner show`` and the review site hold ``${env.NAME}``. The step's kernel reads the value from
its environment, through a line the runner adds to the injected parameters cell
(``token = os.environ["CRM_TOKEN"]``), so the value is never written into the notebook either.
What the notebook prints, displays, raises or glues is masked (``***``) before the executed
notebook, its HTML page, the step's log or its scraps are written (:class:`Redactor`).

Credentials inside URLs (``scheme://user:password@host``) are masked wherever a URL is shown or
recorded (:func:`strip_userinfo`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

from runner.errors import ParameterError
from runner.references import ENV_REFERENCE, REFERENCE

MASK = "***"
MIN_LENGTH = 4  # a shorter value would mask every occurrence of a common word or number in the outputs
# scheme://userinfo@ : the userinfo is masked unless it only names secrets by reference (${env.NAME})
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^/@\s'\"<>]+)@")
SECRET_MARK = re.compile(r"^\s*secret\b", re.IGNORECASE)  # a parameters-cell comment: `token = ""  # secret`


def strip_userinfo(text: str, mask: str = MASK + "@") -> str:
    """``text`` with the user and password of every URL in it masked (``https://***@host/``), or replaced
    by ``mask`` (``""`` leaves a URL a browser can open)."""
    if "@" not in text:
        return text

    def replace(match: re.Match) -> str:
        if "${" in match.group("userinfo"):
            return match.group(0)
        return f"{match.group('scheme')}{mask}"

    return _USERINFO.sub(replace, text)


def env_names(value: Any) -> list[str]:
    """The environment variables a parameter value refers to by ``${env.NAME}``."""
    if not isinstance(value, str):
        return []
    return [found.group(1) for ref in REFERENCE.finditer(value) if (found := ENV_REFERENCE.match(ref.group(1).strip()))]


def is_secret(value: Any) -> bool:
    return bool(env_names(value))


def secret_parameters(parameters: Mapping[str, Any]) -> dict[str, str]:
    """The parameters whose values refer to the environment (name -> the value as written)."""
    return {name: value for name, value in parameters.items() if is_secret(value)}


def check(name: str, value: Any, kind: str, secret: bool, where: str = "", *, environment: bool = True) -> None:
    """A planned parameter value, as far as secrets go; a ParameterError says what to change.

    ``secret`` is the notebook's own marker (``# secret`` on the parameter's line): such a
    parameter only takes ``${env.NAME}``, never a literal that would be recorded. With
    ``environment``, each variable named must be set here (not so for `runner validate`, which
    may run where production's secrets are not).
    """
    refers = _nested_env_references(value)
    if refers and not isinstance(value, str):
        raise ParameterError("${env.NAME} may only stand in a text value, not inside a list or dict; "
                             "give the secret a parameter of its own", where, name)
    if secret and value is not None and value != "" and not env_names(value):
        raise ParameterError("the parameters cell marks this parameter secret: pass it as ${env.NAME} (the runner "
                             "records the reference, never the value), not as a literal", where, name)
    if not refers:
        return
    if kind not in ("str", "any"):
        raise ParameterError(f"a secret is text; the parameters cell declares {kind} (give it a text default, "
                             "e.g. token = \"\")", where, name)
    for variable in env_names(value) if environment else ():
        secret_value(variable, where, name)


def _nested_env_references(value: Any) -> bool:
    if isinstance(value, str):
        return is_secret(value)
    if isinstance(value, dict):
        return any(map(_nested_env_references, value.values()))
    if isinstance(value, (list, tuple)):
        return any(map(_nested_env_references, value))
    return False


def secret_value(variable: str, where: str = "", parameter: str = "") -> str:
    """The value of environment variable ``variable``; a ParameterError when it is unset or too short to mask."""
    value = os.environ.get(variable, "")
    if not value:
        raise ParameterError(f"${{env.{variable}}}: the environment variable {variable} is not set; export it in "
                             "the environment `runner` (or the scheduler) runs in", where, parameter)
    if len(value) < MIN_LENGTH:
        raise ParameterError(f"${{env.{variable}}}: {variable} holds {len(value)} characters; a secret needs at least "
                             f"{MIN_LENGTH} so that masking it does not mask ordinary text", where, parameter)
    return value


def kernel_source(parameters: Mapping[str, str]) -> str:
    """Python lines that set each secret parameter from the kernel's environment."""
    lines = ["# Secrets: read from the environment inside the kernel; their values are never written here",
             "import os as _runner_os"]
    for name, value in parameters.items():
        lines.append(f"{name} = {_expression(value)}")
    lines.append("del _runner_os")
    return "\n".join(lines)


def _expression(value: str) -> str:
    parts: list[str] = []
    position = 0
    for ref in REFERENCE.finditer(value):
        found = ENV_REFERENCE.match(ref.group(1).strip())
        if found is None:
            continue
        if ref.start() > position:
            parts.append(repr(value[position:ref.start()]))
        parts.append(f"_runner_os.environ[{found.group(1)!r}]")
        position = ref.end()
    if position < len(value):
        parts.append(repr(value[position:]))
    return " + ".join(parts)


class Redactor:
    """Masks the values of secrets, and URL credentials, in text, JSON values and notebooks."""

    def __init__(self, values: Iterable[str] = ()):
        # longest first, so that a secret holding another one is masked whole
        self.values = sorted({value for value in values if value}, key=len, reverse=True)

    @classmethod
    def for_parameters(cls, parameters: Mapping[str, Any]) -> Redactor:
        """The secrets ``parameters`` refer to, read from this process's environment (unset ones are skipped)."""
        names = {name for value in parameters.values() for name in env_names(value)}
        return cls(os.environ.get(name, "") for name in names)

    def text(self, text: str) -> str:
        for value in self.values:
            text = text.replace(value, MASK)
        return strip_userinfo(text)

    def value(self, value: Any) -> Any:
        """A JSON-like value with every string in it masked (keys too)."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.value(key): self.value(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self.value(item) for item in value]
        return value

    def notebook(self, nb) -> None:
        """Mask ``nb``'s sources and outputs in place (stream text, displays, errors, tracebacks)."""
        for cell in nb.cells:
            cell["source"] = self.text(cell.get("source", ""))
            for output in cell.get("outputs", []):
                for key in ("text", "ename", "evalue", "traceback", "data"):
                    if key in output:
                        output[key] = self.value(output[key])

    def file(self, path: str) -> None:
        """Mask a text file in place (a step's log)."""
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                text = handle.read()
        except FileNotFoundError:
            return
        masked = self.text(text)
        if masked != text:
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(masked)
