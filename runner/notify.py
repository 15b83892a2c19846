"""Notices to people, through named channels: a webhook, a shell command, or a notifier from a plugin.

One notifier serves monitoring (``warn`` / ``alert``) and failed runs (``failure``). ``runner.yaml``'s
``notify`` names the channels: ``webhook`` (a JSON POST) and ``command`` (the event as JSON on stdin) are
built in; ``channels`` adds notifiers that other distributions register through the entry point group
``notebook_runner.notifiers`` (as papermill finds engines), each with its options::

    [project.entry-points."notebook_runner.notifiers"]
    pager = "my_package.notices:page"   # def page(event: Event, options: Mapping) -> Delivery

    # runner.yaml
    notify: {channels: {pager: {service: credit-risk}}, events: [failure]}

Sending never raises: a channel that cannot be reached, refuses, hangs past ``notify.timeout``, whose
plugin cannot be imported or raises, gives a :class:`Delivery` with ``ok=False`` and the reason, which
the caller logs and records, so a notice that could not be sent never costs the result it was about.
A plugin cannot replace a built-in notifier; :func:`check` refuses a channel no notifier has before a
run starts.

    deliveries = notify(config.notify_for("credit_score"), Event("alert", "credit_score", run_id, ...))
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from runner.config import Config, NotifyConfig
from runner.errors import ConfigError
from runner.plugins import Plugins

GROUP = "notebook_runner.notifiers"
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
    """What became of a notice on one channel. ``channel`` is the notifier's name, ``target`` where it went."""

    channel: str  # "webhook", "command" or a plugin's name
    target: str
    ok: bool
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# A notifier delivers one event with its channel's options and says how that went.
Notifier = Callable[[Event, Mapping[str, Any]], Delivery]
# An unknown or broken notifier is a ConfigError without a file: check() names runner.yaml's key.
NOTIFIERS: Plugins[Notifier] = Plugins(
    "notifier", GROUP, "a function (event, options) -> Delivery", "remove the channel", ConfigError, ConfigError)
register = NOTIFIERS.register  # a built-in notifier (a third party uses the entry point group instead)
find = NOTIFIERS.find  # the notifier of a name, importing its plugin if it comes from one
known = NOTIFIERS.known  # the notifiers there are, for a message


def channels(config: NotifyConfig) -> list[tuple[str, dict[str, Any]]]:
    """The configured channels with their options, in order: webhook, command, then ``channels``."""
    built_in = [("webhook", {"url": config.webhook, "timeout": config.timeout}) if config.webhook else None,
                ("command", {"command": config.command, "timeout": config.timeout}) if config.command else None]
    return [channel for channel in built_in if channel] + [(name, dict(options)) for name, options in
                                                           config.channels.items()]


def wanted(config: NotifyConfig, kind: str) -> bool:
    """Whether ``config`` sends notices of this kind (``events`` lists them) to any channel."""
    return kind in config.events and bool(channels(config))


def notify(config: NotifyConfig, event: Event) -> list[Delivery]:
    """Send ``event`` to every channel configured for its kind; one :class:`Delivery` per channel."""
    if not wanted(config, event.kind):
        return []
    return [_deliver(name, options, event, config.timeout) for name, options in channels(config)]


def check(config: Config) -> None:
    """Every channel of ``runner.yaml`` (the project's ``notify`` and each pipeline's) names a notifier that
    can be used here: a :class:`ConfigError` naming the key and the known notifiers otherwise. Imports the
    plugins named, so a run or ``runner validate`` finds a broken one before anything runs."""
    sections = [("notify", config.notify)] + [(f"pipelines.{name}.notify", pipeline.notify)
                                              for name, pipeline in config.pipelines.items() if pipeline.notify]
    for key, settings in sections:
        for name in settings.channels:
            try:
                find(name)
            except ConfigError as exc:
                raise ConfigError(exc.message, str(config.source), f"{key}.channels.{name}") from None


def _deliver(name: str, options: dict[str, Any], event: Event, timeout: float) -> Delivery:
    """One channel's delivery, whatever its notifier does: raises, hangs, returns something else."""
    try:
        notifier = find(name)
    except ConfigError as exc:
        return Delivery(name, "", False, str(exc))
    outcome: list[Any] = []

    def send() -> None:
        try:
            outcome.append(notifier(event, options))
        except Exception as exc:  # noqa: BLE001 - a notifier's failure is its delivery's detail
            outcome.append(exc)

    if name in NOTIFIERS.built_in:  # bounds its own time
        send()
    else:  # gets notify.timeout, in a thread of its own that may hang without holding up the run
        sender = threading.Thread(target=send, name=f"notify-{name}", daemon=True)
        sender.start()
        sender.join(timeout)
    if not outcome:
        return Delivery(name, "", False, f"did not finish within {timeout:g}s")
    result = outcome[0]
    if isinstance(result, Exception):
        return Delivery(name, "", False, f"{type(result).__name__}: {result}"[:300])
    if not isinstance(result, Delivery):
        return Delivery(name, "", False, f"its notifier returned {type(result).__name__}, not a runner.notify.Delivery")
    return Delivery(name, str(result.target), bool(result.ok), str(result.detail))


def _webhook(event: Event, options: Mapping[str, Any]) -> Delivery:
    return _post(options["url"], _body(event), options["timeout"])


def _command(event: Event, options: Mapping[str, Any]) -> Delivery:
    return _run(options["command"], _body(event), event, options["timeout"])


def _body(event: Event) -> str:
    return json.dumps(event.payload(), default=str)


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


register("webhook", _webhook)
register("command", _command)
