"""Notebook Runner: parameterized Jupyter notebooks as a production ML pipeline.

Importing ``runner`` does nothing but define names; see ``runner.cli`` for the command line.
"""
