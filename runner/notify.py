"""Notices to people: a JSON POST to a webhook and/or a shell command, per ``runner.yaml``'s ``notify``.

One notifier serves monitoring (``warn`` / ``alert``) and failed runs (``failure``). Sending
never raises: a webhook or command that cannot be reached, refuses or hangs gives a
:class:`Delivery` with ``ok=False`` and the reason, which the caller logs and records, so a
notice that could not be sent never costs the result it was about.

    deliveries = notify(config.notify_for("credit_score"), Event("alert", "credit_score", run_id, ...))
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from typing import Any

from runner.config import NotifyConfig

SEVERITY = {"ok": 0, "warn": 1, "alert": 2}


@dataclass(frozen=True)
class Event:
    """What happened. ``kind`` is ``warn``, ``alert`` or ``failure``; ``reasons`` are one line each."""

    kind: str
    pipeline: str
    run_id: str
    as_of: str = ""
    step: str = ""
    summary: str = ""
    reasons: tuple[str, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)

    def payload(self) -> dict[str, Any]:
        return {"source": "notebook-runner", **asdict(self), "reasons": list(self.reasons)}


@dataclass(frozen=True)
class Delivery:
    channel: str  # "webhook" or "command"
    target: str
    ok: bool
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def wanted(config: NotifyConfig, kind: str) -> bool:
    """Whether ``config`` sends notices of this kind (``events`` lists them)."""
    return kind in config.events and bool(config.webhook or config.command)


def notify(config: NotifyConfig, event: Event) -> list[Delivery]:
    """Send ``event`` to every channel configured for its kind; one :class:`Delivery` per channel."""
    if not wanted(config, event.kind):
        return []
    body = json.dumps(event.payload(), default=str)
    deliveries = []
    if config.webhook:
        deliveries.append(_post(config.webhook, body, config.timeout))
    if config.command:
        deliveries.append(_run(config.command, body, event, config.timeout))
    return deliveries


def _post(url: str, body: str, timeout: float) -> Delivery:
    request = urllib.request.Request(url, data=body.encode(), method="POST",
                                     headers={"Content-Type": "application/json", "User-Agent": "notebook-runner"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Delivery("webhook", url, True, f"HTTP {response.status}")
    except urllib.error.HTTPError as exc:
        return Delivery("webhook", url, False, f"HTTP {exc.code} {exc.reason}")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return Delivery("webhook", url, False, f"not reachable: {reason}")


def _run(command: str, body: str, event: Event, timeout: float) -> Delivery:
    env = {**os.environ, "RUNNER_EVENT": event.kind, "RUNNER_EVENT_PIPELINE": event.pipeline,
           "RUNNER_EVENT_RUN_ID": event.run_id, "RUNNER_EVENT_SUMMARY": event.summary}
    try:
        done = subprocess.run(command, shell=True, input=body, text=True, capture_output=True, timeout=timeout,
                              env=env)
    except subprocess.TimeoutExpired:
        return Delivery("command", command, False, f"did not finish within {timeout:g}s")
    except OSError as exc:
        return Delivery("command", command, False, f"could not start: {exc}")
    if done.returncode:
        last = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or [""]
        return Delivery("command", command, False, f"exit {done.returncode}: {last[0][:200]}".rstrip(": "))
    return Delivery("command", command, True, "exit 0")
