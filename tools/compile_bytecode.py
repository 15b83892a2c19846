"""Compile the bytecode `make venv` installs: every module of the given folders except those no runner process imports.

    python tools/compile_bytecode.py DIR [DIR ...]

Where PYTHONDONTWRITEBYTECODE is set (CI machines, many Docker images) Python writes no bytecode as it imports, so
each kernel and step process would compile pandas, scikit-learn and MLflow from source again: the install compiles
them once. Left out, about a third of a site-packages folder: packages' own test suites (folders named ``tests`` or
``test``), the installers (pip and setuptools, which `python -m venv` compiled already) and moto (the tests' S3
server, one process per test session). They are compiled as they are imported where Python may write bytecode.

Why not uv's ``--compile-bytecode`` or ``python -m compileall -j 0``: neither can leave anything out, and
compileall hands its worker processes one file at a time (22 s for what this does in 14 s on 2 cores). Files
whose bytecode is current are skipped; a file that does not compile (a package's Python 2 sample) is skipped
as Python itself would skip it, and counted.
"""

from __future__ import annotations

import importlib.util
import os
import py_compile
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

# A folder of these names, anywhere below a given folder, is left out, with all it holds.
SKIPPED_FOLDERS = {"tests", "test", "__pycache__", "pip", "setuptools", "_distutils_hack", "moto"}
CHUNK = 64  # files per task: one task per file made the pool's messages cost more than compiling small files


def sources(folder: Path) -> list[str]:
    """The ``.py`` files below ``folder`` outside :data:`SKIPPED_FOLDERS` whose bytecode is missing or stale."""
    found = []
    for parent, folders, files in os.walk(folder):
        folders[:] = [name for name in folders if name not in SKIPPED_FOLDERS and not name.endswith(".dist-info")]
        found.extend(path for name in files if name.endswith(".py")
                     and not _current(path := os.path.join(parent, name)))
    return found


def _current(source: str) -> bool:
    """Whether ``source``'s bytecode exists and was compiled from this version of it (the timestamp header)."""
    try:
        with open(importlib.util.cache_from_source(source), "rb") as compiled:
            header = compiled.read(16)
        stat = os.stat(source)
    except OSError:
        return False
    return (len(header) == 16 and header[:4] == importlib.util.MAGIC_NUMBER and header[4:8] == bytes(4)
            and int.from_bytes(header[8:12], "little") == int(stat.st_mtime) & 0xFFFFFFFF
            and int.from_bytes(header[12:16], "little") == stat.st_size & 0xFFFFFFFF)


def compile_all(paths: list[str]) -> int:
    """Compiles ``paths``; returns how many did not compile."""
    return sum(_compile(path) for path in paths)


def _compile(path: str) -> bool:
    try:
        py_compile.compile(path, doraise=True, invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP)
    except (py_compile.PyCompileError, OSError, ValueError):
        return True
    return False


def main(folders: list[str]) -> int:
    if not folders:
        print(__doc__.split("\n\n")[1].strip(), file=sys.stderr)
        return 2
    paths = [path for folder in folders for path in sources(Path(folder))]
    chunks = [paths[start:start + CHUNK] for start in range(0, len(paths), CHUNK)]
    with ProcessPoolExecutor(os.cpu_count() or 1) as pool:
        failed = sum(pool.map(compile_all, chunks))
    print(f"modules compiled: {len(paths) - failed}" + (f"; not compiling: {failed} (left to Python)" if failed
                                                         else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
