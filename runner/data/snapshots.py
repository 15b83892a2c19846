"""Content-addressed data snapshots: the state of the data a model was trained on, retrievable later.

A frame is written as Parquet under its digest (:func:`canonical_digest`: a sha256 over the Arrow IPC stream of
its schema and rows, so equal data gives the same digest whatever its source); a snapshot never changes once
written, and writing the same data again is free. ``runner data snapshot DIGEST`` exports one, a unique prefix
of at least :attr:`SnapshotStore.MIN_PREFIX` characters naming it. The store is a local folder or any fsspec URL
(``s3://bucket/snapshots``), laid out the same way (``<root>/<2 hex>/<digest>.parquet``).
"""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
import re
import uuid
from pathlib import Path

import pandas as pd

from runner.errors import NotFound, RunnerError


class SnapshotStore:
    """Content-addressed copies of data as used (e.g. the exact training frame).

    A snapshot's digest is the sha256 of the frame's *canonical bytes*: the Arrow IPC messages
    (schema, then record batches of at most 65,536 rows, uncompressed) of the frame's Arrow table,
    with a default RangeIndex dropped (any other index becomes columns), the schema metadata
    (pandas version, index layout) removed, large strings as strings and categoricals as their
    values. So the digest depends on column names, order, types and values, never on write time,
    file format options or library versions' metadata. Files are parquet with pandas metadata, so
    :meth:`load` returns the dtypes of the frame first saved.
    """

    BATCH_ROWS = 65536
    MIN_PREFIX = 6  # hex characters a digest prefix must have (`runner models` shows 12)

    def __init__(self, root: str | Path):
        import fsspec
        from fsspec.implementations.local import LocalFileSystem

        self.fs, base = fsspec.core.url_to_fs(str(root))
        self.is_local = isinstance(self.fs, LocalFileSystem)
        self._base = base.rstrip("/")  # the root as the filesystem names it (no protocol)
        # A local store is named by its path, as before; a remote one by its URL.
        self.root: Path | str = (Path(root) if "://" not in str(root) else Path(base)) if self.is_local \
            else str(root).rstrip("/")

    def save(self, frame: pd.DataFrame) -> str:
        """Store ``frame`` (once per content) and return its digest."""
        import pyarrow.parquet as pq

        table = _arrow_table(frame)
        digest = canonical_digest(table, self.BATCH_ROWS)
        key = self._key(digest)
        if self.fs.isfile(key):
            return digest
        if not self.is_local:  # one object put: readers see the whole snapshot or none
            buffer = io.BytesIO()
            pq.write_table(table, buffer)
            self.fs.pipe_file(key, buffer.getvalue())
            return digest
        path = Path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")
        try:
            pq.write_table(table, partial)
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
        return digest

    def load(self, digest: str) -> pd.DataFrame:
        """The frame stored under ``digest`` or a unique prefix of it."""
        import pyarrow.parquet as pq

        with self.fs.open(self._key(self.resolve(digest)), "rb") as handle:
            return pq.read_table(handle).to_pandas()

    def resolve(self, prefix: str) -> str:
        """The full digest of the one stored snapshot whose digest starts with ``prefix`` (at least
        :attr:`MIN_PREFIX` lowercase hex characters, or the whole digest)."""
        if not re.fullmatch(rf"[0-9a-f]{{{self.MIN_PREFIX},64}}", prefix or ""):
            raise NotFound(f"{prefix!r} is not a snapshot digest: give the digest or its first {self.MIN_PREFIX} or "
                           "more characters (lowercase hex), as `runner models MODEL` shows them")
        if len(prefix) == 64 and self.fs.isfile(self._key(prefix)):
            return prefix
        matches = self._digests(f"{prefix[:2]}/{prefix}*.parquet")
        if not matches:
            raise NotFound(f"no snapshot starts with {prefix} in the snapshot store {self.root} (stores.snapshots, "
                           "RUNNER_SNAPSHOTS); `runner models MODEL` shows the digest of each version's training "
                           f"data, SnapshotStore({str(self.root)!r}).list() (or: ls {self.root}/*/) the stored ones")
        if len(matches) > 1:
            shown = ", ".join(matches[:5]) + (f" and {len(matches) - 5} more" if len(matches) > 5 else "")
            raise NotFound(f"{len(matches)} snapshots start with {prefix}: {shown}; give more of its characters")
        return matches[0]

    def path(self, digest: str) -> Path | str:
        """Where the snapshot ``digest`` is (or would be) kept: a path in a local store, a URL in a remote one."""
        relative = self._relative(digest)
        return self.root / relative if isinstance(self.root, Path) else f"{self.root}/{relative}"

    def export(self, digest: str, out: str | Path) -> Path:
        """Copy the snapshot stored under ``digest`` or a unique prefix of it to the local parquet file ``out``."""
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        self.fs.get_file(self._key(self.resolve(digest)), str(out))
        return out

    def list(self) -> list[str]:
        return self._digests("??/*.parquet")

    def _relative(self, digest: str) -> str:
        if not re.fullmatch(r"[0-9a-f]{64}", digest or ""):
            raise RunnerError(f"{digest!r} is not a snapshot digest (64 lowercase hex characters)")
        return f"{digest[:2]}/{digest}.parquet"

    def _key(self, digest: str) -> str:
        """The snapshot's path as the filesystem names it."""
        return f"{self._base}/{self._relative(digest)}"

    def _digests(self, pattern: str) -> list[str]:
        """The digests of the stored snapshots whose files match ``pattern`` (below the root), sorted."""
        found = (posixpath.basename(path).removesuffix(".parquet") for path in self.fs.glob(f"{self._base}/{pattern}"))
        return sorted(name for name in found if re.fullmatch(r"[0-9a-f]{64}", name))


def _arrow_table(frame: pd.DataFrame):
    import pyarrow as pa

    index = frame.index
    plain = isinstance(index, pd.RangeIndex) and index.name is None and index.start == 0 and index.step == 1
    frame = frame.reset_index(drop=plain)
    try:
        return pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise RunnerError(f"cannot snapshot this frame: {exc}; give each column one type of values") from exc


def canonical_digest(table, batch_rows: int = SnapshotStore.BATCH_ROWS) -> str:
    """sha256 of the canonical bytes of an Arrow table (see :class:`SnapshotStore`)."""
    import pyarrow as pa

    fields = []
    for field in table.schema:
        kind = field.type.value_type if pa.types.is_dictionary(field.type) else field.type
        kind = {pa.large_string(): pa.string(), pa.large_binary(): pa.binary()}.get(kind, kind)
        fields.append(pa.field(field.name, kind, field.nullable))
    canonical = table.cast(pa.schema(fields)).replace_schema_metadata(None).combine_chunks()
    digest = hashlib.sha256(canonical.schema.serialize().to_pybytes())
    for batch in canonical.to_batches(max_chunksize=batch_rows):
        digest.update(batch.serialize().to_pybytes())
    return digest.hexdigest()
