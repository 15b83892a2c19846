"""The data layer: the warehouse, content-addressed snapshots, the data dictionary.

``from runner.data import Warehouse`` is the way in for scripts; notebooks use :mod:`runner.nb`. The code
lives in :mod:`runner.data.warehouse` and :mod:`runner.data.dictionary`.
"""

from runner.data.dictionary import DataDictionary
from runner.data.snapshots import SnapshotStore
from runner.data.warehouse import Warehouse

__all__ = ["DataDictionary", "SnapshotStore", "Warehouse"]
