"""The version being served, and following its alias when `runner promote` moves it.

:class:`Champion` holds the loaded version. A thread looks at the alias every ``refresh`` seconds; when it
points at another version, that version is loaded beside the old one and then swapped in with one
assignment, so a request in flight finishes on the version it started with and none is dropped. Each
switch is logged.
"""

from __future__ import annotations

import logging
import threading
import time

from runner.errors import RunnerError, TrackingError
from runner.tracking.registry import Registry
from runner.tracking.scoring import ServedVersion, load_served

log = logging.getLogger("runner.serve")


class Champion:
    def __init__(self, registry: Registry, name: str, alias: str, refresh: float):
        self.registry, self.name, self.alias, self.refresh = registry, name, alias, refresh
        served = load_served(registry, name, alias)
        if served is None:
            raise TrackingError(f"no version of model {name!r} holds the alias {alias!r}; `runner models {name}` "
                                "lists the versions, `runner promote` sets the alias")
        self.current: ServedVersion = served
        self.switched_at = time.time()
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="runner-serve-alias", daemon=True)

    def start(self) -> None:
        log.info("serving %s v%s (@%s)", self.name, self.current.version, self.alias)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def check(self) -> bool:
        """Look at the alias once; load and switch to the version it names if that changed. True on a switch."""
        found = self.registry.by_alias(self.name, self.alias)
        if found is None or found["version"] == self.current.version:
            return False
        served = load_served(self.registry, self.name, self.alias)
        if served is None or served.version == self.current.version:
            return False
        old, self.current, self.switched_at = self.current, served, time.time()
        log.warning("alias %s of %s moved: now serving v%s (was v%s)", self.alias, self.name, served.version,
                    old.version)
        return True

    def _follow(self) -> None:
        while not self._stop.wait(self.refresh):
            try:
                self.check()
                self.last_error = None
            except RunnerError as exc:  # the registry away for a while: keep serving what is loaded
                if self.last_error != str(exc):
                    log.error("could not look at alias %s of %s (still serving v%s): %s", self.alias, self.name,
                              self.current.version, exc)
                self.last_error = str(exc)
