"""The ``runner`` command line: the only package that prints or exits.

:mod:`runner.cli.group` holds the command group, the shared options and how errors become one line and an
exit code; each other module adds its commands to that group, and importing this package imports them all.
"""

from runner.cli import demo, models, project, review, run, schedule, schema, serve  # noqa: F401 - each adds its commands
from runner.cli.group import main

__all__ = ["main"]
