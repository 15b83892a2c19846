"""A copy of the project for machines that do not share its folder (a remote executor's workers).

A step needs more than its notebook: runner.yaml, the data dictionary, the modules and files the notebook
opens beside it. :func:`pack` puts the project's files in one deterministic tar (the files git tracks or would
track, when the project is in a git work tree; else every file outside hidden folders and ``__pycache__``),
named by the digest of its content. The runner keeps it in the run store (every worker reaches that), and
:func:`unpack` makes a folder of it on a worker once: every step of that project version runs there. The
embedded stores' folder is never packed: stores are reached by URL.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import tarfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from runner.errors import ExecutorError

MAX_BYTES = 200 * 1024 * 1024  # a project bigger than this is data that belongs in a store, not in every step


@dataclass(frozen=True)
class Bundle:
    digest: str  # sha256 of the files' names and contents
    data: bytes  # a gzipped tar of them
    files: int


def pack(root: Path, exclude: tuple[Path, ...] = (), limit: int = MAX_BYTES) -> Bundle:
    """The project under ``root`` (``exclude``: folders left out, e.g. the embedded stores' home) as a bundle;
    an :class:`ExecutorError` naming the largest files when it is over ``limit`` bytes."""
    names = _project_files(root.resolve(), tuple(path.resolve() for path in exclude))
    sizes = {name: (root / name).stat().st_size for name in names}
    if sum(sizes.values()) > limit:
        largest = ", ".join(f"{name} ({size / 2**20:.0f} MiB)" for name, size in
                            sorted(sizes.items(), key=lambda item: -item[1])[:3])
        raise ExecutorError(f"the project folder {root} holds {sum(sizes.values()) / 2**20:.0f} MiB, more than the "
                            f"{limit / 2**20:.0f} MiB sent to the workers with a run (largest: {largest}); keep data "
                            "in the warehouse or a bucket, or list such files in .gitignore")
    digest = hashlib.sha256()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1) as tar:
        for name in names:
            content = (root / name).read_bytes()
            digest.update(name.encode() + b"\0" + hashlib.sha256(content).digest())
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(content), (root / name).stat().st_mode & 0o755
            tar.addfile(info, io.BytesIO(content))
    return Bundle(digest.hexdigest(), buffer.getvalue(), len(names))


def unpack(digest: str, data: Callable[[], bytes], into: Path) -> Path:
    """The folder ``into/<digest>`` holding the bundle's files, fetched (``data``) and extracted the first time only.
    Safe when two steps on one machine extract it at once (each into a folder of its own, then renamed), and
    against a hostile archive (tarfile's ``data`` filter: no absolute paths, links out or devices)."""
    target = into / digest
    if target.is_dir():
        return target
    into.mkdir(parents=True, exist_ok=True)
    partial = into / f".{digest}.{uuid.uuid4().hex}"
    with tarfile.open(fileobj=io.BytesIO(data()), mode="r:gz") as tar:
        tar.extractall(partial, filter="data")
    try:
        partial.rename(target)
    except OSError:  # another step put it there first
        shutil.rmtree(partial, ignore_errors=True)
    return target


def _project_files(root: Path, exclude: tuple[Path, ...]) -> list[str]:
    """The project's files, relative to ``root``, sorted."""
    listed = _git_files(root)
    if listed is None:
        listed = []
        for folder, dirs, files in os.walk(root):
            dirs[:] = [name for name in dirs if not name.startswith(".") and name != "__pycache__"]
            listed += [os.path.relpath(os.path.join(folder, name), root) for name in files]
    kept = []
    for name in listed:
        path = root / name
        if path.is_file() and not path.is_symlink() and not any(path.is_relative_to(folder) for folder in exclude):
            kept.append(name)
    return sorted(kept)


def _git_files(root: Path) -> list[str] | None:
    """What git tracks or would track under ``root`` (its .gitignore honoured); None outside a git work tree."""
    try:
        done = subprocess.run(["git", "-C", str(root), "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                              capture_output=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    return [name for name in done.stdout.decode(errors="surrogateescape").split("\0") if name]
