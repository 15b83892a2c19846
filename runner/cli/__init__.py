"""The ``runner`` command line: the only package that prints or exits.

:mod:`runner.cli.group` holds the command group, the shared options and how errors become one line and an
exit code; each other module adds its commands to that group, and importing this package imports them all.
"""

import sys

from runner.cli import demo, models, project, review, run, schedule, schema, serve  # noqa: F401 - each adds its commands
from runner.cli.group import main

__all__ = ["main", "entry"]


def entry() -> None:
    """The ``runner`` program: :data:`main` with a quick start and a quick exit.

    Tests call :data:`main` itself (click's runner, in their own process); only the program puts off jsonschema's
    IRI grammars (:func:`runner.notebook.grammars.defer_iri_grammars`) and skips the interpreter's teardown
    (:func:`runner.run.stepproc.quick_exit`): together a second or two of each command's time.
    """
    from runner.notebook.grammars import defer_iri_grammars
    from runner.run.stepproc import quick_exit

    defer_iri_grammars()
    try:
        main()
        code = 0
    except SystemExit as exc:  # click ends every command with one
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if not isinstance(exc.code, (int, type(None))):
            print(exc.code, file=sys.stderr)
    quick_exit(code)
