"""Named things a third party can add without editing this repository: executors and notifiers.

A :class:`Plugins` registry holds the built-in ones and reads one entry point group for the rest, as papermill
finds its engines. The group is read the first time a name is not a built-in one, never at import, and only the
plugin asked for is imported. A plugin cannot replace a built-in: an entry point with a built-in's name is
ignored, and every listing of what is known says so. Whatever a plugin's import raises, or a plugin that is not
what its kind needs, is one error line naming the plugin, its distribution and what to do.
"""

from __future__ import annotations

import functools
from importlib.metadata import EntryPoint, entry_points
from typing import Generic, TypeVar

from runner.errors import RunnerError

T = TypeVar("T")


class Plugins(Generic[T]):
    """The ``kind`` things of a name (``executor``, ``notifier``): built-in ones and those of entry point
    ``group``. ``unknown`` is raised for a name nothing provides, ``broken`` for a plugin that cannot be used;
    ``shape`` says what a plugin must be (e.g. "a factory (max_workers) -> Executor") and ``instead`` what to
    do meanwhile (e.g. "choose another executor")."""

    def __init__(self, kind: str, group: str, shape: str, instead: str,
                 unknown: type[RunnerError], broken: type[RunnerError]):
        self.kind, self.group, self.shape, self.instead = kind, group, shape, instead
        self.unknown, self.broken = unknown, broken
        self.built_in: dict[str, T] = {}
        self._loaded: dict[str, T] = {}  # plugins imported so far

    def register(self, name: str, thing: T) -> None:
        """Add a built-in one (a third party uses the entry point group instead)."""
        if name in self.built_in:
            raise ValueError(f"a {self.kind} named {name!r} is registered already")
        self.built_in[name] = thing

    def find(self, name: str) -> T:
        """The one named ``name``, importing its plugin if it comes from one."""
        if name in self.built_in:
            return self.built_in[name]
        if name in self._loaded:
            return self._loaded[name]
        found = self._group().get(name)
        if not found:
            raise self.unknown(f"no {self.kind} named {name!r}; known: {self.known()}. A plugin's {self.kind} is "
                               f"known once the distribution that provides it (entry point group {self.group}) is "
                               "installed here")
        if len(found) > 1:
            raise self.broken(f"{self.kind} {name!r} is provided by {' and by '.join(map(_origin, found))}; "
                              "uninstall all but one of them")
        [entry] = found
        try:
            loaded = entry.load()
        except Exception as exc:  # noqa: BLE001 - whatever the plugin's import raised, told in one line
            raise self.broken(f"{self.describe(name)} could not be imported ({entry.value}): {type(exc).__name__}: "
                              f"{exc}; reinstall {_distribution(entry)} here, or {self.instead}") from exc
        if not callable(loaded):
            raise self.broken(f"{self.describe(name)} is {type(loaded).__name__} ({entry.value}), not {self.shape}; "
                              f"tell its authors, and {self.instead} meanwhile")
        self._loaded[name] = loaded
        return loaded

    def known(self) -> str:
        """What there is, for a message: built-in ones first, then the plugins with their distribution."""
        group = self._group()
        names = list(self.built_in) + [f"{name} ({_origin(found[0])})" for name, found in sorted(group.items())
                                       if name not in self.built_in]
        ignored = [f"{entry.name!r} of {_origin(entry)}" for name, found in group.items() if name in self.built_in
                   for entry in found]
        return ", ".join(names) + (f"; ignored, as a built-in's name: {', '.join(ignored)}" if ignored else "")

    def describe(self, name: str) -> str:
        """``executor 'dask' (plugin of dask-runner 1.0)``, or just the kind and name for a built-in one."""
        found = self._group().get(name) if name not in self.built_in else None
        return f"{self.kind} {name!r} (plugin of {_origin(found[0])})" if found else f"{self.kind} {name!r}"

    def _group(self) -> dict[str, list[EntryPoint]]:
        return _entry_points(self.group)


@functools.cache
def _entry_points(group: str) -> dict[str, list[EntryPoint]]:
    """The entry points of ``group``, by name; read the first time they are needed."""
    found: dict[str, list[EntryPoint]] = {}
    for entry in entry_points(group=group):
        found.setdefault(entry.name, []).append(entry)
    return found


def _origin(entry: EntryPoint) -> str:
    dist = entry.dist
    return f"{dist.name} {dist.version}" if dist is not None else "an unnamed distribution"


def _distribution(entry: EntryPoint) -> str:
    return entry.dist.name if entry.dist is not None else "the distribution that provides it"


